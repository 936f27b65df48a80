"""Shared test setup: quiet TensorFlow, the TensorFlow backend, deterministic seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed():
    import keras

    keras.utils.set_random_seed(0)
    yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory (config.yaml, best.keras) of the bright-is-pneumothorax model of `tiny.py`."""
    from tiny import make_bright_run

    return make_bright_run(str(tmp_path_factory.mktemp("run")))
