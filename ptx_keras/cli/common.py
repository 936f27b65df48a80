"""What every CLI shares: quiet TensorFlow start-up and one-line errors."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_cli(fn, *args, **kwargs):
    """Calls `fn`; user-caused errors print as one line `error: ...` on stderr and give exit status 2.

    Returns:
        The exit status: `fn`'s integer result (0 when it returns None), 2 on a user error, 130 on Ctrl-C.
    """
    from ptx_keras.errors import PtxError

    try:
        rc = fn(*args, **kwargs)
    except (PtxError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0 if rc is None else int(rc)
