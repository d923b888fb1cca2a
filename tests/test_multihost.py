"""Several hosts on one machine: the same score-sde job in 2 processes of 2 CPU devices each, joined by
jax.distributed over localhost (CPU collectives through gloo), and in 1 process of 4 devices, compared.

Every process runs `score-sde` (tests/multihost_main.py: the command line with a network of a few hundred
parameters registered as "tiny", and test hooks), started by tests/multihost.py. The runs of this module share
one training of each kind (module-scoped fixtures) and JAX's persistent compilation cache.
"""

import csv
import json
import os
import re
import signal
import time

import jax
import numpy as np
import pytest

from score_sde import checkpoints, data
from score_sde.evaluation import stats as stats_lib

from multihost import kill_all, probe_config, probe_index, probe_source, start

pytestmark = pytest.mark.heavy

N_ITERS = 12
TRAIN = [
    "train",
    "--config",
    "configs/small/digits.py",
    "--config.model.name=tiny",
    "--config.model.dropout=0.1",  # every example draws its own dropout mask: the random streams are checked too
    "--config.model.num_scales=16",  # steps of the sampler of the snapshot (and of `sample`)
    "--config.training.batch_size=8",
    f"--config.training.n_iters={N_ITERS}",
    "--config.training.log_freq=1",
    "--config.training.eval_freq=4",
    "--config.training.snapshot_freq_for_preemption=2",
    "--config.training.snapshot_freq=6",  # step 6: both kinds of checkpoint saved at once
    "--config.training.snapshot_sampling=true",
    "--config.optim.warmup=0",  # full steps from the first: the parameters move by ~lr = 2e-3 per step
]


@pytest.fixture(autouse=True)
def no_process_left():
    yield
    kill_all()


def journal(path) -> dict:
    os.makedirs(path, exist_ok=True)
    return {"SCORE_SDE_TEST_JOURNAL": str(path)}


def written(path, process: int) -> set[str]:
    """The files process ``process`` opened for writing (see multihost_main's journal)."""
    try:
        with open(os.path.join(path, f"process-{process}.txt")) as f:
            return {line.strip() for line in f}
    except FileNotFoundError:
        return set()


def metrics(workdir, key="loss") -> dict[int, float]:
    """step -> the last logged ``key`` of that step; asserts that no step was logged twice in one run."""
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            if line.endswith("\n") and key in (record := json.loads(line)):
                out[record["step"]] = record[key]
    return out


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("multihost")


@pytest.fixture(scope="module")
def trained(root):
    """The same training in 1 process of 4 devices (workdir one) and in 2 processes of 2 (workdir two). The
    second fills a compilation cache for the restarts of the same job (jobs running at the same time never share
    one: JAX writes an entry in place, where another process may read it half-written)."""
    cache = root / "jax_cache"
    jobs = [
        start([*TRAIN, "--workdir", root / "one"], processes=1, devices=4, env=journal(root / "j1")),
        start([*TRAIN, "--workdir", root / "two"], processes=2, devices=2, cache_dir=cache, env=journal(root / "j2")),
    ]
    for job in jobs:
        job.check()
    return root


def test_two_processes_train_as_one(trained):
    """Same seed, same global batches: the 2-process run's losses, gradient norms, parameters and EMA equal the
    1-process run's up to float32 round-off. The gradient is the mean of 4 per-device means in both runs, but
    the 4-way all-reduce runs inside XLA in one case and through gloo in the other, which may add in another
    order: ~1 ulp (6e-8 relative) per mean; observed: 2e-7 relative on the losses and gradient norms (rtol
    1e-5 below). 12 Adam steps move a parameter by at most ~lr = 2e-3 each (the update is normalised) and a
    round-off in the gradient changes an update by about lr times its relative size; observed: 3e-8 on
    parameters of size up to 2 (atol 1e-6 below). Any real difference (rows of another process, another
    dropout mask or diffusion time per example, a sum instead of a mean) changes the first loss by percents."""
    one, two = trained / "one", trained / "two"
    for key in ("loss", "grad_norm", "eval_loss"):
        want, got = metrics(one, key), metrics(two, key)
        assert sorted(want) == sorted(got) and want, key
        np.testing.assert_allclose([got[s] for s in sorted(got)], [want[s] for s in sorted(want)], rtol=1e-5)
    p1, e1, _ = checkpoints.load_model(str(one))
    p2, e2, _ = checkpoints.load_model(str(two))
    for a, b in zip(jax.tree.leaves((p1, e1)), jax.tree.leaves((p2, e2))):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    # The parameters moved far more than that: the comparison is not between untouched initialisations.
    start_, _, _ = checkpoints.load_model(str(two / checkpoints.PREEMPTION / str(N_ITERS - 2)))
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(start_), jax.tree.leaves(p2))) > 1e-3


