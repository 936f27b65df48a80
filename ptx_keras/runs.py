"""The run directory: every path of a training run, its status, its model, its thresholds and its metadata.

Nothing else in the package spells a run path; everyone asks a `RunDir`. The layout:

```
<output_dir>/<name>/
  config.yaml                  the resolved configuration (what was asked for)
  run.json                     what the run resolved and did (prepared data, package version, status, times)
  history.csv                  one row per finished epoch
  checkpoints/backup/          BackupAndRestore state: the same command resumes a killed run
  best.keras                   the model at the best monitored epoch
  logs/                        TensorBoard
  training_curves.png
  init_from.csv                a fine-tuned run: what each layer took from train.init_from (ptx_keras.finetune)
  eval/<split>/                evaluation on the run's own data (per_image.csv, summary.json/.md, figures)
  eval/val/thresholds.json     the run's diagnosis thresholds, chosen on its validation split
  eval/val/threshold_search.csv
  eval/external/<data>/<split>/          evaluations on other data, never over the run's own results
  eval/external/<data>/val/thresholds.json   a threshold search on other data: used only for that data
  saved_model/<version>/, saved_model/export.json   the TF Serving export
  onnx/model.onnx, onnx/export.json                 the ONNX export (ONNX Runtime)
  litert/model.tflite, litert/export.json           the LiteRT export (.tflite)
```

`<data>` names an external data set by its folder name and a hash of its absolute path (`external_name`), so
two folders called `siim` in different places never share a directory.
"""

import dataclasses
import datetime
import hashlib
import logging
import os

from ptx_keras import constants as C
from ptx_keras.errors import ConfigError, ModelError, PtxError
from ptx_keras.files import file_sha256, write_json  # noqa: F401  (write_json: importable from here as before)
from ptx_keras.files import read_json as _read_json

__all__ = [
    "BACKUP_DIRNAME",
    "BEST_MODEL_FILENAME",
    "CHECKPOINTS_DIRNAME",
    "COMPARISON_DIRNAME",
    "CONFIG_FILENAME",
    "CURVES_FILENAME",
    "DATA_CACHE_DIRNAME",
    "ERROR_FILENAME",
    "EVAL_DIRNAME",
    "EXTERNAL_DIRNAME",
    "HISTORY_FILENAME",
    "LITERT_DIRNAME",
    "LOGS_DIRNAME",
    "METADATA_FILENAME",
    "ONNX_DIRNAME",
    "PER_IMAGE_FILENAME",
    "SAVED_MODEL_DIRNAME",
    "STATUSES",
    "STATUS_EVALUATED",
    "STATUS_NEW",
    "STATUS_STARTED",
    "STATUS_TRAINED",
    "SUMMARY_JSON_FILENAME",
    "SUMMARY_MD_FILENAME",
    "THRESHOLDS_FILENAME",
    "THRESHOLD_GRID_FILENAME",
    "THRESHOLD_SPLIT",
    "RunDir",
    "SavedThresholds",
    "external_name",
    "file_sha256",
    "latest_run",
    "write_json",
]


logger = logging.getLogger(__name__)

# Every on-disk name of a run, defined once.
CONFIG_FILENAME = "config.yaml"
METADATA_FILENAME = "run.json"
HISTORY_FILENAME = "history.csv"
BEST_MODEL_FILENAME = "best.keras"
CURVES_FILENAME = "training_curves.png"
INIT_REPORT_FILENAME = "init_from.csv"
CHECKPOINTS_DIRNAME = "checkpoints"
BACKUP_DIRNAME = "backup"
LOGS_DIRNAME = "logs"
EVAL_DIRNAME = "eval"
EXTERNAL_DIRNAME = "external"
SAVED_MODEL_DIRNAME = "saved_model"
ONNX_DIRNAME = "onnx"
LITERT_DIRNAME = "litert"
ERROR_FILENAME = "error.txt"
THRESHOLDS_FILENAME = "thresholds.json"
THRESHOLD_GRID_FILENAME = "threshold_search.csv"
PER_IMAGE_FILENAME = "per_image.csv"
SUMMARY_JSON_FILENAME = "summary.json"
SUMMARY_MD_FILENAME = "summary.md"
COMPARISON_DIRNAME = "comparison"
DATA_CACHE_DIRNAME = "data_cache"
THRESHOLD_SPLIT = "val"  # thresholds are only ever chosen on the validation split

