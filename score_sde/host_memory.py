"""XLA:CPU's temporary buffers kept in the process from one call to the next.

XLA:CPU allocates one call's temporaries as a single block (1.33 GB for a DDPM++ training step at batch 8) and
frees it when the call ends. glibc serves a block that large with a fresh mmap and gives it back with munmap, so
every call first-touches all of it again: 326 k page faults, 0.6 s of kernel time in a 2.5 s step, and more on
a virtual machine that hands freed pages back to its host (free page reporting), where a step after an idle
pause took 3.1-3.5 s instead of 2.1-2.5 (benchmarks/results/speed_cpu.md, sections 6-7).

`keep_host_memory` makes glibc keep freed memory for reuse instead. Two settings are needed together:
- glibc's mmap off and its heap never trimmed (mallopt), so large blocks come from the heap and stay there;
- JAX's asynchronous dispatch on the CPU off, so a single-device call runs on the calling (main) thread. Other
  threads allocate from glibc's per-thread arenas, which cannot hold a block over 64 MiB and fall back to mmap
  whatever the settings. Calls over several devices, and a call made while one of its inputs (or the call
  before) is still being computed, still run on XLA's threads, their temporaries as before. A call now returns
  only once its results are ready, which costs the training loop nothing: it waits for each call's losses anyway.
Results do not change; the process's resident size stays at its peak, which a training or sampling job reaches
on every call anyway.
"""

from __future__ import annotations

import ctypes
import logging
import platform

log = logging.getLogger(__name__)

# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_host_memory() -> bool:
    """Keeps the memory of XLA:CPU's temporaries in the process between calls (see the module docstring).
    Must run before JAX starts its backends (the dispatch setting is read then): afterwards, e.g. in a test
    process or a notebook that has already computed, it changes nothing. Returns whether it took effect."""
    import jax
    from jax._src import xla_bridge

    if platform.libc_ver()[0] != "glibc":  # mallopt's parameters are glibc's
        return False
    if xla_bridge.backends_are_initialized():
        log.debug("JAX's backends are already started: the host memory settings are left as they are")
        return False
    libc = ctypes.CDLL(None)
    # -1 is read as size_t: the heap's top is never given back (trimmed) to the kernel.
    if not (libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, -1)):
        return False
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    return True