def test_only_the_first_process_writes_logs_and_results(trained):
    """Process 1 of the 2-process run wrote no log, TensorBoard, metrics or sample file, only its part of the
    checkpoints (orbax's per-process array metadata); process 0 wrote them, each step logged once."""
    two = str(trained / "two")
    mine = {os.path.relpath(p, two) for p in written(trained / "j2", 0) if p.startswith(two)}
    assert {"log.txt", "metrics.jsonl", f"samples/step_{N_ITERS}.png"} <= mine
    assert any(p.startswith("tensorboard/") for p in mine)
    other = {os.path.relpath(p, two) for p in written(trained / "j2", 1) if p.startswith(two)}
    assert other and all(p.startswith(("checkpoints/", "checkpoints-meta/")) for p in other), sorted(other)
    with open(os.path.join(two, "metrics.jsonl")) as f:
        steps = [json.loads(line)["step"] for line in f if '"loss"' in line]
    assert steps == list(range(1, N_ITERS + 1))


SAMPLE = ["sample", "--num-samples", "20", "--batch-size", "8"]  # shards of 8, 8 and 4 samples


@pytest.fixture(scope="module")
def sampled(trained):
    """Samples of the 2-process run's model: by 2 processes of 2 devices, by 1 process of 4 (the same 4-way
    split of each batch), and by 1 process of 1 device; and of the 1-process run's model on 1 device."""
    root = trained
    runs = {
        "s22": dict(model="two", processes=2, devices=2),
        "s14": dict(model="two", processes=1, devices=4),
        "s11": dict(model="two", processes=1, devices=1),
        "s11_one": dict(model="one", processes=1, devices=1),
    }
    jobs = [
        start(
            [*SAMPLE, "--model", root / r["model"], "--out", root / name],
            processes=r["processes"],
            devices=r["devices"],
            env=journal(root / f"j_{name}"),
        )
        for name, r in runs.items()
    ]
    for job in jobs:
        job.check()
    return root


def shards(folder) -> dict[str, np.ndarray]:
    return {n: np.load(os.path.join(folder, n))["samples"] for n in sorted(os.listdir(folder)) if n.endswith(".npz")}


def test_samples_of_two_processes_equal_one_process(sampled):
    """2 processes x 2 devices write the same shards, bit for bit, as 1 process x 4 devices (each device draws
    the same rows with the same code; no value crosses a device), and every file once: process 0 writes each
    shard, the record and the grid, process 1 none."""
    two, one = shards(sampled / "s22"), shards(sampled / "s14")
    assert list(two) == ["samples_00000.npz", "samples_00001.npz", "samples_00002.npz"]
    assert [len(v) for v in two.values()] == [8, 8, 4]
    for name in one:
        np.testing.assert_array_equal(two[name], one[name], err_msg=name)
    assert len({v.tobytes() for v in two.values()}) == 3  # each shard has its own randomness
    out = str(sampled / "s22")
    mine = {p for p in written(sampled / "j_s22", 0) if p.startswith(out)}
    assert {os.path.join(out, n) for n in [*two, "samples.json"]} | {out + ".png"} <= mine
    assert not {p for p in written(sampled / "j_s22", 1) if p.startswith(out)}


