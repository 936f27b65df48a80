"""Process-wide settings that make TensorFlow faster on CPUs; they must be applied before TensorFlow starts.

`configure_process()` runs when a command-line entry point starts (`ptx_keras.cli.common`) and at the start of
`ptx_keras.training.configure_execution`; a script that imports TensorFlow itself should call it first. It
sets, unless the variable is already set (yours win), the environment variables that TensorFlow reads once,
when it starts (measured in docs/benchmarks.md, "Speed against PyTorch"):

* `TF_CPU_ALLOCATOR_USE_BFC=true`: TensorFlow's best-fit-with-coalescing pool (its GPU allocator) for CPU
  tensors. The default CPU allocator hands every tensor to `malloc`, which maps each block of more than
  32 MiB (an FC-DenseNet at 256 x 256 makes hundreds per step) freshly from the kernel and unmaps it when
  it is freed: every page is faulted in again on every step, a third of a training step's CPU time went to
  the kernel. The pool maps its memory once and keeps it (the process's resident memory stays at its peak).
* `TF_ENABLE_ONEDNN_OPTS=1`: oneDNN's convolution, batch-normalization and pooling kernels. TensorFlow turns
  them on by itself only on CPUs with AVX-512 VNNI or newer; on AVX2 CPUs it otherwise runs Eigen's
  convolutions, whose filter gradients took almost half of a training step.

On a GPU machine both only concern the few operations left on the CPU. Set `PTX_KERAS_PROCESS_TUNING=0` to
change nothing. Once TensorFlow has been imported the settings can no longer take effect: `configure_process`
then leaves them alone and says so (in its result and a log warning).
"""

import logging
import os
import sys

__all__ = ["PROCESS_SETTINGS", "TUNING_VARIABLE", "configure_process", "tuning_enabled"]


logger = logging.getLogger(__name__)

TUNING_VARIABLE = "PTX_KERAS_PROCESS_TUNING"
PROCESS_SETTINGS = {"TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_ENABLE_ONEDNN_OPTS": "1"}

_applied = {}


def tuning_enabled():
    """Whether `configure_process` changes anything (`PTX_KERAS_PROCESS_TUNING`, default on)."""
    return os.environ.get(TUNING_VARIABLE, "1").strip().lower() not in ("0", "false", "off", "no")


def configure_process():
    """Sets `PROCESS_SETTINGS` in the environment, once per process, where TensorFlow has not started yet.

    Returns:
        dict of the process's settings: `{variable: value in effect}`, `{"tuning": "off"}`, or with
        `"not_applied"` saying why when TensorFlow had already been imported. Later calls return the first
        call's result.
    """
    if _applied:
        return dict(_applied)
    if not tuning_enabled():
        _applied["tuning"] = "off"
        return dict(_applied)
    if "tensorflow" in sys.modules:
        missing = sorted(set(PROCESS_SETTINGS) - set(os.environ))
        if missing:
            _applied["not_applied"] = f"TensorFlow started before configure_process(): {', '.join(missing)} not set"
            logger.warning("%s; call ptx_keras.runtime.configure_process() before importing TensorFlow (or "
                           "Keras) for the faster CPU settings (docs/benchmarks.md)", _applied["not_applied"])
    else:
        for name, value in PROCESS_SETTINGS.items():
            os.environ.setdefault(name, value)
    _applied.update({name: os.environ.get(name) for name in PROCESS_SETTINGS})
    return dict(_applied)
