"""The machine description printed with every benchmark measurement."""

import os
import platform


def machine(**versions):
    """Returns `{"cpu", "cores", "python", **versions}`; pass library versions as keywords (numpy=...)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), **versions}
