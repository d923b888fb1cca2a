"""What a benchmark ran on and how it was started, for the header of its table.

Every script in benchmarks/ imports this module (``python benchmarks/bench_x.py`` puts benchmarks/ on the
import path) and prints `describe()` and `command()` above its results.
"""

from __future__ import annotations

import os
import platform
import shlex
import sys

import jax


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what the platform module knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: other processes on the same cores slow timings down."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def describe() -> str:
    """One line: CPU model and cores (usable by this process / all), JAX devices and backend, jax version."""
    devices = jax.devices()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu_model()} ({platform.machine()}), {usable} usable of {os.cpu_count()} cores; "
        f"devices: {len(devices)} x {devices[0].device_kind} ({jax.default_backend()}); jax {jax.__version__}; "
        f"python {platform.python_version()}"
    )


def command() -> str:
    """The command line that ran this script, quoted for a shell."""
    return f"python {shlex.join(sys.argv)}"
