"""Atomic writes: a writer that fails half-way leaves the previous file as it was and no temporary file."""

import json
import os

import numpy as np
import pytest

from score_sde import files

from support import full_disk


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = str(tmp_path / "sub" / "result.json")
    files.write_json(path, {"a": 1})  # creates the folder
    assert open(path).read() == '{\n  "a": 1\n}\n'

    with pytest.raises(RuntimeError, match="killed"):
        with files.atomic_open(path, "w") as f:
            f.write('{"a": 2, "trunc')
            f.flush()
            raise RuntimeError("killed half-way")
    assert json.loads(open(path).read()) == {"a": 1}
    assert os.listdir(tmp_path / "sub") == ["result.json"]


def test_npz_and_text_keep_their_names_and_bytes(tmp_path):
    files.save_npz(str(tmp_path / "shard"), x=np.arange(3, dtype=np.uint8))  # numpy would add ".npz"
    with np.load(tmp_path / "shard") as f:
        np.testing.assert_array_equal(f["x"], [0, 1, 2])
    files.write_text(str(tmp_path / "t.csv"), "a,b\r\n1,2\n")
    assert (tmp_path / "t.csv").read_bytes() == b"a,b\r\n1,2\n"
    assert sorted(os.listdir(tmp_path)) == ["shard", "t.csv"]


def test_a_full_disk_names_the_path_and_the_free_space(tmp_path, monkeypatch):
    """ENOSPC in the middle of a write: DiskFull (an OSError) naming the target and its device's free space; the
    previous content stays and no temporary file is left."""
    path = str(tmp_path / "stats.json")
    files.write_json(path, {"n": 1})
    full_disk(monkeypatch, "stats.json")
    with pytest.raises(files.DiskFull, match=rf"no space left writing {path}: No space left on device \(.* MiB free"):
        files.write_json(path, {"n": 2})
    assert json.loads(open(path).read()) == {"n": 1} and os.listdir(tmp_path) == ["stats.json"]
    assert files.disk_full(RuntimeError("another error"), path) is None
