"""XLA:CPU's temporaries kept in the process between calls: a training step's page faults, in fresh processes."""

import json
import os
import platform
import subprocess
import sys

import jax
import pytest

from score_sde import cli, host_memory

from support import REPO

# Eight training steps of the digits network at 16 x 16, batch 128: 200 MiB of temporaries a step, more than glibc's
# per-thread arenas hold (64 MiB). Prints whether the setting took effect, each step's minor page faults, the losses.
SCRIPT = """
import json, resource, sys
from score_sde import host_memory
took = host_memory.keep_host_memory() if sys.argv[1] == "keep" else False
import jax, numpy as np
from score_sde import models, parallel, train, wiring
from score_sde.config import load_config
config = load_config("configs/small/digits.py", ["training.batch_size=128", "data.image_size=16"])
model, optimizer = models.get_model(config), train.get_optimizer(config)
mesh = parallel.data_mesh(jax.local_devices()[:1])
state = train.init_state(config, model, optimizer, parallel.replicated(mesh))
step = train.make_train_fn(wiring.make_loss_fn(config, model, train=True), optimizer, ema_rate=0.999, mesh=mesh,
                           key=jax.random.key(0))
x = np.random.default_rng(0).uniform(size=(1, 128, 16, 16, 1)).astype(np.float32)
batches = parallel.put_batch(x, mesh, 128, batch_axis=1)
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    state, (losses, _) = step(state, batches)
    losses.block_until_ready()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"took": took, "faults": faults, "losses": np.asarray(losses).tolist()}))
"""


def _run(mode):
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator settings")
def test_a_training_step_reuses_the_temporaries_of_the_last():
    default, kept = _run("default"), _run("keep")
    warm = slice(3, None)  # after compilation and the first steps' own allocations
    assert min(default["faults"][warm]) > 40_000  # the temporaries are touched afresh on every step
    assert kept["took"] and max(kept["faults"][warm]) < min(default["faults"][warm]) / 10
    assert kept["losses"] == default["losses"]  # bit for bit: only where the memory comes from changed


def test_no_change_once_the_backends_have_started():
    assert not host_memory.keep_host_memory()  # the test process has computed already (conftest)
    assert jax.config.read("jax_cpu_enable_async_dispatch")


def test_the_command_line_keeps_host_memory(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(host_memory, "keep_host_memory", lambda: calls.append(1))
    assert cli.main(["train", "--config", str(tmp_path / "missing.py"), "--workdir", str(tmp_path / "w")]) == 1
    assert calls == [1]
