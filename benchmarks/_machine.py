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
    return {
        "cpu": cpu,
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        **versions,
    }


def cpu_flags():
    """The vector extensions that change every absolute figure by 2x or more: AVX2, AVX-512 (and its parts)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    return sorted(flag for flag in flags if flag == "avx2" or flag.startswith("avx512") or flag == "amx_tile")
