"""The speed benchmarks at CI sizes, so that they keep working (their real numbers live in benchmarks/results/,
not in asserts): bench_vs_pytorch.py's workers, alternation and tables, and bench_gpu.py's every row.

The official PyTorch port cannot be downloaded here: the score_sde side always runs, the PyTorch side only
where $SCORE_SDE_PYTORCH names a checkout of it (see the benchmark's docstring), and is skipped, saying so,
elsewhere."""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PORT = os.environ.get("SCORE_SDE_PYTORCH")


def _rows(text, first_cell):
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith(f"| {first_cell}")
    ]


def test_bench_vs_pytorch_tiny(tmp_path):
    out = tmp_path / "table.md"
    command = [sys.executable, "benchmarks/bench_vs_pytorch.py", "--tiny", "--reps", "2", "--networks", "DDPM++ (VP)"]
    command += ["--out", str(out)] + (["--pytorch", PORT] if PORT else [])
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True)
    text = out.read_text()
    rows = _rows(text, "DDPM++ (VP)")
    cases = ["DDPM++ (VP) forward (eval)", "DDPM++ (VP) training step"]
    assert [r[0] for r in rows] == cases + cases + cases[1:]  # alternating, back to back, memory
    timed, burst, memory = rows[:2], rows[2:4], rows[4]
    for r in timed:
        assert r[1] == "8" and float(r[2]) > 0 and re.fullmatch(r"[\d. /]+ -> [\d. /]+", r[7])  # load before -> after
    for r in burst:
        assert r[1] == "8" and float(r[2]) > 0 and re.fullmatch(r"[\d. /]+", r[6])
    assert float(memory[1]) >= float(memory[3]) > 0.1  # the peak is at least the size before, a framework's worth
    assert int(memory[5].replace(",", "")) >= 0  # page faults of the step
    if not PORT:
        assert all(r[3] == "not run" for r in timed + burst) and memory[2] == memory[6] == "not run"
        pytest.skip("PyTorch side not run: set SCORE_SDE_PYTORCH to a checkout of yang-song/score_sde_pytorch")
    for r in timed + burst:
        # The ratio column is the quotient of the two timings' medians (rounded to 0.1 ms / image in the table).
        assert float(r[3]) > 0 and float(r[4]) == pytest.approx(float(r[2]) / float(r[3]), rel=0.2, abs=0.02)
    assert float(memory[2]) >= float(memory[4]) > 0.1 and int(memory[6].replace(",", "")) >= 0


def test_bench_gpu_tiny(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "benchmarks" / "bench_gpu.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "gpu.md"
    argv = ["--tiny", "--networks", "DDPM++ (VP)", "--dtypes", "float32", "--repeats", "1", "--out", str(out)]
    bench.main(argv)
    text = out.read_text()
    assert text.startswith("# One-device benchmark: cpu (cpu) (tiny CI sizes)")
    train, largest = _rows(text, "training step")[0], _rows(text, "largest batch")[0]
    for r in (train, largest):
        mfu = float(r[4].rstrip("%")) / 100
        assert float(r[2]) > 0 and 0 < mfu < 1  # XLA's FLOPs over the time can't pass the device's peak
    assert largest[1] == "batch 8 (the largest tried), float32"
    pc, fast = _rows(text, "sampling")
    assert "1000 steps" in pc[1] and "2000 NFE" in pc[1] and float(pc[2]) > 0
    # A registered fast sampler within its budget of 10 evaluations, or 10 Euler steps of the ODE: 10 exactly.
    nfe = int(re.search(r"(\d+) NFE", fast[1]).group(1))
    assert (nfe == 10) if "ode:euler" in fast[1] else (0 < nfe <= 10)
    assert float(_rows(text, "end-to-end FID")[0][2]) > 0 and float(_rows(text, "FID Inception")[0][2]) > 0


def test_recorded_commands_name_machine_paths_by_their_variables(monkeypatch):
    """A result file's command shows the port's checkout as $SCORE_SDE_PYTORCH (in both spellings of the option),
    so that it runs as printed on the reader's machine; other arguments stay quoted as given."""
    spec = importlib.util.spec_from_file_location("machine", REPO / "benchmarks" / "machine.py")
    machine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(machine)
    variables = {"--pytorch": "SCORE_SDE_PYTORCH"}
    for given, shown in (
        (["--pytorch", "/home/me/port", "--out", "a b.md"], "--pytorch $SCORE_SDE_PYTORCH --out 'a b.md'"),
        (["--pytorch=/home/me/port", "--quick"], "--pytorch=$SCORE_SDE_PYTORCH --quick"),
    ):
        monkeypatch.setattr(sys, "argv", ["benchmarks/bench_vs_pytorch.py", *given])
        assert machine.command(variables) == f"python benchmarks/bench_vs_pytorch.py {shown}"
