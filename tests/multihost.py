"""Several processes on this machine joined into one JAX job, as on several hosts: `start` runs the same
``score-sde`` command line in each, ``--multihost`` with a coordinator on a free localhost port, every process
with its own simulated CPU devices; across processes the CPU collectives go through gloo.

    job = start(["train", "--config", ...], processes=2, devices=2)   # 2 hosts x 2 devices
    results = job.wait()                                               # [(returncode, stderr)] per process
    start([...], processes=1, devices=4).wait()                        # the same job in one process

With ``processes=1`` the command runs without ``--multihost``: the 1-process comparison of every test.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# After how long without a heartbeat a process counts as dead and the others stop (jax.distributed's heartbeat
# timeout): a minute, which no process of a test should miss even on a loaded machine (a test of a dead peer
# sets its own, shorter).
HEARTBEAT_TIMEOUT = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def environment(devices: int, cache_dir=None) -> dict:
    """The environment of each process: ``devices`` CPU devices, LLVM's optimisations off as in the suite,
    gloo for cross-process collectives; with ``cache_dir``, JAX's persistent compilation cache there (the
    processes of one test compile the same programs)."""
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0",
        "JAX_PLATFORMS": "cpu",
        "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
        "PYTHONPATH": os.pathsep.join([REPO, *filter(None, [os.environ.get("PYTHONPATH")])]),
        "PYTHONUNBUFFERED": "1",
    }
    # The command line's compilation cache (off without cache_dir: nothing written to the user's cache).
    env["SCORE_SDE_COMPILATION_CACHE"] = "none" if cache_dir is None else str(cache_dir)
    if cache_dir is not None:
        env.update(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


@dataclasses.dataclass
class Job:
    """The processes of one job, process i at index i."""

    processes: list[subprocess.Popen]
    stderr: list  # a temporary file per process (a pipe left unread could fill and block its writer)
    stdout: list
    argv: list[str]

    def wait(self, timeout: float = 600) -> list[tuple[int, str]]:
        """(return code, stderr) of each process, once all have ended; kills them all after ``timeout`` s."""
        results = []
        for p, f in zip(self.processes, self.stderr):
            try:
                p.wait(timeout=timeout)
                note = ""
            except subprocess.TimeoutExpired:
                self.kill()
                p.wait()
                note = f"\n[multihost: killed after {timeout} s]"
            f.seek(0)
            results.append((p.returncode, f.read() + note))
        return results

    def check(self, timeout: float = 600) -> list[str]:
        """The stderr of each process; fails naming the process and its stderr when one exits non-zero."""
        results = self.wait(timeout)
        if any(code != 0 for code, _ in results):
            report = "".join(
                f"\n--- process {i} exited with {code}:\n{err[-3000:]}" for i, (code, err) in enumerate(results)
            )
            raise AssertionError(f"{' '.join(self.argv)}{report}")
        return [err for _, err in results]

    def output(self, process: int) -> str:
        """What process ``process`` printed on its stdout (once it has ended)."""
        self.stdout[process].seek(0)
        return self.stdout[process].read()

    def kill(self, *which: int) -> None:
        """kill -9 of the processes ``which`` (default: all)."""
        for i in which or range(len(self.processes)):
            if self.processes[i].poll() is None:
                self.processes[i].send_signal(signal.SIGKILL)

    def poll(self) -> list[int | None]:
        return [p.poll() for p in self.processes]


PROGRAM = (os.path.join(REPO, "tests", "multihost_main.py"),)  # score-sde with the tests' network and hooks


def command(
    args, *, processes: int, process_id: int, port: int | None, program=PROGRAM, heartbeat_timeout=HEARTBEAT_TIMEOUT
) -> list[str]:
    """The command line of process ``process_id``: ``program`` (a module or script taking the score-sde
    arguments) with the multi-host options when there are several processes."""
    argv = [sys.executable, *program]
    if processes > 1:
        argv += ["--multihost", f"--coordinator-address=localhost:{port}", f"--num-processes={processes}"]
        argv += [f"--process-id={process_id}", f"--heartbeat-timeout={heartbeat_timeout}"]
    return argv + [str(a) for a in args]


def start(
    args,
    *,
    processes: int = 2,
    devices: int = 2,
    cache_dir=None,
    program=PROGRAM,
    env=None,
    heartbeat_timeout: int = HEARTBEAT_TIMEOUT,
) -> Job:
    """Starts ``score-sde ARGS`` (or ``program``) in ``processes`` processes of ``devices`` CPU devices each,
    from the repository root, with ``env`` added to their environment."""
    port = free_port() if processes > 1 else None
    env = {**environment(devices, cache_dir), **(env or {})}
    stderr = [tempfile.TemporaryFile("w+") for _ in range(processes)]
    stdout = [tempfile.TemporaryFile("w+") for _ in range(processes)]
    procs = [
        subprocess.Popen(
            command(
                args,
                processes=processes,
                process_id=i,
                port=port,
                program=program,
                heartbeat_timeout=heartbeat_timeout,
            ),
            cwd=REPO,
            env=env,
            stdout=stdout[i],
            stderr=stderr[i],
            text=True,
        )
        for i in range(processes)
    ]
    job = Job(procs, stderr, stdout, [str(a) for a in args])
    _started.append(job)
    return job


_started: list[Job] = []


def kill_all() -> None:
    """kill -9 of every process `start` started that still runs (after a test that failed half-way)."""
    while _started:
        job = _started.pop()
        job.kill()
        job.wait()


def probe_source():
    """40 images of 2x2 pixels with 2 channels holding their index i: i // 256 and i % 256 (see `probe_index`)."""
    import numpy as np

    from score_sde import data

    index = np.arange(40)
    images = np.stack([index // 256, index % 256], -1).astype(np.uint8)[:, None, None, :].repeat(2, 1).repeat(2, 2)
    return data.ArraySource(images, np.zeros(len(index), np.int32))


def probe_index(images):
    """The indices of `probe_source` images (..., 2, 2, 2) scaled to [0, 1] by the pipeline."""
    import numpy as np

    pixels = np.rint(np.asarray(images)[..., 0, 0, :] * 255).astype(int)
    return pixels[..., 0] * 256 + pixels[..., 1]


def probe_config():
    """The data config of multihost_main's ``data-rows``: global batch 8 of 2x2 images with 2 channels, pixels
    in [0, 1] exactly (no flips, no noise)."""
    import ml_collections

    return ml_collections.ConfigDict(
        dict(
            seed=3,
            training=dict(batch_size=8),
            data=dict(centered=False, random_flip=False, uniform_dequantization=False, image_size=2, num_channels=2),
        )
    )
