"""Samplers against exact answers: samples of a 2-D Gaussian mixture diffused by VE, VP and sub-VP SDEs.

Every sampler gets the mixture's exact score, so what remains between its samples and the exact p_eps is the
sampler's own error (and sampling noise, which the tolerances below are derived from).
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.experimental import io_callback
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from score_sde import analytic
from score_sde.likelihood import log_likelihood
from score_sde.sampling import (
    CORRECTORS,
    PREDICTORS,
    get_sampling_fn,
    ode_sampler,
    pc_sampler,
    register_corrector,
    register_predictor,
)
from score_sde.sde import VESDE, VPSDE, subVPSDE

MIXTURE = analytic.example_mixture()
SDES = {"ve": VESDE(sigma_min=0.01, sigma_max=10.0, N=500), "vp": VPSDE(N=500), "subvp": subVPSDE(N=500)}
N_SAMPLES = 2048
# moment_z_scores gives 12 standardised errors (2 weights, 4 means, 6 covariance entries), each ~N(0, 1) for
# exact samples. A per-test false-failure probability of 1e-4 (Bonferroni over 12) allows
# |z| < Phi^-1(1 - 1e-4 / 24) = 4.46. The samplers' discretisation errors at the step counts below are well
# inside this (the largest |z| seen over all samplers and SDEs is 2.7), while a wrong drift, diffusion or
# step size moves some statistic by tens of standard errors.
Z_MAX = 4.46

SAMPLERS = {
    "pc_reverse_diffusion_langevin": (pc_sampler, dict(predictor="reverse_diffusion", corrector="langevin", snr=0.16)),
    "pc_euler_maruyama_ald": (pc_sampler, dict(predictor="euler_maruyama", corrector="ald", snr=0.16)),
    # 100 steps: enough for the ancestral chain to be accurate, few enough that its step variances matter.
    "pc_ancestral": (pc_sampler, dict(predictor="ancestral_sampling", corrector="none"), 100),
    "pc_corrector_only_langevin": (pc_sampler, dict(predictor="none", corrector="langevin", n_steps=2, snr=0.16)),
    "pc_probability_flow": (pc_sampler, dict(predictor="reverse_diffusion", corrector="none", probability_flow=True)),
    "ode_rk45": (ode_sampler, dict(method="RK45", rtol=1e-5, atol=1e-5)),
    "ode_euler_200": (ode_sampler, dict(method="euler", num_steps=200)),
    "ode_heun_30": (ode_sampler, dict(method="heun", num_steps=30)),
}


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("sde_name", list(SDES))
def test_samples_match_mixture(sde_name, sampler):
    fn, kwargs, *steps = SAMPLERS[sampler]
    sde = dataclasses.replace(SDES[sde_name], N=steps[0]) if steps else SDES[sde_name]
    score_fn = analytic.score_fn(MIXTURE, sde)
    if sampler == "pc_ancestral" and sde_name == "subvp":
        with pytest.raises(NotImplementedError, match="VESDE or VPSDE"):
            fn(jax.random.key(0), score_fn, sde, (N_SAMPLES, 2), **kwargs)
        return
    x, nfe = fn(jax.random.key(0), score_fn, sde, (N_SAMPLES, 2), **kwargs)
    z = analytic.moment_z_scores(analytic.marginal(MIXTURE, sde, sde.sampling_eps), x)
    assert np.all(np.abs(z) < Z_MAX), f"{sampler} on {sde_name}: z-scores {np.round(z, 1)}"
    assert int(nfe) > 0


# --- NFE: each sampler's count against an independent count of the calls that actually ran ---------------


def _call_counter(score_fn):
    """score_fn that counts its executions on the host (ordered io_callback), also under forward-mode AD."""
    calls = [0]

    def tick(t):
        calls[0] += 1
        return np.zeros((), np.float32)

    @jax.custom_jvp
    def counted(x, t):
        return score_fn(x, t) + io_callback(tick, jax.ShapeDtypeStruct((), jnp.float32), t[0], ordered=True)

    @counted.defjvp
    def counted_jvp(primals, tangents):
        x, t = primals
        _, ds = jax.jvp(score_fn, primals, tangents)
        return counted(x, t), ds

    return counted, calls


NFE_SDE = VPSDE(N=20)


@pytest.mark.parametrize(
    "run, expected",
    [
        # Algorithm 1 order: N predictor steps, n_steps correctors after every step but the last.
        (lambda s, k: pc_sampler(k, s, NFE_SDE, (8, 2), n_steps=2), 20 + 2 * 19),
        (lambda s, k: pc_sampler(k, s, NFE_SDE, (8, 2), predictor="none", corrector="none"), 0),
        (lambda s, k: ode_sampler(k, s, NFE_SDE, (8, 2), method="heun", num_steps=7, denoise=True), 2 * 7 + 1),
        (lambda s, k: ode_sampler(k, s, NFE_SDE, (8, 2), method="RK45", denoise=True), None),
        (lambda s, k: log_likelihood(k, s, NFE_SDE, jnp.ones((8, 2)), divergence="rademacher"), None),
    ],
    ids=["pc", "pc_none", "ode_heun", "ode_rk45", "likelihood"],
)
def test_nfe_is_counted(run, expected):
    score_fn, calls = _call_counter(analytic.score_fn(MIXTURE, NFE_SDE))
    out = run(score_fn, jax.random.key(1))
    jax.block_until_ready(out)
    jax.effects_barrier()
    nfe = int(out[-1])
    assert nfe == calls[0]
    if expected is not None:
        assert nfe == expected


# --- sharding, determinism --------------------------------------------------------------------------------


def test_sharded_equals_unsharded():
    """A batch sharded over all 8 devices gives the samples, likelihoods and NFE of the unsharded run, on a
    mesh with Explicit axes (jax.make_mesh's default, used inside `jax.set_mesh`) and one with Auto axes.
    (The likelihood runs diffrax's adaptive solver, the ODE sampler here the fixed-step loop.)
    One compilation per run: each case runs on one of the two kinds of mesh.

    The only differences allowed are float32 reduction order (batch means in the Langevin step size and
    the ODE solvers' error norms): relative 1e-5.
    """
    sde = VESDE(sigma_max=10.0, N=100)
    score_fn = analytic.score_fn(MIXTURE, sde)
    shape, data = (64, 2), MIXTURE.sample(jax.random.key(4), 64)[0]
    runs = {
        "pc": lambda sh: pc_sampler(jax.random.key(3), score_fn, sde, shape, sharding=sh),
        "ode": lambda sh: ode_sampler(
            jax.random.key(3), score_fn, sde, shape, method="heun", num_steps=10, sharding=sh
        ),
        "likelihood": lambda sh: log_likelihood(jax.random.key(3), score_fn, sde, data, sharding=sh),
    }
    for axis_type, names in ((AxisType.Explicit, ("pc", "likelihood")), (AxisType.Auto, ("ode",))):
        mesh = jax.make_mesh((jax.device_count(),), ("batch",), axis_types=(axis_type,))
        sharding = NamedSharding(mesh, PartitionSpec("batch"))
        for name in names:
            plain = runs[name](None)
            with jax.set_mesh(mesh):
                sharded = runs[name](sharding)
            assert sharded[0].sharding.is_equivalent_to(sharding, 2), (name, axis_type)
            for a, b in zip(plain, sharded):
                np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5, err_msg=name)


def test_deterministic_for_a_key():
    sde, shape = SDES["vp"], (N_SAMPLES, 2)
    score_fn = analytic.score_fn(MIXTURE, sde)
    a, _ = pc_sampler(jax.random.key(0), score_fn, sde, shape, predictor="euler_maruyama", corrector="ald")
    b, _ = pc_sampler(jax.random.key(0), score_fn, sde, shape, predictor="euler_maruyama", corrector="ald")
    c, _ = pc_sampler(jax.random.key(1), score_fn, sde, shape, predictor="euler_maruyama", corrector="ald")
    np.testing.assert_array_equal(a, b)
    assert np.abs(np.asarray(a) - np.asarray(c)).max() > 0.1


# --- extension by name, config entry point, errors --------------------------------------------------------


def test_register_new_predictor_and_corrector():
    """A predictor and a corrector registered by name are used by the sampler (here: EM, and Langevin with
    a fixed step size), and a name cannot be registered twice."""

    @register_predictor("test_em_copy")
    def em_copy(key, x, t, *, sde, score_fn, probability_flow=False):
        return PREDICTORS["euler_maruyama"](key, x, t, sde=sde, score_fn=score_fn, probability_flow=probability_flow)

    @register_corrector("test_fixed_langevin")
    def fixed_langevin(key, x, t, *, sde, score_fn, snr):
        x_mean = x + 1e-4 * score_fn(x, t)
        return x_mean + np.sqrt(2e-4) * jax.random.normal(key, x.shape), x_mean

    try:
        sde = SDES["vp"]
        score_fn = analytic.score_fn(MIXTURE, sde)
        kwargs = dict(corrector="ald", snr=0.16)
        ours, _ = pc_sampler(jax.random.key(0), score_fn, sde, (N_SAMPLES, 2), predictor="test_em_copy", **kwargs)
        ref, _ = pc_sampler(jax.random.key(0), score_fn, sde, (N_SAMPLES, 2), predictor="euler_maruyama", **kwargs)
        np.testing.assert_array_equal(ours, ref)
        _, nfe = pc_sampler(
            jax.random.key(2), score_fn, sde, (16, 2), predictor="none", corrector="TEST_FIXED_LANGEVIN", n_steps=3
        )
        assert int(nfe) == 3 * (sde.N - 1)
        with pytest.raises(ValueError, match="already registered"):
            register_predictor("test_em_copy")(em_copy)
    finally:
        PREDICTORS.pop("test_em_copy", None)
        CORRECTORS.pop("test_fixed_langevin", None)


def test_get_sampling_fn_follows_config():
    sde = SDES["vp"]
    score_fn = analytic.score_fn(MIXTURE, sde)
    config = ml_collections.ConfigDict(
        {
            "sampling": {
                "method": "pc",
                "predictor": "euler_maruyama",
                "corrector": "ald",
                "snr": 0.16,
                "n_steps_each": 1,
                "noise_removal": True,
                "probability_flow": False,
            }
        }
    )
    sampling_fn = get_sampling_fn(config, sde, (N_SAMPLES, 2), inverse_scaler=lambda x: 2 * x)
    x, nfe = sampling_fn(jax.random.key(0), score_fn)
    ref, ref_nfe = pc_sampler(
        jax.random.key(0), score_fn, sde, (N_SAMPLES, 2), predictor="euler_maruyama", corrector="ald"
    )
    np.testing.assert_array_equal(x, 2 * ref)
    assert int(nfe) == int(ref_nfe) == 500 + 499
    config.sampling.update({"method": "ode", "ode_method": "euler", "ode_steps": 200, "noise_removal": False})
    x, nfe = get_sampling_fn(config, sde, (N_SAMPLES, 2))(jax.random.key(0), score_fn)
    ref, _ = ode_sampler(jax.random.key(0), score_fn, sde, (N_SAMPLES, 2), method="euler", num_steps=200)
    np.testing.assert_array_equal(x, ref)
    assert int(nfe) == 200
    config.sampling.method = "sde"
    with pytest.raises(ValueError, match="config.sampling.method"):
        get_sampling_fn(config, sde, (N_SAMPLES, 2))


def test_bad_arguments_raise_naming_the_problem():
    sde = SDES["vp"]
    score_fn = analytic.score_fn(MIXTURE, sde)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="unknown predictor 'euler'.*euler_maruyama"):
        pc_sampler(key, score_fn, sde, (8, 2), predictor="euler")
    with pytest.raises(ValueError, match="unknown corrector 'langevn'"):
        pc_sampler(key, score_fn, sde, (8, 2), corrector="langevn")
    for eps in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"eps .* must lie in \(0, T=1.0\)"):
            ode_sampler(key, score_fn, sde, (8, 2), eps=eps)
    with pytest.raises(ValueError, match=r"t must lie in \[0.0, 1.0\]"):
        score_fn(jnp.zeros((8, 2)), jnp.full((8,), 1.2))
    with pytest.raises(ValueError, match=r"score_fn returned shape \(8, 3\) for input of shape \(8, 2\)"):
        pc_sampler(key, lambda x, t: jnp.zeros((8, 3)), sde, (8, 2))
    with pytest.raises(ValueError, match=r"z has shape \(4, 2\), but shape=\(8, 2\)"):
        ode_sampler(key, score_fn, sde, (8, 2), z=jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="needs num_steps"):
        ode_sampler(key, score_fn, sde, (8, 2), method="heun")
    with pytest.raises(ValueError, match="unknown ODE method 'rk4'"):
        ode_sampler(key, score_fn, sde, (8, 2), method="rk4")
    with pytest.raises(ValueError, match=r"probability-flow"):
        pc_sampler(key, score_fn, sde, (8, 2), predictor="ancestral_sampling", probability_flow=True)
