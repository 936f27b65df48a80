"""Phantoms written like a SIIM-ACR export: one DICOM per image, `train-rle.csv` rows per region.

The classic style writes what it always wrote (MONOCHROME2; JPEG Baseline 8-bit, or uncompressed 16-bit).
The randomised styles draw each image's export like a mix of real exports (`styles.EXPORT`): photometric
interpretation MONOCHROME1 or MONOCHROME2, 8, 12 or 16 stored bits, and the transfer syntax: Explicit VR
Little Endian, JPEG Baseline (8-bit only), RLE Lossless or Deflated Explicit VR Little Endian. JPEG
Lossless (process 14), JPEG-LS and JPEG 2000 are not written: no encoder for them ships with the package's
dependencies (pydicom encodes RLE itself, Pillow writes baseline JPEG; pylibjpeg-libjpeg only decodes).
"""

import os

import numpy as np
from scipy import ndimage

from ptx_keras.constants import PHANTOM_SPACING_MM, SIIM_SIZE

__all__ = ["SIIM_UID_ROOT", "classic_export", "uid", "write_siim_sample"]


SIIM_UID_ROOT = "1.2.826.0.1.3680043.10.1234."  # UID root of the phantom DICOMs (arbitrary, fixed)
_TRANSFERS = {"explicit": None, "jpeg": "jpeg", "rle": "rle", "deflate": "deflate"}


def uid(kind, seed, sample, style="classic"):
    """A deterministic DICOM UID for `kind` ("image", "study", "series") of a sample of a set."""
    from pydicom.uid import generate_uid

    sources = [kind, str(seed), sample] + ([] if style == "classic" else [style])
    return generate_uid(prefix=SIIM_UID_ROOT, entropy_srcs=sources)


def classic_export(bit_depth):
    """The classic style's export: `(photometric, bits_stored, transfer)`."""
    return ("MONOCHROME2", 8, "jpeg") if bit_depth == 8 else ("MONOCHROME2", 16, "explicit")


def write_siim_sample(root, sid, image, mask, seed, export, style="classic"):
    """Writes one DICOM of the SIIM-ACR layout.

    Args:
        root: The set's folder (`dicom-images-train/<study>/<series>/<ImageId>.dcm` is written below it).
        sid: The phantom id (written as `PatientID`).
        image: The display-ready image, uint8 for 8 stored bits, else uint16 within `bits_stored`.
        mask: Its bool mask.
        seed: The set's seed (part of the UIDs).
        export: `(photometric, bits_stored, transfer)`, transfer one of "explicit", "jpeg", "rle", "deflate".
        style: The phantom style (part of the UIDs of the randomised styles).

    Returns:
        The `(ImageId, rle)` rows of `train-rle.csv`: `-1` for an empty mask, else one per connected region.
    """
    from ptx_keras.data.dicom import write_dicom
    from ptx_keras.data.rle import rle_encode

    photometric, bits_stored, transfer = export
    image_id = uid("image", seed, sid, style)
    folder = os.path.join(root, "dicom-images-train", uid("study", seed, sid, style), uid("series", seed, sid, style))
    scale = SIIM_SIZE * PHANTOM_SPACING_MM
    write_dicom(
        os.path.join(folder, f"{image_id}.dcm"),
        image,
        photometric=photometric,
        spacing=(scale / image.shape[0], scale / image.shape[1]),
        compress=_TRANSFERS[transfer],
        patient_id=sid,
        sop_instance_uid=image_id,
        bits_stored=bits_stored,
    )
    if not mask.any():
        return [(image_id, "-1")]
    labels, count = ndimage.label(mask, structure=np.ones((3, 3), bool))
    return [(image_id, rle_encode(labels == k)) for k in range(1, count + 1)]