# Run states, from the files present (see `RunDir.status`).
STATUS_NEW = "new"  # nothing written yet
STATUS_STARTED = "started"  # configured, no trained model yet (or interrupted)
STATUS_TRAINED = "trained"  # best.keras exists
STATUS_EVALUATED = "evaluated"  # the test split of its own data is scored
STATUSES = (STATUS_NEW, STATUS_STARTED, STATUS_TRAINED, STATUS_EVALUATED)


def external_name(data_path):
    """The directory name of evaluations on `data_path`: `<folder name>-<8 hex of the absolute path's SHA-1>`."""
    path = os.path.abspath(os.fspath(data_path))
    base = os.path.basename(os.path.normpath(path)) or "data"
    return f"{base}-{hashlib.sha1(path.encode('utf-8')).hexdigest()[:8]}"


@dataclasses.dataclass(frozen=True)
class SavedThresholds:
    """The diagnosis thresholds a run uses and where they came from.

    Attributes:
        thresholds: The `ptx_keras.diagnosis.Thresholds`.
        source: `"configuration"` or `"validation search"`.
        file: The thresholds file, or the run's config.yaml for configuration thresholds.
        stale: True when the search was made for another `best.keras` than the current one.
        search: The file's other fields (objective, value, split, counts, model hash), empty for the configuration.
    """

    thresholds: object
    source: str
    file: str
    stale: bool = False
    search: dict = dataclasses.field(default_factory=dict)

    def describe(self):
        """A JSON-ready dict: the three numbers, `source`, `file`, `stale` and the search's fields."""
        return {
            **self.search,
            **self.thresholds.to_dict(),
            "source": self.source,
            "file": self.file,
            "stale": self.stale,
        }


