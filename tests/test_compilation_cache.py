"""The command line's persistent compilation cache: a second process loads what the first compiled."""

import os
import subprocess
import sys

from score_sde import cli

# Compiles one small function with the command line's cache in argv[1]; prints how many compilations were
# loaded from the cache and the result.
SCRIPT = """
import sys
import jax, jax.numpy as jnp
from score_sde import cli
hits = []
jax.monitoring.register_event_listener(lambda name, **kw: hits.append(name))
cli.use_compilation_cache(sys.argv[1])
y = jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.arange(12.0).reshape(3, 4))
print(hits.count("/jax/compilation_cache/cache_hits"), float(y.sum()))
"""


def _run(directory):
    # Everything compiled goes to the cache (JAX's default skips compilations under 1 s).
    env = dict(os.environ, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", XLA_FLAGS="", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", SCRIPT, directory], env=env, capture_output=True, text=True, check=True)
    hits, value = out.stdout.split()
    return int(hits), float(value)


def test_second_process_loads_the_compiled_function(tmp_path):
    cache = str(tmp_path / "cache")
    first_hits, first = _run(cache)
    assert first_hits == 0 and os.listdir(cache)  # compiled, and written there
    second_hits, second = _run(cache)
    assert second_hits >= 1 and second == first
    assert cli.use_compilation_cache("none") is None  # switched off: the configuration is left alone


def test_cache_folder_defaults_and_option(monkeypatch, tmp_path):
    monkeypatch.setenv("SCORE_SDE_COMPILATION_CACHE", str(tmp_path / "c"))
    assert cli.default_compilation_cache() == str(tmp_path / "c")
    monkeypatch.delenv("SCORE_SDE_COMPILATION_CACHE")
    assert cli.default_compilation_cache() == os.path.expanduser("~/.cache/score_sde/jax")
    args = cli.build_parser().parse_args(["--compilation-cache", "none", "eval", "--model", "m"])
    assert args.compilation_cache == "none"
