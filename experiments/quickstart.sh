#!/usr/bin/env bash
# The README's first command, after installation: train a small model on scikit-learn's digits, sample
# it with the PC sampler and the probability-flow ODE, print its test bits/dim. Results: runs/quickstart.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m score_sde quickstart "$@"
