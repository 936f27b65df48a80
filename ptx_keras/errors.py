"""Exceptions users can cause. The CLIs print them as one line and exit non-zero."""


class PtxError(Exception):
    """Base class for errors caused by user input (files, configuration, shapes)."""


class ConfigError(PtxError, ValueError):
    """A configuration file, key or value is invalid."""


class DataError(PtxError, ValueError):
    """A data source, sample or prepared data set is invalid."""


class ModelError(PtxError, ValueError):
    """A model name, run directory or model input is invalid."""


class BadSampleError(DataError):
    """One sample (an image, a mask, a manifest row) is unusable; preparation can skip it instead (`skip_bad`).

    Args:
        problem: What is wrong, naming the file, line or ImageId.
        hint: How to skip such samples in the entry point the user ran (`ptx-prepare --skip-bad`,
            `--set data.skip_bad=true`), appended to the message; None for none.
    """

    def __init__(self, problem, hint=None):
        self.problem, self.hint = str(problem), hint
        super().__init__(self.problem if not hint else f"{self.problem}. {hint}")

    def with_hint(self, hint):
        """The same problem with another hint (each entry point names its own option)."""
        return type(self)(self.problem, hint)
