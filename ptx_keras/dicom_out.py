"""DICOM in -> DICOM out: a Segmentation and a Structured Report per DICOM input, for PACS and viewers.

For each DICOM image `ptx-predict --format dicom` writes, in `OUTPUT/dicom/`:

* `<sample_id>_seg.dcm`: a **DICOM Segmentation** (binary, one segment "Pneumothorax", SNOMED CT 36118008 in
  the category "Morphologically abnormal structure" 49755003), on the source's pixel grid (same rows and
  columns; no pixel measures, as the source has no frame of reference), referencing the source image (Study, Series and SOP
  Instance UIDs, the same patient and study). It holds the framework's final mask: the predicted mask when the
  image is diagnosed pneumothorax, empty when not (as the SIIM-ACR submission), so what a viewer shows never
  contradicts the diagnosis;
* `<sample_id>_sr.dcm`: a **Comprehensive SR** measurement report (DICOM TID 1500) with one planar ROI group
  for the segment: finding Pneumothorax, its qualitative evaluation Present / Absent (the diagnosis), the area
  (mm² when the source gives a pixel spacing, else pixels), the continuous score and the highest probability,
  the algorithm with its thresholds, marked unverified and partial (a draft for a reader to confirm);
* `<sample_id>_pm.dcm` (only with `--uncertainty`): a **DICOM Parametric Map** of the per-pixel standard
  deviation of the pneumothorax probability over the uncertainty samples, on the source's pixel grid,
  referencing the source image. Its pixels are unsigned 16-bit integers with a real world value mapping
  (`std = PM_SLOPE x pixel`, unit "no units", LUT label `PTX-STD`; a std of 0.5, the largest a probability
  can have, is pixel 65535), a window over 0..0.5 for display, and `ContentLabel` `PTX_STD`. The SR then
  also carries the image-level uncertainty (the standard deviation of the image-level probability over the
  samples and the fraction of samples agreeing with the diagnosis) and lists the map among its evidence.

Why a structured report rather than a secondary-capture overlay: its values are coded and machine-readable
(a worklist can triage on the diagnosis and score without reading burned-in text), it points at the SEG
segment and at the source image, and it adds no second copy of the pixels; the SEG already gives viewers the
overlay (OHIF and 3D Slicer display it over the source). A secondary capture also needs a patient orientation
that projection radiographs often lack.

Every object gets new UIDs; each run gets one new SEG series and one new SR series per study (a series belongs
to one study). With `uid_seed` (the inference node's) the UIDs are derived from the seed and the source's UIDs
instead, so the same source always gives the same objects. The source files are only read. Built with highdicom
and pydicom (`pip install "ptx_keras[deploy]"`).

The objects pass dciodvfy (dicom3tools) without errors. A projection radiograph has no frame of reference, so:
the SEG carries `PatientOrientation` (type 2C without a plane orientation) and no Pixel Measures; the SR points
at the SEG's frame without a segment number; the Parametric Map, whose IOD requires a frame of reference and a
plane position and orientation, gets a frame of reference of its own with a nominal plane (`_nominal_geometry`).
Values copied from the source header are validated first (`sanitize_header`). docs/deployment.md explains each
choice.

Not a medical device: the objects say "research use" in their descriptions.
"""

import logging
import os
import re

from ptx_keras.data.dicom import read_dicom_header
from ptx_keras.errors import DataError, ModelError

__all__ = [
    "AGREEMENT_CODE",
    "DICOM_DIRNAME",
    "IMAGE_STD_CODE",
    "MAX_PROBABILITY_CODE",
    "PM_LUT_LABEL",
    "PM_MAX_STD",
    "PM_MAX_VALUE",
    "PM_SERIES_NUMBER",
    "PM_SLOPE",
    "PM_SUFFIX",
    "PRIVATE_SCHEME",
    "SCORE_CODE",
    "SEGMENT_LABEL",
    "SEG_SERIES_NUMBER",
    "SEG_SUFFIX",
    "SR_SERIES_NUMBER",
    "SR_SUFFIX",
    "DicomWriter",
]


