"""Exceptions users can cause. The CLIs print them as one line and exit non-zero."""


class PtxError(Exception):
    """Base class for errors caused by user input (files, configuration, shapes)."""


class ConfigError(PtxError, ValueError):
    """A configuration file, key or value is invalid."""


class DataError(PtxError, ValueError):
    """A data source, sample or prepared data set is invalid."""


class ModelError(PtxError, ValueError):
    """A model name, run directory or model input is invalid."""
