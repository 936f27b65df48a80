"""What every CLI shares: quiet TensorFlow start-up, the package's log messages on stderr, one-line errors."""

import logging
import os
import sys

__all__ = ["configure_logging", "run_cli"]


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from ptx_keras.runtime import configure_process  # noqa: E402

# Before anything starts TensorFlow: CPU allocator and oneDNN (ptx_keras.runtime; `import ptx_keras` has already
# applied them, this keeps every CLI's start explicit). Serving CLIs choose again once they know their batch size.
configure_process()


class _Formatter(logging.Formatter):
    """Information as plain lines; warnings and errors prefixed with their level (`warning: ...`)."""

    def format(self, record):
        message = super().format(record)
        return message if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {message}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted (not the stream of the first call), so that
    a CLI called several times in one process (tests, notebooks) never writes to a closed stream."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # logging.StreamHandler.__init__ assigns it; the property always reads sys.stderr
        pass


def configure_logging(level=logging.INFO):
    """Shows the package's log records (`ptx_keras.*`) on stderr, once per process."""
    logger = logging.getLogger("ptx_keras")
    logger.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(_Formatter("%(message)s"))
        logger.addHandler(handler)


# Raised with a message by the package itself, or about a path the user named.
_USER_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _one_line(error):
    """An error's message; an OSError about a path as `reason: path`, not Python's `[Errno N] reason: 'path'`."""
    from ptx_keras.errors import PtxError

    if isinstance(error, OSError) and not isinstance(error, PtxError) and error.strerror and error.filename:
        where = os.fsdecode(error.filename)
        if error.filename2:
            where += f" -> {os.fsdecode(error.filename2)}"
        return f"{error.strerror}: {where}"
    return str(error)


def run_cli(fn, *args, **kwargs):
    """Configures logging and calls `fn`; user-caused errors print as one line `error: ...` on stderr and give
    exit status 2.

    Returns:
        The exit status: `fn`'s integer result (0 when it returns None), 2 on a user error, 130 on Ctrl-C.
    """
    from ptx_keras.errors import PtxError

    configure_logging()
    try:
        rc = fn(*args, **kwargs)
    except (PtxError, OSError) as e:
        if not isinstance(e, (PtxError, *_USER_OS_ERRORS)) and e.filename is None:
            raise  # not about a path the user gave: a bug or a system failure, keep its traceback
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if rc is None else int(rc)