logger = logging.getLogger(__name__)

DICOM_DIRNAME = "dicom"
SEG_SUFFIX = "_seg.dcm"
SR_SUFFIX = "_sr.dcm"
SEGMENT_LABEL = "Pneumothorax"
SEG_SERIES_NUMBER = 9101  # high numbers keep derived series after the acquired ones in viewers' series lists
SR_SERIES_NUMBER = 9102
PM_SUFFIX = "_pm.dcm"
PM_SERIES_NUMBER = 9103
PM_LUT_LABEL = "PTX-STD"
PM_MAX_STD = 0.5  # the largest standard deviation a probability in [0, 1] can have
PM_MAX_VALUE = 65535  # uint16: the stored value of PM_MAX_STD
PM_SLOPE = PM_MAX_STD / PM_MAX_VALUE  # real world value (std) per stored unit
PRIVATE_SCHEME = "99PTXKERAS"  # a local coding scheme ("99" prefix) for the values no standard code names
SCORE_CODE = ("PTX-SCORE", "Pneumothorax score")
MAX_PROBABILITY_CODE = ("PTX-MAXP", "Maximum pneumothorax probability")
IMAGE_STD_CODE = ("PTX-STD", "Standard deviation of the image-level pneumothorax probability")
AGREEMENT_CODE = ("PTX-AGREE", "Fraction of uncertainty samples agreeing with the diagnosis")
# Type 2 attributes of the Patient and General Study modules that highdicom copies from the source: a source
# without them (e.g. a bare secondary capture) is given them empty in the copy passed to highdicom.
_TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
    "StudyID",
)
_SOURCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
_UID_MAX = 64
_UID_RE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_STEM_BAD_RE = re.compile(r"[/\\\x00-\x1f\x7f]")  # path separators and control characters
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1a\x1c-\x1f\x7f]")  # ESC (0x1b) stays: character set escapes
_TEXT_VRS = ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "PN", "SH", "TM", "UC", "UI")  # one line each
_UNCHECKED_VRS = ("SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN", "UR")  # sequences, binary, URIs: not copied
_INSTALL_HINT = 'install the deployment extra: pip install "ptx_keras[deploy]"'


def _highdicom():
    try:
        import highdicom
    except ImportError:
        raise ModelError(f"DICOM output needs highdicom; {_INSTALL_HINT}") from None
    return highdicom


