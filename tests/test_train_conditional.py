"""Training a class-conditional network with label dropout, on the labelled Gaussian mixture: the training step
drops labels at the configured rate, from each example's own key (so any number of devices and a resumed run
see the same draws), and a small network trained so learns both the class-conditional and the unconditional
score (against the exact ones of analytic.class_score_fn)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from score_sde import analytic, parallel, train, wiring
from score_sde.config import load_config
from score_sde.models import layers, register_model
from score_sde.sde import VPSDE

MIXTURE, CLASSES = analytic.example_labelled_mixture()  # 2-D, classes 0, 0, 1
SEEN = []  # the class labels RecordingMLP was given


@register_model("test_mlp_conditional")
class ConditionalMLP(nn.Module):
    """A score network for 2-D data stored as (B, 1, 1, 2) images: an MLP of x and the noise embedding, with the
    class embedding of the U-Nets (layers.add_class_embedding) added to it."""

    config: ml_collections.ConfigDict
    record = False

    @nn.compact
    def __call__(self, x, labels, class_labels=None, train=False):
        width = 128
        if self.record and class_labels is not None:
            jax.debug.callback(lambda labels: SEEN.append(np.asarray(labels)), class_labels)
        temb = layers.get_timestep_embedding(labels, 32)
        temb = layers.add_class_embedding(temb, class_labels, int(self.config.model.num_classes))
        h = jnp.concatenate([x.reshape(x.shape[0], -1), nn.Dense(width)(temb)], axis=-1)
        for _ in range(3):
            h = nn.swish(nn.Dense(width)(h))
        return nn.Dense(2)(h).reshape(x.shape)


def config(**training):
    values = dict(
        seed=0,
        training=dict(
            sde="vpsde", continuous=True, reduce_mean=True, likelihood_weighting=False, label_dropout=0.2,
            batch_size=256, n_iters=8, n_jitted_steps=1, log_freq=1, eval_freq=0, snapshot_freq=8,
            snapshot_freq_for_preemption=4, snapshot_sampling=False,
        ),
        model=dict(name="test_mlp_conditional", num_classes=2, formulation="paper", ema_rate=0.999, num_scales=1000,
                   beta_min=0.1, beta_max=20.0),
        optim=dict(optimizer="Adam", lr=2e-3, beta1=0.9, eps=1e-8, weight_decay=0.0, warmup=100, grad_clip=1.0),
        data=dict(image_size=1, num_channels=2, centered=True),
    )  # fmt: skip
    values["training"].update(training)
    return ml_collections.ConfigDict(values)


def mixture_batches(config):
    """The global batch of step s: rows s B .. (s + 1) B - 1 of one draw of n_iters B mixture samples (as
    (B, 1, 1, 2) images, with their classes), so a function of (seed, s) only."""
    n, b = int(config.training.n_iters), int(config.training.batch_size)
    x, component = MIXTURE.sample(jax.random.key(config.seed), n * b)
    x, y = np.asarray(x).reshape(n, b, 1, 1, 2), CLASSES[np.asarray(component)].reshape(n, b).astype(np.int32)

    def batches(start):
        for step in range(start, n):
            yield x[step], y[step]

    return batches


@register_model("test_mlp_recording")
class RecordingMLP(ConditionalMLP):
    """ConditionalMLP that appends the class labels of every call to SEEN (a host callback: slow)."""

    record = True


def run(config, workdir, devices=None):
    model = (RecordingMLP if config.model.name == "test_mlp_recording" else ConditionalMLP)(config)
    return train.run_training(
        config,
        str(workdir),
        model=model,
        loss_fn=wiring.make_loss_fn(config, model, train=True),
        train_batches=mixture_batches(config),
        mesh=parallel.data_mesh(devices),
    )


def test_the_training_step_drops_labels_at_the_configured_rate(tmp_path):
    """20 steps of 256 examples with label_dropout 0.2 on 8 devices: the labels the network saw in the training
    step are the data's except a fraction 0.2 (within 4.5 binomial standard errors) replaced by the null label 2."""
    SEEN.clear()
    cfg = config(n_iters=20, snapshot_freq=20)
    cfg.model.name = "test_mlp_recording"
    run(cfg, tmp_path)
    seen = np.concatenate(SEEN)
    assert seen.size == 20 * 256 and set(np.unique(seen)) == {0, 1, 2}
    fraction, n = np.mean(seen == 2), seen.size
    assert abs(fraction - 0.2) < 4.5 * np.sqrt(0.2 * 0.8 / n), fraction
    # The kept labels are the data's: their classes in the mixture's proportions, 0.75 of class 0.
    kept = seen[seen != 2]
    assert abs(np.mean(kept == 0) - 0.75) < 4.5 * np.sqrt(0.75 * 0.25 / kept.size)


