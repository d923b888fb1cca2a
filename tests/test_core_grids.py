"""Time grids and the inverse of the log-SNR: each grid's defining spacing, checked on VE, VP and sub-VP."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde.sampling import sample
from score_sde.sampling.grids import GRIDS, check_grid, time_grid
from score_sde.sde import SDE, VESDE, VPSDE, subVPSDE

SDES = {"ve": VESDE(sigma_min=0.01, sigma_max=50.0), "vp": VPSDE(), "subvp": subVPSDE()}


@pytest.mark.parametrize("sde_name", list(SDES))
def test_t_of_log_snr_inverts_log_snr(sde_name):
    """Closed forms (float64) against the definition, and the generic bisection of the base class against them."""
    sde = SDES[sde_name]
    with jax.enable_x64(True):
        t = jnp.linspace(1e-5, 1.0, 201, dtype=jnp.float64)
        lam = sde.log_snr(t)
        np.testing.assert_allclose(sde.t_of_log_snr(lam), t, rtol=0, atol=1e-13)
        np.testing.assert_allclose(SDE.t_of_log_snr(sde, lam), t, rtol=0, atol=1e-13)


@pytest.mark.parametrize("sde_name", list(SDES))
def test_grids_have_their_defining_spacing(sde_name):
    sde, n, eps = SDES[sde_name], 12, 1e-3
    grids = {name: time_grid(name, sde, n, eps) for name in GRIDS}
    for name, ts in grids.items():
        assert ts.shape == (n + 1,) and ts[0] == sde.T and ts[-1] == eps, name
        assert np.all(np.diff(ts) < 0), name
    # Float32 inversion of lambda: times exact to a few 1e-7, so spacings to ~1e-5 relative.
    lam = lambda ts: np.asarray(sde.log_snr(jnp.asarray(ts, jnp.float32)), np.float64)  # noqa: E731
    spacing = {
        "uniform": grids["uniform"],
        "logsnr": lam(grids["logsnr"]),
        "karras": np.exp(-lam(grids["karras"])) ** (1 / 7),
        "quadratic": np.sqrt(grids["quadratic"]),
    }
    for name, values in spacing.items():
        steps = np.diff(values)
        np.testing.assert_allclose(steps, np.full(n, steps.mean()), rtol=2e-4, err_msg=name)


def test_bad_grids_are_named():
    sde = VPSDE()
    with pytest.raises(ValueError, match="strictly decreasing, but t_1 = 0.5 <= t_2 = 0.5"):
        check_grid([1.0, 0.5, 0.5, 0.1], sde)
    with pytest.raises(ValueError, match=r"must lie in \[0.001, 1.0\]"):
        check_grid([1.0, 0.5, 1e-4], sde, eps=1e-3)
    with pytest.raises(ValueError, match=r"must lie in \[0.001, 1.0\]"):
        time_grid(np.array([1.5, 0.5]), sde)
    # An explicit grid is checked against [eps, T] (eps: the SDE's sampling_eps unless given), a few ulp of eps
    # allowed below it (grids mapped from sigma in float32); a sampler called directly takes any grid in (0, T].
    with pytest.raises(ValueError, match=r"must lie in \[0.001, 1.0\], got times from 1.0 down to 1e-07"):
        time_grid(np.array([1.0, 0.5, 1e-7]), sde)
    with pytest.raises(ValueError, match=r"must lie in \[0.001, 1.0\], got times from 1.0 down to 1e-07"):
        sample("ddim", jax.random.key(0), lambda x, t: -x, sde, (4, 2), schedule=np.array([1.0, 0.5, 1e-7]))
    np.testing.assert_array_equal(time_grid(np.array([1.0, 1e-7]), sde, eps=1e-7), [1.0, 1e-7])
    np.testing.assert_array_equal(time_grid(np.array([1.0, 0.001 * (1 - 4e-7)]), sde)[-1], 0.001 * (1 - 4e-7))
    with pytest.raises(ValueError, match=r"must lie in \[0.001, 1.0\]"):
        time_grid(np.array([1.0, 0.001 * (1 - 4e-6)]), sde)
    check_grid([1.0, 0.5, 1e-7], sde)  # a sampler's own check: (0, T]
    with pytest.raises(ValueError, match=r"must lie in \(0, 1.0\]"):
        check_grid([1.5, 0.5], sde)
    with pytest.raises(ValueError, match="at least 2 times"):
        time_grid(np.array([1.0]), sde)
    with pytest.raises(ValueError, match=r"unknown time grid 'cosine'; known: "):
        time_grid("cosine", sde, 10)
    with pytest.raises(ValueError, match="num_steps >= 1"):
        time_grid("karras", sde, 0)
    np.testing.assert_array_equal(time_grid(np.array([1.0, 0.3, 0.01]), sde), [1.0, 0.3, 0.01])