def test_checkpoints_of_any_topology_sample_on_one_device(sampled):
    """The checkpoints written by 2 processes x 2 devices and by 1 process x 4 devices load in a process with
    1 device (orbax restores an array with the sharding it was saved with unless told otherwise: "Topology
    mismatch"), and the 2-process model's samples there equal those on 4 devices up to float32 round-off of
    the other split (1 sample of 8 per device instead of 2): at most one uint8 level off, in rare pixels."""
    for name in ("s11", "s11_one"):
        assert [len(v) for v in shards(sampled / name).values()] == [8, 8, 4], name
    one_device, four = shards(sampled / "s11"), shards(sampled / "s14")
    for name in four:
        diff = np.abs(one_device[name].astype(int) - four[name].astype(int))
        assert diff.max() <= 1 and np.mean(diff > 0) < 0.01, name


def test_fid_statistics_of_two_processes_equal_one_process(sampled):
    """`fid-stats` and `fid` of the 20 samples in chunks of 4 (5 chunks: the processes take turns, the last round
    has one) give, in 2 processes of 2 devices, the statistics file and the FID of 1 process of 2 devices bit
    for bit (each chunk is computed on 2 devices either way, and the statistics are merged in the same order);
    process 0 alone writes the file. A random projection of the pixels stands in for the Inception network."""
    root = sampled
    fake = {"SCORE_SDE_TEST_FEATURES": "fake"}
    results = {}
    for processes in (1, 2):
        out = root / f"stats{processes}.npz"
        env = {**fake, **journal(root / f"j_stats{processes}")}
        args = ["fid-stats", out, "--images", root / "s22", "--fid-batch-size", "4"]
        start(args, processes=processes, devices=2, env=env).check()
        job = start(
            ["fid", root / "s14", out, "--fid-batch-size", "4", "--kid-subsets", "2", "--kid-subset-size", "8"],
            processes=processes,
            devices=2,
            env=fake,
        )
        job.check()
        results[processes] = (stats_lib.load_stats(str(out)), job.output(0).strip().splitlines()[-1])
    (one, one_record), one_line = results[1]
    (two, two_record), two_line = results[2]
    assert one.n == two.n == 20 and two_record["num_images"] == 20
    for field in ("mu", "sigma", "features"):
        np.testing.assert_array_equal(getattr(two, field), getattr(one, field), err_msg=field)
    assert one_line.startswith("FID ") and two_line == one_line
    out = str(root / "stats2.npz")
    assert {out, out + ".json"} <= written(root / "j_stats2", 0)
    assert not {p for p in written(root / "j_stats2", 1) if p.startswith(out)}


def test_eval_likelihood_and_compare_of_two_processes_equal_one_process(trained):
    """`eval`, `likelihood` and `compare` of the 2-process model, in 2 processes of 2 devices and in 1 of 4: the
    same test loss, bits/dim and comparison table (FID, KID, NFE), to float32 round-off of the other reductions;
    process 0 alone writes the result files. A random projection of the pixels stands in for the Inception."""
    root = trained
    model, fake = root / "two", {"SCORE_SDE_TEST_FEATURES": "fake"}
    compare = ["compare", "--model", model, "--samplers", "ode:euler", "ddim", "--steps", "2", "--num-samples", "8"]
    compare += ["--batch-size", "8", "--fid-batch-size", "8"]
    results = {}
    for processes, devices in ((2, 2), (1, 4)):
        out = root / f"eval{processes}"
        env = {**fake, **journal(root / f"j_eval{processes}")}
        jobs = [
            ["eval", "--model", model, "--out", out],
            [
                "likelihood",
                "--model",
                model,
                "--out",
                out,
                "--split",
                "test",
                "--num-batches",
                "2",
                "--batch-size",
                "8",
            ],
            [*compare, "--out", out / "compare"],
        ]
        for args in jobs:
            start(args, processes=processes, devices=devices, env=env).check()
        loss = json.loads((out / f"loss_{N_ITERS}.json").read_text())
        bpd = json.loads((out / f"bpd_test_{N_ITERS}.json").read_text())
        with open(out / "compare" / "results.csv") as f:
            table = list(csv.DictReader(f))
        results[processes] = loss, bpd, table
    (loss2, bpd2, table2), (loss1, bpd1, table1) = results[2], results[1]
    assert loss2["count"] == loss1["count"] and bpd2["count"] == bpd1["count"] == 16
    np.testing.assert_allclose(loss2["loss"], loss1["loss"], rtol=1e-5)
    np.testing.assert_allclose(bpd2["bpd"], bpd1["bpd"], rtol=1e-4)
    assert [(r["sampler"], r["nfe"]) for r in table2] == [(r["sampler"], r["nfe"]) for r in table1] and table1
    for a, b in zip(table2, table1):
        np.testing.assert_allclose([float(a["fid"]), float(a["kid"])], [float(b["fid"]), float(b["kid"])], rtol=1e-3)
    out = str(root / "eval2")
    assert not {p for p in written(root / "j_eval2", 1) if p.startswith(out)}
    assert {os.path.join(out, "compare", "results.csv"), os.path.join(out, f"loss_{N_ITERS}.json")} <= written(
        root / "j_eval2", 0
    )


