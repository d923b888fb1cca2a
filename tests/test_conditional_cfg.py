"""Classifier-free guidance against exact answers: a labelled Gaussian mixture (each component carries a class),
whose class-conditional and unconditional scores are known exactly (analytic.class_score_fn), under VE, VP and
sub-VP SDEs. With w = 0 the guided score is the class-conditional one: samples follow each class's law; with
w > 0 it is (1 + w) grad log p_t(x | y) - w grad log p_t(x), whose probability-flow ODE has a float64 reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from score_sde import analytic, sampling
from score_sde.conditional import classifier_free_guided, classifier_guided
from score_sde.likelihood import log_likelihood
from score_sde.sde import VESDE, VPSDE, subVPSDE

from support import mmd, mmd_bound

MIXTURE, CLASSES = analytic.example_labelled_mixture()  # classes 0, 0, 1
SDES = {"ve": VESDE(sigma_min=0.01, sigma_max=10.0, N=250), "vp": VPSDE(N=250), "subvp": subVPSDE(N=250)}
N_SAMPLES = 1024
# Alternating labels: a guided score that mixed up the rows of its doubled batch would give each row the other's.
LABELS = jnp.tile(jnp.array([0, 1], jnp.int32), N_SAMPLES // 2)


def guided(sde, labels, weight, **options):
    return classifier_free_guided(
        analytic.class_score_fn(MIXTURE, CLASSES, sde), sde, labels, num_classes=2, weight=weight, **options
    )


@pytest.mark.parametrize("sde_name", list(SDES))
def test_guided_score_is_the_exact_guided_score(sde_name):
    """(1 + w) grad log p_t(x | y) - w grad log p_t(x) = grad log p_t(x) + (1 + w) grad log p_t(y | x): the
    classifier-free guided score of the exact conditional scores equals classifier guidance of weight 1 + w with
    the exact classifier, at every w, label and time."""
    sde = SDES[sde_name]
    x = jax.random.normal(jax.random.key(0), (64, 2)) * 3
    t = jnp.linspace(sde.sampling_eps, sde.T, 64)
    labels = LABELS[:64]
    for w in (0.0, 0.5, 3.0):
        want = classifier_guided(
            analytic.score_fn(MIXTURE, sde), analytic.classifier_fn(MIXTURE, CLASSES, sde), labels, weight=1 + w
        )(x, t)
        got = jax.jit(lambda score_fn, x, t: score_fn(x, t))(guided(sde, labels, w), x, t)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))


def test_one_network_call_of_twice_the_batch():
    """w > 0: one call of the conditional score on 2B rows (each row's conditional and null-label copies side by
    side, so a sharded batch keeps its rows on their devices); w = 0: one call on the B rows, with their labels."""
    sde, calls = SDES["vp"], []
    exact = analytic.class_score_fn(MIXTURE, CLASSES, sde)

    def counted(x, t, y):
        calls.append((x.shape, np.asarray(y)))
        return exact(x, t, y)

    x, t, labels = jnp.ones((4, 2)), jnp.full((4,), 0.5), jnp.array([1, 0, 1, 1])
    classifier_free_guided(Partial(counted), sde, labels, num_classes=2, weight=2.0)(x, t)
    classifier_free_guided(Partial(counted), sde, labels, num_classes=2, weight=0.0)(x, t)
    assert [shape for shape, _ in calls] == [(8, 2), (4, 2)]
    np.testing.assert_array_equal(calls[0][1], [1, 2, 0, 2, 1, 2, 1, 2])
    np.testing.assert_array_equal(calls[1][1], labels)


SAMPLERS = {
    "pc": dict(predictor="reverse_diffusion", corrector="langevin", snr=0.16),
    "ode:heun": dict(steps=60),
    "dpm_solver++:2m": dict(steps=30, schedule="logsnr"),
}


def _exact(sde, labels, key, t):
    """Exact samples of p_t(x | y) for each row's label y (the ODE samplers start from them at T: the prior's
    small mismatch with p_T is not what is tested here)."""
    out = jnp.zeros((len(labels), 2))
    for label in (0, 1):
        rows = np.flatnonzero(np.asarray(labels) == label)
        part = analytic.class_conditional(MIXTURE, CLASSES, label)
        out = out.at[rows].set(analytic.sample_t(part, sde, jax.random.fold_in(key, label), t, len(rows)))
    return out


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("sde_name", list(SDES))
def test_unguided_samples_follow_each_class(sde_name, sampler):
    """w = 0 with alternating labels, 1024 samples: the rows of each label follow that class's mixture at eps
    (component weights, means, covariances within the z-bounds of test_conditional_exact), and their MMD to exact
    samples of it stays below Gretton's bound for 512 samples, which the other class's samples far exceed."""
    from test_conditional_exact import assert_matches

    sde = SDES[sde_name]
    options = dict(SAMPLERS[sampler])
    steps = options.pop("steps", sde.N - 1)
    z = None if sampler == "pc" else _exact(sde, LABELS, jax.random.key(1), sde.T)
    x, _ = sampling.sample(
        sampler, jax.random.key(0), guided(sde, LABELS, 0.0), sde, (N_SAMPLES, 2), steps=steps, z=z, **options
    )
    bound = mmd_bound(N_SAMPLES // 2)
    for label in (0, 1):
        rows = np.asarray(x)[np.asarray(LABELS) == label]
        law = analytic.marginal(analytic.class_conditional(MIXTURE, CLASSES, label), sde, sde.sampling_eps)
        assert_matches(analytic.class_conditional(MIXTURE, CLASSES, label), sde, rows, f"class {label}")
        exact, _ = law.sample(jax.random.key(10 + label), N_SAMPLES // 2)
        other = analytic.marginal(analytic.class_conditional(MIXTURE, CLASSES, 1 - label), sde, sde.sampling_eps)
        assert mmd(rows, exact) < bound < mmd(rows, other.sample(jax.random.key(20), N_SAMPLES // 2)[0])


@pytest.mark.parametrize("sde_name", list(SDES))
def test_guided_end_points_equal_the_reference_flow(sde_name):
    """w = 2 from the same x_T (64 prior draws, alternating labels), against the float64 solution of the guided
    probability-flow ODE: an adaptive solver (rtol 1e-6) ends within 2e-4 of it, a hundredth of the distance to
    the flow of w = 2.2 (so the weight is the one asked for); DPM-Solver++(2M) on the log-SNR grid and EDM's Heun
    on the Karras grid converge to it at their order 2 over 50, 100, 200 steps (measured 1.7 to 2.3)."""
    from support import convergence_order

    sde = SDES[sde_name]
    labels = LABELS[:64]
    x_T = sde.prior_sampling(jax.random.key(2), (64, 2))
    reference = analytic.probability_flow_of(guided(sde, labels, 2.0), sde, x_T, sde.T, sde.sampling_eps, tol=1e-9)
    other = analytic.probability_flow_of(guided(sde, labels, 2.2), sde, x_T, sde.T, sde.sampling_eps, tol=1e-9)

    def error(name, **options):
        x, _ = sampling.sample(name, jax.random.key(3), guided(sde, labels, 2.0), sde, (64, 2), z=x_T, **options)
        return np.abs(np.asarray(x, np.float64) - reference).max(axis=1)

    adaptive = error("ode:rk45", rtol=1e-6, atol=1e-6, denoise=False).max()
    assert adaptive < min(2e-4, np.abs(other - reference).max() / 100), adaptive
    steps = (50, 100, 200)
    for name, schedule in (("dpm_solver++:2m", "logsnr"), ("edm:heun", "karras")):
        errors = [error(name, steps=n, schedule=schedule) for n in steps]
        order = convergence_order(steps, errors)
        assert 1.6 < order < 2.6 and errors[-1].max() < 2e-2, (name, order, [e.max() for e in errors])


def test_guidance_interval():
    """Inside [t_lo, t_hi] the guided score, outside it the conditional one; [eps, T] is no interval at all; an
    interval outside [eps, T] or reversed is refused, as are labels outside the classes."""
    sde = SDES["vp"]
    x = jax.random.normal(jax.random.key(4), (64, 2)) * 3
    t = jnp.linspace(sde.sampling_eps, sde.T, 64)
    labels = LABELS[:64]
    inside = (t >= 0.2) & (t <= 0.6)
    got = guided(sde, labels, 3.0, interval=(0.2, 0.6))(x, t)
    want = jnp.where(inside[:, None], guided(sde, labels, 3.0)(x, t), guided(sde, labels, 0.0)(x, t))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    everywhere = guided(sde, labels, 3.0, interval=(sde.sampling_eps, sde.T))(x, t)
    np.testing.assert_allclose(everywhere, guided(sde, labels, 3.0)(x, t), rtol=1e-6, atol=1e-6)
    for interval in ((0.0, 0.5), (0.2, 1.5), (0.6, 0.2)):
        with pytest.raises(ValueError, match=r"the guidance interval .* must lie within \[eps, T\] = \[0.001, 1.0\]"):
            guided(sde, labels, 1.0, interval=interval)
    with pytest.raises(ValueError, match=r"class label 2 is outside the model's classes 0..1"):
        guided(sde, jnp.array([0, 2]), 1.0)


def test_likelihood_of_the_unguided_score_is_the_exact_class_conditional_density():
    """The probability-flow log-likelihood with w = 0 is log p_eps(x | y) for each row's label (tolerances as in
    test_core_likelihood)."""
    sde, eps, n = SDES["vp"], 1e-5, 32
    labels = LABELS[:n]
    x = _exact(sde, labels, jax.random.key(5), eps)
    logp, z, _ = log_likelihood(
        jax.random.key(7), guided(sde, labels, 0.0), sde, x, divergence="exact", eps=eps, rtol=1e-6, atol=1e-6
    )
    t_T, t_eps = jnp.full((n,), sde.T), jnp.full((n,), eps)
    for label in (0, 1):
        rows = np.asarray(labels) == label
        part = analytic.class_conditional(MIXTURE, CLASSES, label)
        ode = logp[rows] - sde.prior_logp(z[rows]) + analytic.log_prob(part, sde, z[rows], t_T[rows])
        np.testing.assert_allclose(ode, analytic.log_prob(part, sde, x[rows], t_eps[rows]), atol=2e-3)


def test_sharded_equals_unsharded():
    """A batch split over 8 devices (Explicit mesh): the guided score's doubled batch keeps each row with its
    device, and the samples equal the unsharded ones (float32 round-off of other fusions)."""
    from jax.sharding import AxisType, NamedSharding, PartitionSpec

    sde = SDES["vp"]
    mesh = jax.make_mesh((jax.device_count(),), ("batch",), axis_types=(AxisType.Explicit,))
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    score_fn = guided(sde, LABELS[:64], 2.0)
    plain = sampling.sample("dpm_solver++:2m", jax.random.key(8), score_fn, sde, (64, 2), steps=10, schedule="logsnr")
    with jax.set_mesh(mesh):
        sharded = sampling.sample(
            "dpm_solver++:2m", jax.random.key(8), score_fn, sde, (64, 2), steps=10, schedule="logsnr", sharding=sharding
        )
    assert sharded[0].sharding.is_equivalent_to(sharding, 2)
    np.testing.assert_allclose(np.asarray(sharded[0]), np.asarray(plain[0]), rtol=1e-5, atol=1e-5)
