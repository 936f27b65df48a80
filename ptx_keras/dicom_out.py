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
  the algorithm with its thresholds, marked unverified and partial (a draft for a reader to confirm).

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

import logging
import os

from ptx_keras.errors import DataError, ModelError

logger = logging.getLogger(__name__)

DICOM_DIRNAME = "dicom"
SEG_SUFFIX = "_seg.dcm"
SR_SUFFIX = "_sr.dcm"
SEGMENT_LABEL = "Pneumothorax"
SEG_SERIES_NUMBER = 9101  # high numbers keep derived series after the acquired ones in viewers' series lists
SR_SERIES_NUMBER = 9102
PRIVATE_SCHEME = "99PTXKERAS"  # a local coding scheme ("99" prefix) for the values no standard code names
SCORE_CODE = ("PTX-SCORE", "Pneumothorax score")
MAX_PROBABILITY_CODE = ("PTX-MAXP", "Maximum pneumothorax probability")
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
        self._series = {}  # (StudyInstanceUID, "seg" | "sr") -> (SeriesInstanceUID, next instance number)
        os.makedirs(self.output_dir, exist_ok=True)

    def _next_instance(self, study_uid, kind):
        import highdicom as hd

        uid, number = self._series.get((study_uid, kind), (hd.UID(), 1))
        self._series[(study_uid, kind)] = (uid, number + 1)
        return uid, number

    def write(self, source, sample_id, mask, result):
        """Writes the SEG and the SR of one DICOM image.

        Args:
            source: The DICOM file that was predicted (only read).
            sample_id: Names the outputs (`<sample_id>_seg.dcm`, `<sample_id>_sr.dcm`).
            mask: uint8/bool `(rows, cols)`, the final mask (already emptied for a negative diagnosis).
            result: dict with `diagnosis` (0/1), `score`, `max_probability`, `area_px` and `area_mm2` (or None).

        Returns:
            `(seg_path, sr_path)`.

        Raises:
            DataError: if the source is not a readable single-frame DICOM image, or the mask does not match its
                rows and columns.
        """
        import numpy as np

        source = os.fspath(source)
        ds = _read_source(source)
        mask = np.asarray(mask)
        if mask.shape != (int(ds.Rows), int(ds.Columns)):
            raise DataError(f"{source}: the mask has shape {mask.shape}, the image {int(ds.Rows)}x{int(ds.Columns)}")
        seg = self._segmentation(ds, (mask != 0).astype(np.uint8))
        sr = self._report(ds, seg, result)
        seg_path = os.path.join(self.output_dir, f"{sample_id}{SEG_SUFFIX}")
        sr_path = os.path.join(self.output_dir, f"{sample_id}{SR_SUFFIX}")
        seg.save_as(seg_path)
        sr.save_as(sr_path)
        return seg_path, sr_path

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
        series_uid, number = self._next_instance(ds.StudyInstanceUID, "seg")
        with warnings.catch_warnings():
            # highdicom warns about single-component person names (e.g. "ANONYMOUS"), which it copies as they are.
            warnings.simplefilter("ignore", UserWarning)
            seg = hd.seg.Segmentation(
                source_images=[ds],
                pixel_array=mask,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=[segment],
                series_instance_uid=series_uid,
                series_number=SEG_SERIES_NUMBER,
                sop_instance_uid=hd.UID(),
                instance_number=number,
                manufacturer="ptx_keras",
                manufacturer_model_name=self.model_name[:64],
                software_versions=self.version,
                device_serial_number="N/A",
                content_label="PTX_SEG",
                content_description="Pneumothorax (ptx_keras, research use only)",
                series_description="ptx_keras pneumothorax SEG (research use only)",
                omit_empty_frames=False,  # a negative image keeps its (empty) frame: the SR references it
            )
        return seg

    def _report(self, ds, seg, result):
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
            ],
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
                evidence=[ds, seg],
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