def test_every_row_of_every_batch_is_read_once(root):
    """The data pipeline in 2 processes: process p reads rows [4p, 4p + 4) of each global batch of 8, and the
    global batch assembled from both (parallel.put_batch, then gathered) is the one a single process reads,
    row for row, for 3 training steps; in a pass over the 40 test images each is read by one process, once."""
    start(["data-rows", root / "rows"], processes=2, devices=2).check()
    got = [np.load(root / "rows" / f"rows-{p}.npz") for p in range(2)]
    single = data.train_dataset(probe_source(), probe_config(), process_index=0, process_count=1, num_devices=1)
    want = np.stack([probe_index(single[s]["image"]) for s in range(3)])
    assert len(np.unique(want)) > 8  # the batches of different steps hold different examples
    for p in range(2):
        np.testing.assert_array_equal(got[p]["local"], want[:, 4 * p : 4 * p + 4])
        np.testing.assert_array_equal(got[p]["whole"], want)
        whole = got[p]["test_whole"].ravel()
        assert sorted(whole[whole >= 0]) == list(range(40))
    local = np.concatenate([g["test_local"].ravel() for g in got])
    assert sorted(local[local >= 0]) == list(range(40))


def wait_for_step(workdir, step: int, job) -> int:
    """Waits until ``workdir``'s metrics show ``step`` (while every process of ``job`` runs); returns the last
    step logged."""
    while (logged := max(metrics(workdir) if os.path.exists(workdir / "metrics.jsonl") else {}, default=0)) < step:
        assert None in job.poll() and all(code is None for code in job.poll()), job.wait()
        time.sleep(0.05)
    return logged


def test_kill_9_of_one_then_of_both_resumes_to_the_same_result(trained):
    """A 2-process run (each step waiting 0.3 s for its batch, to be killed in the middle): kill -9 of process 1
    after step 3 stops process 0 by itself, non-zero, within the heartbeat timeout, naming process 1 (no hang);
    restarted, then kill -9 of both after step 8; restarted with the newest checkpoint unreadable by process 1
    (injected), both processes skip it for the previous one. The run ends with the losses, parameters and
    EMA of the uninterrupted 2-process run, bit for bit (same devices, same compiled code)."""
    root = trained
    work = root / "killed"
    args, slow = [*TRAIN, "--workdir", work], {"SCORE_SDE_TEST_STEP_SECONDS": "0.3"}
    heartbeat = 10  # seconds
    job = start(args, processes=2, devices=2, cache_dir=root / "jax_cache", env=slow, heartbeat_timeout=heartbeat)
    wait_for_step(work, 3, job)
    job.kill(1)
    killed = time.monotonic()
    (code, err), _ = job.wait(timeout=120)
    assert code != 0 and time.monotonic() - killed < heartbeat + 30, err[-2000:]
    # jax.distributed's coordination service names the missing process.
    assert re.search(r"tasks are unhealthy \(stopped sending heartbeats\):\s+1\s", err), err[-2000:]

    job = start(args, processes=2, devices=2, cache_dir=root / "jax_cache", env=slow)
    killed_at = wait_for_step(work, 8, job)
    job.kill()
    job.wait()
    assert killed_at < N_ITERS, "the run ended before the kill"
    steps = [step for step, _ in checkpoints.TrainCheckpoints(str(work)).steps()]  # a step may be of both kinds
    newest, previous = steps[0], max(step for step in steps if step < steps[0])

    errs = start(
        args, processes=2, devices=2, cache_dir=root / "jax_cache", env={"SCORE_SDE_TEST_FAIL": f"restore:{newest}"}
    ).check()
    assert f"skipping checkpoint {work}/" in errs[0] and "another process cannot read it" in errs[0]
    for err in errs:
        assert f"resuming from step {previous} " in err
    for key in ("loss", "grad_norm", "eval_loss"):
        assert metrics(work, key) == metrics(root / "two", key), key
    want = checkpoints.load_model(str(root / "two"))[:2]
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(checkpoints.load_model(str(work))[:2])):
        np.testing.assert_array_equal(b, a)


