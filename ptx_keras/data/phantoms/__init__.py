"""Synthetic chest-radiograph phantoms with pneumothoraces: the built-in data set.

No real radiographs ship with the package, so the quick start, the tests and the documentation use these
seeded, vectorised renderings (NumPy, `scipy.ndimage`, Pillow for devices and labels), in three styles:

- `classic` (`classic.py`): the original generator, one look, kept bit for bit;
- `varied` (`styled.py`, `overlays.py`, `processing.py`, factor table in `styles.py`): randomised anatomy,
  positioning, exposure and detector processing, devices, labels and pneumothorax mimics: the training
  distribution;
- `heldout`: the same finding drawn with other anatomy ranges, other processing and other devices, from
  random streams no `varied` phantom uses: a style to test a `varied`-trained model on.

Geometry is defined in normalised coordinates, so an image renders at any size directly (the mask is exact
at that size). Patient sides follow the radiographic convention: the patient's right is on the image left.
`write_phantom_dataset` writes sets in the layouts the readers accept (`writing.py`, `siim.py`);
`phantom_dataset_name` names a set from its settings. The command line is `ptx-phantoms`
(`python -m ptx_keras.cli.phantoms`). docs/data.md describes the styles and every factor's range.
"""

from ptx_keras.data.phantoms.generate import (
    KINDS,
    SIDES,
    SIZE_CLASSES,
    _make_phantom_layers,
    check_style,
    generate_phantoms,
    make_phantom,
    render_phantom,
    sample_id,
)
from ptx_keras.data.phantoms.styles import style_table
from ptx_keras.data.phantoms.writing import default_size, phantom_dataset_name, write_phantom_dataset

__all__ = [
    "KINDS",
    "SIDES",
    "SIZE_CLASSES",
    "check_style",
    "default_size",
    "generate_phantoms",
    "make_phantom",
    "phantom_dataset_name",
    "render_phantom",
    "sample_id",
    "style_table",
    "write_phantom_dataset",
]
