"""Files written atomically: after a crash or a kill, a path holds its previous content (or nothing) or the
complete new one, never a part.

Every writer here writes a temporary file beside the target, ``TARGET.tmp-<pid>-<random>`` (the same folder,
so the same file system), flushes it to the disk (fsync), renames it over the target (`os.replace`, atomic)
and flushes the folder, so that the rename itself survives a power cut. A kill can leave a temporary
file behind: its name never ends like a result's, so readers that look for ``*.npz``, ``*.json``, ...
pass it over. Parent folders are created as needed. A write that finds the disk full raises `DiskFull`, naming
the path and the space left, and leaves the previous content in place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from typing import IO, Any

import numpy as np

# The errors of a write that found no room: a full device, a quota reached.
_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(OSError):
    """A write failed for want of space; the message names the path and the space left on its device."""


def disk_full(error: BaseException, path: str, what: str = "writing") -> DiskFull | None:
    """A DiskFull naming the file (the error's, else ``path``) and its device's free space when ``error`` (or an
    error it was raised from) is one of a full disk or quota, else None. ``what``: what was being written."""
    cause = error
    while cause is not None and not (isinstance(cause, OSError) and cause.errno in _FULL):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    where = os.path.abspath(cause.filename if isinstance(cause.filename, str) else path)
    probe = where
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    return DiskFull(
        cause.errno,
        f"no space left {what} {where}: {os.strerror(cause.errno)} ({free / 2**20:.1f} MiB free on its device); "
        "what was written before is intact, free some space and run the same command again",
    )


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[IO]:
    """``with atomic_open(path) as f: ...`` writes ``f`` and, when the block completes, puts it at ``path``
    in one step; when the block raises, ``path`` is untouched and the temporary file is removed.
    ``mode``: "wb" (bytes) or "w" (text, UTF-8)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode must be 'wb' or 'w', got {mode!r}")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(tmp, mode.replace("w", "x"), encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        full = disk_full(e, path)
        if full is not None:
            raise full from e
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    """Flushes a folder's entries (the rename) to the disk, where the system allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def write_text(path: str, text: str) -> None:
    """``text`` as UTF-8, line ends as given (no translation)."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str, value: Any) -> None:
    """``value`` as JSON, indented by 2, with a final newline."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def save_npz(path: str, **arrays) -> None:
    """`numpy.savez` of ``arrays`` at ``path`` (the name is kept as given: numpy adds no ".npz")."""
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def claim_folder(folder: str, record: str, settings: dict, *, write: bool = True, **counts) -> None:
    """Makes ``folder`` the output of one resumable job: the first run records ``settings`` (with ``counts``,
    e.g. how many samples, which a restart may change) in ``folder/record``; a later run with other settings
    is refused (ValueError naming the record), so results of two jobs never mix; the temporary files of a
    killed run's shards are removed. ``write``: false on all but one process of a multi-process job."""
    path = os.path.join(folder, record)
    if os.path.exists(path):
        with open(path) as f:
            before = json.load(f)
        if {k: v for k, v in before.items() if k not in counts} != settings:
            raise ValueError(f"{folder} holds results of other settings ({path}); use another --out")
    if write:
        os.makedirs(folder, exist_ok=True)
        write_json(path, {**settings, **counts})
        for name in os.listdir(folder):
            if ".npz.tmp" in name:
                os.remove(os.path.join(folder, name))
