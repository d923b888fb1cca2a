"""Writes reference.npz: end points of the DPM-Solver and UniPC authors' own PyTorch code on the VP SDE of
score_sde with the exact score of analytic.example_mixture(), for tests/test_core_dpm_solver.py.

    python tests/data/solvers/make_reference.py DPM_SOLVER_DIR UNIPC_DIR

DPM_SOLVER_DIR holds dpm_solver_pytorch.py of github.com/LuChengTHU/dpm-solver (commit 52bc3fb), UNIPC_DIR
uni_pc.py of github.com/wl-zhao/UniPC (commit cf9de85); neither is on PyPI, so they are read from a scratch copy
and not part of this repository. Both run in float64 (torch's default dtype set to it; in float32 their
s(t) = sqrt(1 - exp(2 log m)) alone loses 3e-4 relative at t = 1e-3, which would hide formula differences), get the
same model (our noise prediction -s(t) score(x, t), in float64) and the grids stored beside their outputs (their
own grid functions are replaced by ours, so that only the solvers differ). Run from the repository root with the
project's Python (torch from the test extra).
"""

import contextlib
import io
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import torch

from score_sde import analytic
from score_sde.sampling.dpm_solver import dpm_solver_fast_orders
from score_sde.sampling.grids import time_grid
from score_sde.score import noise_prediction
from score_sde.sde import VPSDE

jax.config.update("jax_enable_x64", True)
torch.set_default_dtype(torch.float64)
SDE, EPS = VPSDE(), 1e-3
MIXTURE = analytic.example_mixture()
OUT = pathlib.Path(__file__).with_name("reference.npz")


def model(x, t):
    """The noise prediction of the exact mixture score, evaluated by score_sde, on torch tensors."""
    flat = jnp.asarray(x.numpy().reshape(x.shape[0], -1))
    eps = noise_prediction(analytic.score_fn(MIXTURE, SDE), SDE, flat, jnp.asarray(t.numpy()))
    return torch.from_numpy(np.array(eps).reshape(x.shape))


def with_grid(solver, outer):
    """Replaces the solver's grid of len(outer) - 1 steps from T to EPS by `outer` (its inner grids stay)."""
    original = solver.get_time_steps

    def get_time_steps(skip_type, t_T, t_0, N, device):
        if N == len(outer) - 1 and np.isclose(t_T, SDE.T) and np.isclose(t_0, EPS):
            return torch.tensor(outer)
        return original(skip_type, t_T, t_0, N, device)

    solver.get_time_steps = get_time_steps
    return solver


def singlestep_grid(outer, orders):
    """The NFE-resolution grid of score_sde's dpm_solver: `outer` at the cumulative orders, the stage points at
    equal fractions of each step's lambda-interval in between."""
    lam = np.asarray(SDE.log_snr(jnp.asarray(outer)))
    times = [outer[0]]
    for k, order in enumerate(orders):
        inner = lam[k] + np.arange(1, order) / order * (lam[k + 1] - lam[k])
        times += list(np.asarray(SDE.t_of_log_snr(jnp.asarray(inner)))) + [outer[k + 1]]
    return np.array(times)


def main(dpm_dir, unipc_dir):
    sys.path[:0] = [dpm_dir, unipc_dir]
    import dpm_solver_pytorch as dpm
    import uni_pc

    x_T = np.asarray(SDE.prior_sampling(jax.random.key(7), (16, 2)), np.float64)
    out = {"x_T": x_T}
    betas = dict(continuous_beta_0=SDE.beta_min, continuous_beta_1=SDE.beta_max, dtype=torch.float64)
    schedule = dpm.NoiseScheduleVP("linear", **betas)
    model_fn = dpm.model_wrapper(model, schedule, model_type="noise")

    def run_dpm(name, algorithm, outer, ts, orders=None, **kwargs):
        solver = with_grid(dpm.DPM_Solver(model_fn, schedule, algorithm_type=algorithm), outer)
        x = solver.sample(torch.tensor(x_T), t_start=SDE.T, t_end=EPS, skip_type="logSNR", **kwargs)
        out.update({f"{name}/ts": ts, f"{name}/x": x.numpy()})
        if orders is not None:
            out[f"{name}/orders"] = np.array(orders)

    for order in (1, 2, 3):  # fixed-order singlestep DPM-Solver-k, 6 steps uniform in lambda
        outer = time_grid("logsnr", SDE, 6, EPS)
        ts = singlestep_grid(outer, (order,) * 6)
        run_dpm(
            f"dpm_solver_{order}",
            "dpmsolver",
            outer,
            ts,
            (order,) * 6,
            steps=6 * order,
            order=order,
            method="singlestep_fixed",
        )
    for nfe in (10, 12):  # DPM-Solver-fast: its K = nfe // 3 + 1 steps uniform in lambda
        orders = dpm_solver_fast_orders(nfe, 3)
        outer = time_grid("logsnr", SDE, len(orders), EPS)
        run_dpm(
            f"dpm_solver_fast_{nfe}",
            "dpmsolver",
            outer,
            singlestep_grid(outer, orders),
            orders,
            steps=nfe,
            order=3,
            method="singlestep",
        )
    for steps in (8, 12):  # multistep DPM-Solver++(3M); its lower-order final steps apply below 10 steps
        ts = time_grid("logsnr", SDE, steps, EPS)
        run_dpm(f"dpm_solver++_3m_{steps}", "dpmsolver++", ts, ts, steps=steps, order=3, method="multistep")

    schedule = uni_pc.NoiseScheduleVP("linear", **betas)
    model_fn = uni_pc.model_wrapper(model, schedule, model_type="noise")
    for order in (2, 3):  # UniPC-bh2; its code needs (B, C, H, W) data
        ts = time_grid("logsnr", SDE, 8, EPS)
        solver = with_grid(uni_pc.UniPC(model_fn, schedule, variant="bh2"), ts)
        with contextlib.redirect_stdout(io.StringIO()):  # the reference code prints at every step
            x = solver.sample(
                torch.tensor(x_T[:, :, None, None]),
                steps=8,
                t_start=SDE.T,
                t_end=EPS,
                order=order,
                skip_type="logSNR",
                method="multistep",
            )
        out.update({f"unipc_{order}/ts": ts, f"unipc_{order}/x": x.numpy()[:, :, 0, 0]})
    np.savez(OUT, **out)
    print(f"wrote {OUT}: {sorted(out)}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
