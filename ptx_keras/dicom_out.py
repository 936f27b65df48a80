"""DICOM in -> DICOM out: a Segmentation and a Structured Report per DICOM input, for PACS and viewers.

For each DICOM image `ptx-predict --format dicom` writes, in `OUTPUT/dicom/`:

* `<sample_id>_seg.dcm`: a **DICOM Segmentation** (binary, one segment "Pneumothorax", SNOMED CT 36118008 in
  the category "Morphologically abnormal structure" 49755003), on the source's pixel grid (same rows and
  columns, the source's `PixelSpacing` when it has one), referencing the source image (Study, Series and SOP
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
to one study). The source files are only read. Built with highdicom and pydicom
(`pip install "ptx_keras[deploy]"`).

Not a medical device: the objects say "research use" in their descriptions.
"""

import functools
import logging
import os

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
_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                 "ReferringPhysicianName", "AccessionNumber", "StudyID")
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

    Raises:
        ModelError: if highdicom is not installed.
        ValueError: for an empty model name.
    """

    def __init__(self, output_dir, model_name, thresholds, version=None):
        from ptx_keras import __version__

        _highdicom()
        if not model_name or not isinstance(model_name, str):
            raise ValueError(f"model_name must be a non-empty string. Received: model_name={model_name!r}")
        self.output_dir = os.fspath(output_dir)
        self.model_name, self.thresholds = model_name, thresholds
        self.version = str(version or __version__)
        self._series = {}  # (StudyInstanceUID, "seg" | "sr" | "pm") -> (SeriesInstanceUID, next instance number)
        os.makedirs(self.output_dir, exist_ok=True)

    def _next_instance(self, study_uid, kind):
        import highdicom as hd

        uid, number = self._series.get((study_uid, kind), (hd.UID(), 1))
        self._series[(study_uid, kind)] = (uid, number + 1)
        return uid, number

    def _derived_image(self, ds, kind):
        """The arguments highdicom's SEG and Parametric Map share: source, new UIDs in the run's series, device."""
        import highdicom as hd

        series_uid, number = self._next_instance(ds.StudyInstanceUID, kind)
        return dict(
            source_images=[ds],
            series_instance_uid=series_uid,
            series_number={"seg": SEG_SERIES_NUMBER, "pm": PM_SERIES_NUMBER}[kind],
            sop_instance_uid=hd.UID(),
            instance_number=number,
            manufacturer="ptx_keras",
            manufacturer_model_name=self.model_name[:64],
            software_versions=self.version,
            device_serial_number="N/A",
        )

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
            DataError: if the source is not a readable single-frame DICOM image, or the mask or the std map does
                not match its rows and columns.
        """
        import numpy as np

        source = os.fspath(source)
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
            return _projection_parametric_map_class()(
                pixel_array=stored,
                **self._derived_image(ds, "pm"),
                contains_recognizable_visual_features=False,
                real_world_value_mappings=[mapping],
                voi_lut_transformations=[hd.VOILUTTransformation(window_center=PM_MAX_VALUE / 2,
                                                                 window_width=PM_MAX_VALUE)],
                content_label="PTX_STD",
                content_description="Pneumothorax probability std (ptx_keras, research use only)",
                series_description="ptx_keras pneumothorax uncertainty map (research use only)",
            )

    def _segmentation(self, ds, mask):
        import warnings

        import highdicom as hd
        from pydicom.sr.codedict import codes

        algorithm = hd.AlgorithmIdentificationSequence(
            name="ptx_keras", version=self.version, family=codes.DCM.ArtificialIntelligence,
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
        return seg

    def _report(self, ds, seg, result, pm=None):
        import warnings

        import highdicom as hd
        from pydicom.sr.codedict import codes

        positive = int(result["diagnosis"]) == 1
        unit_1 = hd.sr.CodedConcept("1", "UCUM", "no units")
        if result.get("area_mm2") is not None:
            area = hd.sr.Measurement(name=codes.SCT.Area, value=float(result["area_mm2"]),
                                     unit=hd.sr.CodedConcept("mm2", "UCUM", "mm2"))
        else:
            area = hd.sr.Measurement(name=codes.SCT.Area, value=float(result["area_px"]),
                                     unit=hd.sr.CodedConcept("{pixels}", "UCUM", "pixels"))
        algorithm = hd.sr.AlgorithmIdentification(
            name="ptx_keras", version=self.version,
            parameters=[self.model_name] + [f"{k}={v}" for k, v in self.thresholds.to_dict().items()],
        )
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Pneumothorax"),
            referenced_segment=hd.sr.ReferencedSegmentationFrame(
                sop_class_uid=seg.SOPClassUID,
                sop_instance_uid=seg.SOPInstanceUID,
                frame_number=1,
                segment_number=1,
                source_image=hd.sr.SourceImageForSegmentation(ds.SOPClassUID, ds.SOPInstanceUID),
            ),
            finding_type=codes.SCT.Pneumothorax,
            algorithm_id=algorithm,
            measurements=[
                area,
                hd.sr.Measurement(name=hd.sr.CodedConcept(SCORE_CODE[0], PRIVATE_SCHEME, SCORE_CODE[1]),
                                  value=float(result["score"]), unit=unit_1, algorithm_id=algorithm),
                hd.sr.Measurement(name=hd.sr.CodedConcept(MAX_PROBABILITY_CODE[0], PRIVATE_SCHEME,
                                                          MAX_PROBABILITY_CODE[1]),
                                  value=float(result["max_probability"]), unit=unit_1, algorithm_id=algorithm),
            ] + ([] if pm is None else [
                hd.sr.Measurement(name=hd.sr.CodedConcept(code, PRIVATE_SCHEME, meaning),
                                  value=float(result[key]), unit=unit_1, algorithm_id=algorithm)
                for key, (code, meaning) in (("image_probability_std", IMAGE_STD_CODE),
                                             ("diagnosis_agreement", AGREEMENT_CODE))
            ]),
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(codes.SCT.Pneumothorax, codes.SCT.Present if positive else codes.SCT.Absent)
            ],
        )
        observer = hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=hd.UID(), name="ptx_keras", model_name=self.model_name[:64]
            ),
        )
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_device_context=observer),
            procedure_reported=codes.LN.XRayReport,
            imaging_measurements=[group],
        )
        series_uid, number = self._next_instance(ds.StudyInstanceUID, "sr")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sr = hd.sr.ComprehensiveSR(
                evidence=[ds, seg] + ([] if pm is None else [pm]),
                content=report[0],
                series_instance_uid=series_uid,
                series_number=SR_SERIES_NUMBER,
                sop_instance_uid=hd.UID(),
                instance_number=number,
                manufacturer="ptx_keras",
                is_complete=False,
                is_final=False,
                is_verified=False,
                series_description="ptx_keras pneumothorax report (research use only)",
            )
        return sr


