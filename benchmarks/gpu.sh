#!/usr/bin/env bash
# One command on a machine with one GPU (under 10 minutes): training images/s and model FLOPs utilisation,
# the largest batch, sampling and FID throughput, written to benchmarks/results/gpu_<device>.md.
#   bash benchmarks/gpu.sh            (after: pip install -U "jax[cuda12]"; score-sde convert-inception ... once)
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
device=$("$python" -c "import jax; print(jax.devices()[0].device_kind.replace(' ', '_'))")
PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} "$python" benchmarks/bench_gpu.py --out "benchmarks/results/gpu_${device}.md" "$@"