class DicomWriter:
    """Writes the SEG and SR of each DICOM input of one prediction run.

    Args:
        output_dir: The folder to write the objects into (created).
        model_name: The model's name (the SEG's model name, the SR's algorithm).
        thresholds: The `ptx_keras.diagnosis.Thresholds` the diagnosis used (recorded in the SR).
        version: The software version recorded (default: the package's).
        uid_seed: None (default): every object and every run gets new UIDs. A string: the UIDs are derived from
            it and the source's UIDs (`derived_uid`), so writing the same source again gives the same SOP
            Instance and Series UIDs and a PACS replaces (or keeps) the earlier copy instead of storing a
            duplicate; the inference node (`ptx_keras.dicom_node`) passes its model's identity.

    Raises:
        ModelError: if highdicom is not installed.
        ValueError: for an empty model name or a uid_seed that is not a non-empty string.
    """

    def __init__(self, output_dir, model_name, thresholds, version=None, uid_seed=None):
        from ptx_keras import __version__

        _highdicom()
        if not model_name or not isinstance(model_name, str):
            raise ValueError(f"model_name must be a non-empty string. Received: model_name={model_name!r}")
        if uid_seed is not None and (not isinstance(uid_seed, str) or not uid_seed):
            raise ValueError(f"uid_seed must be None or a non-empty string. Received: uid_seed={uid_seed!r}")
        self.uid_seed = uid_seed
        self.output_dir = os.fspath(output_dir)
        self.model_name, self.thresholds = model_name, thresholds
        self.version = str(version or __version__)
        self._series = {}  # (StudyInstanceUID, "seg" | "sr" | "pm") -> (SeriesInstanceUID, next instance number)
        os.makedirs(self.output_dir, exist_ok=True)

    def _next_instance(self, study_uid, kind):
        uid, number = self._series.get((study_uid, kind), (self._uid("series", study_uid, kind), 1))
        self._series[(study_uid, kind)] = (uid, number + 1)
        return uid, number

    def _uid(self, *parts):
        """A new UID, or with `uid_seed` the one derived from the seed and `parts` (the same every time)."""
        import highdicom as hd

        return hd.UID() if self.uid_seed is None else hd.UID(derived_uid(self.uid_seed, *parts))

    def _derived_image(self, ds, kind):
        """The arguments highdicom's SEG and Parametric Map share: source, new UIDs in the run's series, device."""

        series_uid, number = self._next_instance(ds.StudyInstanceUID, kind)
        return {
            "source_images": [ds],
            "series_instance_uid": series_uid,
            "series_number": {"seg": SEG_SERIES_NUMBER, "pm": PM_SERIES_NUMBER}[kind],
            "sop_instance_uid": self._uid("instance", ds.SOPInstanceUID, kind),
            "instance_number": number,
            "manufacturer": "ptx_keras",
            "manufacturer_model_name": self.model_name[:64],
            "software_versions": self.version,
            "device_serial_number": "N/A",
        }

    def write(self, source, sample_id, mask, result, std_map=None):
        """Writes the SEG and the SR of one DICOM image, and its Parametric Map when given a std map.

        Args:
            source: The DICOM file that was predicted (only read).
            sample_id: Names the outputs (`<sample_id>_seg.dcm`, `<sample_id>_sr.dcm`, `<sample_id>_pm.dcm`).
            mask: uint8/bool `(rows, cols)`, the final mask (already emptied for a negative diagnosis).
            result: dict with `diagnosis` (0/1), `score`, `max_probability`, `area_px` and `area_mm2` (or None);
                with `std_map`, also `image_probability_std` and `diagnosis_agreement`.
            std_map: None, or float `(rows, cols)`: the per-pixel standard deviation of the pneumothorax
                probability (values in [0, 0.5]; clipped there).

        Returns:
            `(seg_path, sr_path, pm_path)`; `pm_path` is None without `std_map`.

        Raises:
            DataError: if the source is not a readable single-frame DICOM image, has a UID that is not a valid
                single DICOM UID (`check_uid`), or the mask or the std map does not match its rows and columns.
            ValueError: if `sample_id` is not a plain file name stem (a path separator, `..`, a control
                character): names never come from unchecked text.
        """
        import numpy as np

        source = os.fspath(source)
        _check_file_stem(sample_id)
        ds = _read_source(source)
        shape = (int(ds.Rows), int(ds.Columns))
        mask = np.asarray(mask)
        if mask.shape != shape:
            raise DataError(f"{source}: the mask has shape {mask.shape}, the image {shape[0]}x{shape[1]}")
        if std_map is not None and np.shape(std_map) != shape:
            raise DataError(f"{source}: the std map has shape {np.shape(std_map)}, the image {shape[0]}x{shape[1]}")
        seg = self._segmentation(ds, (mask != 0).astype(np.uint8))
        pm = None if std_map is None else self._parametric_map(ds, std_map)
        sr = self._report(ds, seg, result, pm)
        paths = []
        for obj, suffix in ((seg, SEG_SUFFIX), (sr, SR_SUFFIX), (pm, PM_SUFFIX)):
            paths.append(None if obj is None else os.path.join(self.output_dir, f"{sample_id}{suffix}"))
            if obj is not None:
                obj.save_as(paths[-1])
        return tuple(paths)

    def _parametric_map(self, ds, std_map):
        import warnings

        import highdicom as hd
        import numpy as np

        stored = np.round(np.clip(np.asarray(std_map, np.float64), 0.0, PM_MAX_STD) / PM_SLOPE).astype(np.uint16)
        mapping = hd.pm.RealWorldValueMapping(
            lut_label=PM_LUT_LABEL,
            lut_explanation="Std of the pneumothorax probability over the uncertainty samples",
            unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
            value_range=(0, PM_MAX_VALUE),
            intercept=0,
            slope=PM_SLOPE,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # single-component person names, as for the SEG
            pm = hd.pm.ParametricMap(
                pixel_array=stored,
                **{**self._derived_image(ds, "pm"), "source_images": [self._nominal_geometry(ds)]},
                contains_recognizable_visual_features=False,
                real_world_value_mappings=[mapping],
                voi_lut_transformations=[
                    hd.VOILUTTransformation(window_center=PM_MAX_VALUE / 2, window_width=PM_MAX_VALUE)
                ],
                content_label="PTX_STD",
                content_description="Pneumothorax probability std (ptx_keras, research use only)",
                series_description="ptx_keras pneumothorax uncertainty map (research use only)",
            )
        # The anatomy of the frames: the chest, an unpaired region (FrameLaterality "U"). Without it the General
        # Series' Laterality is required (type 2C: "required if ... Frame Laterality not present"), and an empty
        # Laterality is "only permitted when actually unknown" (dciodvfy).
        pm.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [_chest_anatomy()]
        return pm

    def _nominal_geometry(self, ds):
        """A copy of the source with a frame of reference of its own and a nominal plane, for the Parametric Map.

        The Parametric Map IOD requires a Frame of Reference and Plane Position / Orientation (Patient)
        (dciodvfy reports their absence as errors), which a projection radiograph does not have. The map gets
        a frame of reference UID that nothing else shares (derived from the source's SOP Instance UID), an
        empty position reference indicator, the identity orientation at the origin, a slice thickness of 1 and
        the source's pixel spacing (`PixelSpacing`, else `ImagerPixelSpacing`, else 1 x 1 mm): a coordinate
        system that relates the map to nothing but itself. The map is aligned with its source pixel for pixel
        through its references (Derivation Image, Referenced Series), as the SEG is. docs/deployment.md.
        """
        import copy

        geo = copy.deepcopy(ds)
        geo.FrameOfReferenceUID = self._uid("frame-of-reference", ds.SOPInstanceUID)
        geo.PositionReferenceIndicator = ""
        geo.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        geo.ImagePositionPatient = [0, 0, 0]
        geo.SliceThickness = 1
        spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or [1, 1]
        geo.PixelSpacing = [str(v) for v in spacing]
        return geo

    def _segmentation(self, ds, mask):
        import warnings

        import highdicom as hd
        from pydicom.sr.codedict import codes

        algorithm = hd.AlgorithmIdentificationSequence(
            name="ptx_keras",
            version=self.version,
            family=codes.DCM.ArtificialIntelligence,
            parameters={"model": self.model_name, **{k: str(v) for k, v in self.thresholds.to_dict().items()}},
        )
        segment = hd.seg.SegmentDescription(
            segment_number=1,
            segment_label=SEGMENT_LABEL,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Pneumothorax,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        with warnings.catch_warnings():
            # highdicom warns about single-component person names (e.g. "ANONYMOUS"), which it copies as they are.
            warnings.simplefilter("ignore", UserWarning)
            seg = hd.seg.Segmentation(
                pixel_array=mask,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=[segment],
                **self._derived_image(ds, "seg"),
                content_label="PTX_SEG",
                content_description="Pneumothorax (ptx_keras, research use only)",
                series_description="ptx_keras pneumothorax SEG (research use only)",
                omit_empty_frames=False,  # a negative image keeps its (empty) frame: the SR references it
            )
        # General Image: PatientOrientation is type 2C, required when there is no Image Orientation (Patient),
        # as for a projection radiograph: the source's (checked by `_read_source`), else empty.
        seg.PatientOrientation = ds.get("PatientOrientation", "")
        # highdicom puts the source's PixelSpacing into a Pixel Measures item without SliceThickness. DICOM
        # allows that without a frame of reference (SliceThickness is type 1C, CP 1426), but highdicom's own
        # reader then refuses the object; the standard does not require the item either (the functional group
        # is required only with a frame of reference), and the SEG lies on the source's pixel grid, whose
        # spacing the source and the SR's area in mm2 carry. Dropped, so that `highdicom.seg.segread` reads it.
        shared = seg.SharedFunctionalGroupsSequence[0]
        if "PixelMeasuresSequence" in shared and "SliceThickness" not in shared.PixelMeasuresSequence[0]:
            del shared.PixelMeasuresSequence
        return seg

    def _report(self, ds, seg, result, pm=None):
        """The Comprehensive SR (TID 1500) of one image: its ROI group, observed by this device, with the
        source, the SEG and the Parametric Map as evidence."""
        import warnings

        import highdicom as hd

        report = self._measurement_report(self._roi_group(ds, seg, result, with_uncertainty=pm is not None))
        series_uid, number = self._next_instance(ds.StudyInstanceUID, "sr")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sr = hd.sr.ComprehensiveSR(
                evidence=[ds, seg] + ([] if pm is None else [pm]),
                content=report[0],
                series_instance_uid=series_uid,
                series_number=SR_SERIES_NUMBER,
                sop_instance_uid=self._uid("instance", ds.SOPInstanceUID, "sr"),
                instance_number=number,
                manufacturer="ptx_keras",
                is_complete=False,
                is_final=False,
                is_verified=False,
                series_description="ptx_keras pneumothorax report (research use only)",
            )
        _frame_or_segment(sr)
        return sr

    def _roi_group(self, ds, seg, result, with_uncertainty):
        """The planar ROI group: the SEG's segment, its measurements and the finding, present or absent."""
        import highdicom as hd
        from pydicom.sr.codedict import codes

        algorithm = hd.sr.AlgorithmIdentification(
            name="ptx_keras",
            version=self.version,
            parameters=[self.model_name] + [f"{k}={v}" for k, v in self.thresholds.to_dict().items()],
        )
        present = codes.SCT.Present if int(result["diagnosis"]) == 1 else codes.SCT.Absent
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=self._uid("tracking", ds.SOPInstanceUID), identifier="Pneumothorax"
            ),
            referenced_segment=hd.sr.ReferencedSegmentationFrame(
                sop_class_uid=seg.SOPClassUID,
                sop_instance_uid=seg.SOPInstanceUID,
                frame_number=1,
                segment_number=1,
                source_image=hd.sr.SourceImageForSegmentation(ds.SOPClassUID, ds.SOPInstanceUID),
            ),
            finding_type=codes.SCT.Pneumothorax,
            algorithm_id=algorithm,
            measurements=_measurements(result, algorithm, with_uncertainty),
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(codes.SCT.Pneumothorax, present)],
        )

    def _measurement_report(self, group):
        """The TID 1500 measurement report of one ROI group, observed by this device (the model)."""
        import highdicom as hd
        from pydicom.sr.codedict import codes

        observer = hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=self._uid("device"), name="ptx_keras", model_name=self.model_name[:64]
            ),
        )
        return hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=observer),
            procedure_reported=codes.LN.XRayReport,
            imaging_measurements=[group],
        )