def test_sigterm_to_one_process_stops_both_at_a_saved_step(trained):
    """SIGTERM (a preemption notice) to process 1 of 2 after step 3 (each step waiting 0.3 s for its batch): both
    processes stop at the same step, after saving its checkpoint completely, and exit 0 with the message; started
    again they resume from it and end with the uninterrupted 2-process run's losses, parameters and EMA, bit for
    bit."""
    root = trained
    work = root / "sigterm"
    args = [*TRAIN, "--workdir", work]
    job = start(args, processes=2, devices=2, cache_dir=root / "jax_cache", env={"SCORE_SDE_TEST_STEP_SECONDS": "0.3"})
    wait_for_step(work, 3, job)
    job.processes[1].send_signal(signal.SIGTERM)
    results = job.wait(timeout=300)
    stopped = [
        re.search(r"preempted \(SIGTERM\) at step (\d+) of 12: its checkpoint is saved", err) for _, err in results
    ]
    assert all(code == 0 for code, _ in results) and all(stopped), [err[-2000:] for _, err in results]
    step = int(stopped[0].group(1))
    assert int(stopped[1].group(1)) == step < N_ITERS
    assert step in [s for s, _ in checkpoints.TrainCheckpoints(str(work)).steps()]
    for err in start(args, processes=2, devices=2, cache_dir=root / "jax_cache").check():
        assert f"resuming from step {step} " in err
    for key in ("loss", "grad_norm"):
        assert metrics(work, key) == metrics(root / "two", key), key
    want = checkpoints.load_model(str(root / "two"))[:2]
    for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(checkpoints.load_model(str(work))[:2])):
        np.testing.assert_array_equal(b, a)


def test_a_failing_process_stops_all_with_its_error(root):
    """Process 1 cannot read its batch of step 3 (an injected OSError): both processes exit with status 1 and
    its message, process 0 naming process 1, although process 0 was waiting for process 1 in a collective. The
    two exits lie within the failure mechanism's own deadline (parallel._wait_for_peers: 30 s; the heartbeat
    timeout is 60) of each other: measured between the exits, not from the start, which on a loaded machine takes
    as long as compiling does (the job's limit is the harness's 600 s)."""
    job = start([*TRAIN, "--workdir", root / "failing"], processes=2, devices=2, env={"SCORE_SDE_TEST_FAIL": "data:3"})
    ended = [None, None]
    while None in ended:
        for i, code in enumerate(job.poll()):
            if code is not None and ended[i] is None:
                ended[i] = time.monotonic()
        time.sleep(0.05)
    (code0, err0), (code1, err1) = job.wait()
    assert code0 == code1 == 1, (err0[-2000:], err1[-2000:])
    assert "score-sde train: error: OSError: injected read error in the batch of step 3" in err1
    assert "score-sde train: error in process 1: OSError: injected read error in the batch of step 3" in err0
    assert "heartbeat" not in err0 and abs(ended[0] - ended[1]) < 30, ended