@functools.lru_cache(maxsize=None)
def _projection_parametric_map_class():
    """The Parametric Map class, made on first use (highdicom is an optional dependency)."""
    import highdicom as hd

    class ProjectionParametricMap(hd.pm.ParametricMap):
        """highdicom's ParametricMap for a source without a frame of reference (a projection radiograph).

        highdicom 0.28 indexes the frames of such an image by `FrameLabel` (its Dimension Index Sequence says
        so) but, for a parametric map, leaves each frame's `DimensionIndexValues` empty and its `FrameLabel`
        unset, and then refuses its own object ("Unexpected mismatch between dimension index values ...").
        The one frame is given index 1 and a label before highdicom indexes the frames.
        """

        def _build_luts(self):
            for item in self.get("PerFrameFunctionalGroupsSequence", []):
                content = item.FrameContentSequence[0]
                if not content.get("DimensionIndexValues") and "FrameLabel" not in content:
                    content.DimensionIndexValues = [1]
                    content.FrameLabel = PM_LUT_LABEL
            super()._build_luts()

    return ProjectionParametricMap


def _read_source(path):
    """The source's header (pixels not read), with empty type 2 attributes added where the file lacks them."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError) as e:
        raise DataError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e})") from None
    missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "Rows",
                           "Columns") if k not in ds]
    if missing:
        raise DataError(f"{path}: DICOM lacks {missing}, which the Segmentation must reference")
    added = [k for k in _TYPE2_COPIED if k not in ds]
    for keyword in added:
        setattr(ds, keyword, "")
    if added:
        logger.debug("%s: no %s; written empty in the derived objects", path, ", ".join(added))
    return ds
