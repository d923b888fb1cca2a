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


def command(variables: dict[str, str] | None = None) -> str:
    """The command line that ran this script, quoted for a shell, with the value of each option in ``variables``
    shown as the environment variable it names (``{"--pytorch": "SCORE_SDE_PYTORCH"}``: `--pytorch
    $SCORE_SDE_PYTORCH`), so that a path of the benchmark machine's is not recorded as if it were the reader's."""
    args, variables, i = list(sys.argv), variables or {}, 0
    while i < len(args):
        option, _, value = args[i].partition("=")
        if option in variables and value:
            args[i] = f"{option}=${variables[option]}"
        elif args[i] in variables and i + 1 < len(args):
            args[i + 1] = f"${variables[args[i]]}"
            i += 1
        i += 1
    return "python " + " ".join(a if a.startswith("$") or "=$" in a else shlex.quote(a) for a in args)
