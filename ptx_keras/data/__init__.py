"""Data: readers, RLE, DICOM, synthetic phantoms, weight maps, preparation and the tf.data pipeline.

This package never imports models or losses. Names are resolved lazily so that importing
`ptx_keras.data` does not import TensorFlow (preparation workers only need NumPy).
"""

import importlib

_LAZY = {
    # weight maps (eq. 6)
    "spatial_weight_map": "ptx_keras.data.weight_maps",
    "class_weight_map": "ptx_keras.data.weight_maps",
    "boundary_mask": "ptx_keras.data.weight_maps",
    # run-length encoding (SIIM-ACR)
    "rle_decode": "ptx_keras.data.rle",
    "rle_encode": "ptx_keras.data.rle",
    # DICOM
    "read_dicom": "ptx_keras.data.dicom",
    "write_dicom": "ptx_keras.data.dicom",
    # readers
    "discover_source": "ptx_keras.data.readers",
    "read_folder": "ptx_keras.data.readers",
    "read_csv_manifest": "ptx_keras.data.readers",
    "read_siim": "ptx_keras.data.readers",
    "load_sample": "ptx_keras.data.readers",
    "read_image": "ptx_keras.data.readers",
    "read_mask": "ptx_keras.data.readers",
    # phantoms
    "make_phantom": "ptx_keras.data.phantoms",
    "write_phantom_dataset": "ptx_keras.data.phantoms",
    "generate_phantoms": "ptx_keras.data.phantoms",
    "phantom_dataset_name": "ptx_keras.data.phantoms",
    # split, preparation, pipeline
    "stratified_split": "ptx_keras.data.split",
    "PrepareSettings": "ptx_keras.data.settings",
    "prepare_dataset": "ptx_keras.data.prepare",
    "load_prepared_info": "ptx_keras.data.prepared",
    "is_prepared_dir": "ptx_keras.data.prepared",
    "resolve_data": "ptx_keras.data.resolve",
    "make_dataset": "ptx_keras.data.pipeline",
    "count_examples": "ptx_keras.data.pipeline",
    "make_dataset_from_source": "ptx_keras.data.pipeline",
    # records
    "SampleRecord": "ptx_keras.data.records",
    "LoadedSample": "ptx_keras.data.records",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ptx_keras.data' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = sorted(_LAZY)
