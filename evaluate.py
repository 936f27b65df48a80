"""Evaluate a run: `python evaluate.py RUN_DIR [--data PATH] [--split test]` (see README.md)."""

from ptx_keras.cli.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