def _measurements(result, algorithm, with_uncertainty):
    """The SR's measurements: the area (mm2 when the pixel spacing is known, else pixels), the score, the maximum
    probability and, with uncertainty, the image-level std and the diagnosis agreement."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if result.get("area_mm2") is not None:
        area = hd.sr.Measurement(
            name=codes.SCT.Area, value=float(result["area_mm2"]), unit=hd.sr.CodedConcept("mm2", "UCUM", "mm2")
        )
    else:
        area = hd.sr.Measurement(
            name=codes.SCT.Area,
            value=float(result["area_px"]),
            unit=hd.sr.CodedConcept("{pixels}", "UCUM", "pixels"),
        )
    coded = [("score", SCORE_CODE), ("max_probability", MAX_PROBABILITY_CODE)]
    if with_uncertainty:
        coded += [("image_probability_std", IMAGE_STD_CODE), ("diagnosis_agreement", AGREEMENT_CODE)]
    return [area] + [
        hd.sr.Measurement(
            name=hd.sr.CodedConcept(code, PRIVATE_SCHEME, meaning),
            value=float(result[key]),
            unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
            algorithm_id=algorithm,
        )
        for key, (code, meaning) in coded
    ]


def _chest_anatomy():
    from pydicom import Dataset

    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "51185008", "SCT", "Chest"
    item = Dataset()
    item.AnatomicRegionSequence = [region]
    item.FrameLaterality = "U"
    return item


def _frame_or_segment(dataset):
    """Removes `ReferencedSegmentNumber` from references that give a `ReferencedFrameNumber` (in place).

    TID 1410's "Referenced Segmentation Frame" points at one frame of the SEG; highdicom writes the frame and its
    segment number, but the Image SOP Instance Reference Macro allows one or the other ("shall not be present
    when Referenced Frame Number is present", dciodvfy). The frame identifies its segment already (the SEG's
    Segment Identification Sequence).
    """
    for item in dataset.get("ContentSequence", []):
        for ref in item.get("ReferencedSOPSequence", []):
            if "ReferencedFrameNumber" in ref and "ReferencedSegmentNumber" in ref:
                del ref.ReferencedSegmentNumber
        _frame_or_segment(item)


def derived_uid(seed, *parts):
    """A UID derived from `seed` and `parts` (strings): the same inputs always give the same UID.

    pydicom's `generate_uid` under its own root with the inputs as entropy (a SHA-512 hash), so a UID made for
    one source SOP Instance UID and object kind never equals another's.
    """
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[str(seed), *map(str, parts)])


def check_uid(value, what="UID"):
    """The UID `value` as a string, if it is one valid DICOM UID (PS3.5 9.1).

    Args:
        value: The value read from a header (a string, or a pydicom MultiValue for a backslash-separated one).
        what: Names the value in the message (e.g. `"SOPInstanceUID of x.dcm"`).

    Returns:
        The UID.

    Raises:
        DataError: for several values (a backslash), an empty value, more than 64 characters, or anything but
            digit components separated by dots without leading zeros.
    """
    from pydicom.multival import MultiValue

    if isinstance(value, (MultiValue, list, tuple)) or "\\" in str(value):
        raise DataError(f"{what} is multi-valued ({str(value)!r}); a DICOM object needs one UID here")
    text = str(value if value is not None else "")
    if not text or len(text) > _UID_MAX or not _UID_RE.fullmatch(text):
        raise DataError(
            f"{what} is not a valid DICOM UID ({text[:80]!r}: at most {_UID_MAX} characters, digits "
            "and dots, no leading zeros)"
        )
    return text


def _check_file_stem(stem):
    if not isinstance(stem, str) or not stem or len(stem) > 200 or _STEM_BAD_RE.search(stem) or stem.startswith("."):
        raise ValueError(
            f"sample_id must be a file name stem (1 to 200 characters, no path separator, control "
            f"character or leading dot). Received: sample_id={stem!r}"
        )


def _age_in_years(text):
    """'29' -> '029Y': a bare number of years, as some exports (SIIM-ACR) write PatientAge; else None."""
    return f"{int(text):03d}Y" if text.isdigit() and int(text) <= 150 else None


def sanitize_header(ds, path):
    """Checks the values the derived objects copy from a source header; repairs or drops invalid ones in place.

    highdicom copies the source's Patient, General Study and Patient Study attributes into every derived
    object, and the objects reference the source's UIDs. So that an object never repeats a source's encoding
    error (dciodvfy then reports it as the object's), every top-level public attribute of the header is
    validated against its VR (pydicom's validators, plus: no control characters in text, no backslash in a
    single-valued attribute):

    * the source's Study, Series and SOP Instance UIDs and SOP Class UID must be valid single UIDs, else
      `DataError` (they cannot be repaired: they are what the objects point at);
    * `PatientAge` (AS) written as a bare number of years ("29") becomes "029Y";
    * any other invalid value is dropped: emptied when the derived objects must carry the attribute
      (type 2: names, IDs, study date and time), else removed.

    Args:
        ds: The source header (a pydicom Dataset, changed in place).
        path: The file, named in the messages.

    Returns:
        A list of `"Keyword: 'old' -> 'new'"` / `"Keyword: 'old' dropped (reason)"` strings (logged at warning).

    Raises:
        DataError: for an invalid or multi-valued source UID.
    """
    from pydicom import config
    from pydicom.datadict import dictionary_VM
    from pydicom.multival import MultiValue
    from pydicom.valuerep import validate_value

    for keyword in _SOURCE_UIDS:
        setattr(ds, keyword, check_uid(ds.get(keyword), f"{keyword} of {path}"))
    changes = []
    for elem in list(ds):
        if elem.tag.is_private or elem.VR in _UNCHECKED_VRS or elem.keyword in _SOURCE_UIDS or elem.value is None:
            continue
        values = list(elem.value) if isinstance(elem.value, MultiValue) else [elem.value]
        problem = None
        if len(values) > 1 and dictionary_VM(elem.tag) == "1":
            problem = "multi-valued"
        for value in values:
            if problem:
                break
            if elem.VR in _TEXT_VRS and _CONTROL_RE.search(str(value)):  # str: a PersonName is not a str
                problem = "control characters"
                break
            try:
                # numbers read from DS/IS strings are checked as the strings they were read from
                validate_value(elem.VR, str(value) if elem.VR in ("DS", "IS") else value, config.RAISE)
            except (ValueError, TypeError) as e:
                problem = str(e).split(" Please see")[0]
        if problem is None:
            continue
        old = str(elem.value)[:64]
        repaired = _age_in_years(str(elem.value).strip()) if elem.VR == "AS" else None
        if repaired:
            elem.value = repaired
            changes.append(f"{elem.keyword}: {old!r} -> {repaired!r}")
        elif elem.keyword in _TYPE2_COPIED:
            elem.value = ""
            changes.append(f"{elem.keyword}: {old!r} emptied ({problem})")
        else:
            del ds[elem.tag]
            changes.append(f"{elem.keyword or elem.tag}: {old!r} dropped ({problem})")
    if changes:
        logger.warning("%s: invalid header values not copied as they are: %s", path, "; ".join(changes))
    return changes


def _read_source(path):
    """The source's header (pixels not read), sanitised (`sanitize_header`), with empty type 2 attributes
    added where the file lacks them."""
    ds = read_dicom_header(path)
    missing = [k for k in (*_SOURCE_UIDS, "Rows", "Columns") if k not in ds]
    if missing:
        raise DataError(f"{path}: DICOM lacks {missing}, which the Segmentation must reference")
    sanitize_header(ds, path)
    added = [k for k in _TYPE2_COPIED if k not in ds]
    for keyword in added:
        setattr(ds, keyword, "")
    if added:
        logger.debug("%s: no %s; written empty in the derived objects", path, ", ".join(added))
    return ds
