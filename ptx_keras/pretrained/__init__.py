"""Checkpoints shipped with the package: weights to start fine-tuning from (`train.init_from`).

A shipped checkpoint is named instead of a path: `--init-from phantom_small_cpu` (or `train.init_from:
phantom_small_cpu`) reads the `.keras` file installed with the package. A path that exists wins over a name,
so a run directory that happens to carry a checkpoint's name is still read as the run.

Each checkpoint records the configuration whose architecture it has (fine-tune with that configuration, or one
based on it: `ptx_keras.finetune` matches layers by name and shapes), the command that made it and the SHA-256 of
its file, checked when it is read (a damaged or replaced file is refused rather than silently loaded). How it was
made and what it measured: docs/training.md, "Learning a new kind of image".
"""

import dataclasses
import os

from ptx_keras.errors import ModelError
from ptx_keras.runs import file_sha256

__all__ = ["CHECKPOINTS", "PRETRAINED_DIR", "Checkpoint", "checkpoint_file", "is_checkpoint_name"]

PRETRAINED_DIR = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One shipped checkpoint.

    Attributes:
        name: What `train.init_from` takes.
        filename: The `.keras` file in `PRETRAINED_DIR` (the model without its optimizer).
        sha256: The file's SHA-256.
        config: The configuration (under `configs/`) whose model it is.
        command: The command that trained it (from the repository root; the date, machine and code are in
            docs/training.md).
        description: One line for listings and error messages.
    """

    name: str
    filename: str
    sha256: str
    config: str
    command: str
    description: str

    @property
    def path(self):
        return os.path.join(PRETRAINED_DIR, self.filename)


CHECKPOINTS = {
    c.name: c
    for c in (
        Checkpoint(
            name="phantom_small_cpu",
            filename="phantom_small_cpu.keras",
            sha256="8bd53a66a502426cedf53ca6b5f7d7aecd85f547e4646e7de05e58b02d7a43ef",
            config="small_cpu.yaml",
            command="python train.py --config configs/small_cpu.yaml --name pretrain",
            description="the small-CPU model (128 px, growth rate 8, 3 layers per block) trained on 1,600 varied "
            "phantoms",
        ),
    )
}


def is_checkpoint_name(source):
    """True when `source` names a shipped checkpoint and no file or directory of that name exists."""
    path = os.fspath(source)
    return path in CHECKPOINTS and not os.path.exists(path)


def checkpoint_file(name):
    """The verified `.keras` file of the shipped checkpoint `name`.

    Raises:
        ModelError: if `name` is not a shipped checkpoint, or its file is missing or not the one shipped.
    """
    if name not in CHECKPOINTS:
        raise ModelError(f"No shipped checkpoint named {name!r}. Shipped: {', '.join(sorted(CHECKPOINTS))}")
    c = CHECKPOINTS[name]
    if not os.path.isfile(c.path):
        raise ModelError(f"The shipped checkpoint {name!r} is missing: {c.path} (reinstall ptx_keras)")
    digest = file_sha256(c.path)
    if digest != c.sha256:
        raise ModelError(
            f"The shipped checkpoint {name!r} at {c.path} is not the file shipped (SHA-256 {digest}, expected "
            f"{c.sha256}); reinstall ptx_keras"
        )
    return c.path
