"""Train a model: `python train.py [--config FILE] [--data PATH] [--set key=value ...]` (see README.md)."""

from ptx_keras.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