def test_eight_devices_and_a_resumed_run_equal_one_uninterrupted_run(tmp_path):
    """Label dropout draws from each example's key: 8 devices give the 1-device run's parameters (to float32
    round-off of the gradient's mean), and a run stopped after 4 steps and resumed gives the uninterrupted run's,
    bit for bit."""
    one = run(config(), tmp_path / "one", jax.devices()[:1])
    eight = run(config(), tmp_path / "eight")
    run(config(n_iters=4, snapshot_freq=4), tmp_path / "resumed", jax.devices()[:1])
    resumed = run(config(), tmp_path / "resumed", jax.devices()[:1])
    for a, b, c in zip(*(jax.tree.leaves(s.params) for s in (one, eight, resumed))):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(c), np.asarray(a))


def _relative_errors(score_fn, sde, times, n=4096):
    """For the conditional scores (labels 0, 1) and the unconditional one (the null label 2): the mean over
    x ~ p_t(x | y) (or p_t) of || s(x, t, y) - exact ||^2 / || exact ||^2, weighted by s(t)^2 (the noise
    prediction's error), at each time."""
    exact = analytic.class_score_fn(MIXTURE, CLASSES, sde)
    out = {}
    for label, law in ((0, None), (1, None), (2, MIXTURE)):
        law = law or analytic.class_conditional(MIXTURE, CLASSES, label)
        for t in times:
            x = analytic.sample_t(law, sde, jax.random.key(label), t, n)
            tt, y = jnp.full((n,), t), jnp.full((n,), label, jnp.int32)
            want = exact(x, tt, y)
            got = score_fn(x.reshape(n, 1, 1, 2), tt, y).reshape(n, 2)
            out[label, t] = float(jnp.sum((got - want) ** 2) / jnp.sum(want**2))
    return out


@pytest.mark.heavy
def test_a_network_trained_with_label_dropout_learns_both_scores(tmp_path):
    """3000 steps of 512 examples (label dropout 0.2, EMA 0.995) on one device: at t = 0.1, 0.3, 0.6 the learnt
    score's relative error against the exact one is below 0.03 for each class and for the null label (the
    unconditional score), at t = 0.02, where the score is steepest, below 0.15 (measured: at most 0.01 and 0.064).
    Untrained, the errors are above 0.5."""
    cfg = config(n_iters=3000, batch_size=512, snapshot_freq=3000, snapshot_freq_for_preemption=3000, log_freq=500)
    cfg.model.ema_rate = 0.995
    model, sde, times = ConditionalMLP(cfg), VPSDE(), (0.02, 0.1, 0.3, 0.6)
    untrained = train.init_state(cfg, model, train.get_optimizer(cfg)).params
    assert min(_relative_errors(wiring.score_fn_for(cfg, model, untrained), sde, times).values()) > 0.5
    state = run(cfg, tmp_path, jax.devices()[:1])
    errors = _relative_errors(wiring.score_fn_for(cfg, model, state.params_ema), sde, times)
    for (label, t), error in errors.items():
        assert error < (0.15 if t < 0.05 else 0.03), (label, t, error, errors)


def test_labels_are_asked_of_labelled_data_only(tmp_path):
    """A class-conditional config refuses a dataset without labels, or with more classes than it has, naming the
    dataset, before anything is compiled or written."""
    images = np.zeros((4, 8, 8, 1), np.uint8)
    np.savez(tmp_path / "unlabelled.npz", images=images)
    np.savez(tmp_path / "eleven.npz", images=images, labels=np.array([0, 3, 10, 1]))
    cases = [
        ("unlabelled.npz", r"config.model.num_classes=10 asks for class labels, but dataset 'npz' has none"),
        ("eleven.npz", r"dataset 'npz' has labels 0..10, outside config.model.num_classes=10 \(labels 0..9\)"),
    ]
    for name, message in cases:
        cfg = load_config("configs/small/digits_cond.py", ["data.dataset=npz", f"data.path={tmp_path / name}"])
        with pytest.raises(ValueError, match=message):
            train.train(cfg, str(tmp_path / "run"))
        assert not (tmp_path / "run").exists()