@dataclasses.dataclass(frozen=True)
class RunDir:
    """One training run's directory (see the module docstring for the layout).

    Args:
        path: The run directory (`<output_dir>/<name>`; need not exist yet).
    """

    path: str

    def __post_init__(self):
        if not isinstance(self.path, (str, os.PathLike)) or not os.fspath(self.path):
            raise ValueError(f"path must be a non-empty path. Received: path={self.path!r}")
        object.__setattr__(self, "path", os.fspath(self.path))

    @classmethod
    def of(cls, run):
        """`run` itself if it is a `RunDir`, else `RunDir(run)`."""
        return run if isinstance(run, RunDir) else cls(run)

    @property
    def name(self):
        return os.path.basename(os.path.normpath(self.path))

    def __fspath__(self):
        return self.path

    def __str__(self):
        return self.path

    # --- Paths -------------------------------------------------------------------------------------------
    def _join(self, *parts):
        return os.path.join(self.path, *parts)

    @property
    def config_file(self):
        return self._join(CONFIG_FILENAME)

    @property
    def metadata_file(self):
        return self._join(METADATA_FILENAME)

    @property
    def history_file(self):
        return self._join(HISTORY_FILENAME)

    @property
    def best_model(self):
        return self._join(BEST_MODEL_FILENAME)

    @property
    def curves_file(self):
        return self._join(CURVES_FILENAME)

    @property
    def init_report_file(self):
        return self._join(INIT_REPORT_FILENAME)

    @property
    def backup_dir(self):
        return self._join(CHECKPOINTS_DIRNAME, BACKUP_DIRNAME)

    @property
    def logs_dir(self):
        return self._join(LOGS_DIRNAME)

    @property
    def error_file(self):
        return self._join(ERROR_FILENAME)

    @property
    def saved_model_dir(self):
        return self._join(SAVED_MODEL_DIRNAME)

    @property
    def onnx_dir(self):
        return self._join(ONNX_DIRNAME)

    @property
    def litert_dir(self):
        return self._join(LITERT_DIRNAME)

    @property
    def default_cache_dir(self):
        """Where raw sources evaluated with this run are prepared: `data_cache/` beside the run."""
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), DATA_CACHE_DIRNAME)

    def eval_dir(self, split, data=None):
        """`eval/<split>/` for the run's own data, `eval/external/<data>/<split>/` for other data.

        Args:
            split: One of `constants.SPLITS`.
            data: None for the run's own data, else the other data's path (named by `external_name`).
        """
        if split not in C.SPLITS:
            raise ValueError(f"split must be one of {C.SPLITS}. Received: split={split!r}")
        if data is None:
            return self._join(EVAL_DIRNAME, split)
        return self._join(EVAL_DIRNAME, EXTERNAL_DIRNAME, external_name(data), split)

    def eval_file(self, split, filename, data=None):
        return os.path.join(self.eval_dir(split, data), filename)

    def per_image_file(self, split, data=None):
        return self.eval_file(split, PER_IMAGE_FILENAME, data)

    def summary_file(self, split, data=None, markdown=False):
        return self.eval_file(split, SUMMARY_MD_FILENAME if markdown else SUMMARY_JSON_FILENAME, data)

    def comparison_dir(self, split):
        return os.path.join(self.eval_dir(split), COMPARISON_DIRNAME)

    def thresholds_file(self, data=None):
        """The thresholds chosen on the validation split of the run's own data (or of `data`)."""
        return self.eval_file(THRESHOLD_SPLIT, THRESHOLDS_FILENAME, data)

    def threshold_grid_file(self, data=None):
        return self.eval_file(THRESHOLD_SPLIT, THRESHOLD_GRID_FILENAME, data)

    # --- State -------------------------------------------------------------------------------------------
    def exists(self):
        return os.path.isdir(self.path)

    def is_run(self):
        """True when the directory holds a run configuration."""
        return os.path.isfile(self.config_file)

    def has_model(self):
        return os.path.isfile(self.best_model)

    def status(self):
        """One of `STATUSES`, from the files present."""
        if os.path.isfile(self.per_image_file("test")):
            return STATUS_EVALUATED
        if self.has_model():
            return STATUS_TRAINED
        if self.is_run():
            return STATUS_STARTED
        return STATUS_NEW

    def require_model(self):
        """Raises ModelError unless the directory is a run with a trained model; returns `best_model`."""
        if not self.exists():
            raise ModelError(f"Run directory not found: {self.path}")
        if not self.is_run():
            raise ModelError(f"{self.path} is not a run directory: it has no {CONFIG_FILENAME}")
        if not self.has_model():
            raise ModelError(f"{self.path} has no trained model ({BEST_MODEL_FILENAME}); train it first")
        return self.best_model

    # --- Configuration and metadata --------------------------------------------------------------------------
    def load_config(self):
        """The run's `Config` (`config.yaml`).

        Raises:
            ConfigError: if there is no config.yaml or it is invalid.
        """
        from ptx_keras.config import load_config

        if not self.is_run():
            raise ConfigError(f"{self.path} is not a run directory: it has no {CONFIG_FILENAME}")
        return load_config(self.config_file)

    def save_config(self, cfg):
        from ptx_keras.config import save_config

        save_config(cfg, self.config_file)

    def read_metadata(self):
        """`run.json` as a dict (empty when the run has none yet)."""
        if not os.path.isfile(self.metadata_file):
            return {}
        return _read_json(self.metadata_file, "run metadata")

    def update_metadata(self, **fields):
        """Merges `fields` into `run.json` (written atomically) and returns the result."""
        from ptx_keras import __version__

        meta = self.read_metadata()
        meta.setdefault("created", _now())
        meta.update(fields, package_version=__version__, updated=_now())
        os.makedirs(self.path, exist_ok=True)
        write_json(self.metadata_file, meta)
        return meta

    def prepared_dir(self):
        """The prepared data the run trained on (recorded in run.json; older runs kept it in config.yaml).

        Returns:
            The path, or None if the run never resolved its data.
        """
        path = self.read_metadata().get("prepared_dir")
        if path:
            return path
        if self.is_run():  # runs written before run.json existed
            from ptx_keras.config import load_yaml_mapping

            return ((load_yaml_mapping(self.config_file).get("data") or {}).get("prepared_dir")) or None
        return None

    # --- The model -------------------------------------------------------------------------------------------
    def load_model(self, compile=False):
        """Loads `best.keras` (every ptx_keras class registered first).

        Raises:
            ModelError: if the run or its model is missing, or the file cannot be loaded.
        """
        from ptx_keras.loading import load_model

        return load_model(self.require_model(), compile=compile)

    def model_sha256(self):
        return file_sha256(self.require_model())

    # --- Thresholds ------------------------------------------------------------------------------------------
    def read_thresholds(self, cfg=None, data=None, model_sha256=None):
        """The thresholds in force: a saved validation search if there is one, else the configuration's.

        Args:
            cfg: The run configuration (loaded when None).
            data: None for the run's own thresholds (what it deploys with); the path of other data for a search
                made on that data's validation split (`write_thresholds(..., data=...)`).
            model_sha256: Hash of the current `best.keras`; a search recorded for another model is still used
                (as the export does) but marked stale, with a warning.

        Returns:
            `SavedThresholds`.

        Raises:
            ConfigError: if the thresholds file is unreadable or invalid.
        """
        from ptx_keras.diagnosis import Thresholds

        path = self.thresholds_file(data)
        if not os.path.isfile(path):
            cfg = cfg if cfg is not None else self.load_config()
            return SavedThresholds(cfg.diagnosis.thresholds(), "configuration", self.config_file)
        try:
            saved = _read_json(path, "thresholds file")
            thresholds = Thresholds.from_mapping(saved, path)
        except (PtxError, ValueError) as e:
            raise ConfigError(f"{e}; delete it or choose thresholds again (--search-thresholds)") from None
        recorded = saved.get("model_sha256")
        stale = bool(model_sha256 and recorded and recorded != model_sha256)
        if stale:
            logger.warning(
                "%s was chosen for an earlier %s; using it anyway (as the export does). Search again "
                "(--search-thresholds) to choose thresholds for the current model.",
                path,
                BEST_MODEL_FILENAME,
            )
        search = {k: v for k, v in saved.items() if k not in Thresholds.KEYS and k not in ("source", "file", "stale")}
        return SavedThresholds(thresholds, saved.get("source", "validation search"), path, stale, search)

    def write_thresholds(self, thresholds, search, grid=None, data=None):
        """Saves thresholds chosen on a validation split (the run's own, or of `data`) and the searched grid.

        Args:
            thresholds: The chosen `Thresholds`.
            search: JSON-ready fields describing the search (objective, value, counts, model hash, ...).
            grid: Optional pandas DataFrame of every candidate, written as CSV beside the thresholds.
            data: None for the run's own data (the thresholds the run deploys with), else the other data's path.

        Returns:
            `SavedThresholds` as `read_thresholds` would return it.
        """
        path = self.thresholds_file(data)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if grid is not None:
            grid.to_csv(self.threshold_grid_file(data), index=False)
        record = {**thresholds.to_dict(), "source": "validation search", **search}
        write_json(path, record)
        return SavedThresholds(thresholds, "validation search", path, False, dict(search))


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def latest_run(runs_dir):
    """The run under `runs_dir` whose `best.keras` was written last, or None."""
    if not os.path.isdir(runs_dir):
        return None
    candidates = []
    for name in os.listdir(runs_dir):
        run = RunDir(os.path.join(runs_dir, name))
        if run.has_model():
            candidates.append((os.path.getmtime(run.best_model), run.path))
    return max(candidates)[1] if candidates else None
