"""The wiring of a config into the pieces: its network, SDE, score function, loss, sampler and random streams.

Everything a job (train, evaluate, sample, compare, the conditional tasks) builds from a config or a trained
model comes from here, so that every job builds it the same way:

    model, params, config, step = load_for_eval("runs/cifar10_ve")     # a workdir or a model checkpoint
    score_fn = score_fn_for(config, model, params)                     # score_fn(x, t)
    sample_fn = make_sample_fn(config, model, num_samples=64)          # config.sampling's sampler
    preconditioning = preconditioning_for(config)                      # EDM's formulation, or None
    loss_fn = make_loss_fn(config, model, train=True)                  # config.training's loss
    log_prob_fn, _ = classifier_for(config, "runs/classifier")         # a trained classifier, for guidance
    guidance = class_guidance(config, weight=2.0)                      # classifier-free, of a conditional model
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from score_sde import checkpoints as ckpt_lib
from score_sde import data as data_lib
from score_sde import losses, models, parallel, sampling, score
from score_sde import sde as sde_lib
from score_sde.conditional import check_labels, classifier_free_guided, classifier_guided
from score_sde.conditional import classifier as classifier_lib
from score_sde.config import with_overrides
from score_sde.preconditioning import EDMPreconditioning

# Independent random streams derived from config.seed.
INIT_STREAM, TRAIN_STREAM, EVAL_STREAM, SAMPLE_STREAM = range(4)


def stream_key(config, stream: int) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(config.seed), stream)


# loss_fn(params, key, x) -> scalar loss of the batch x, its random draws from key (see `make_loss_fn`).
LossFn = Callable[[Any, jax.Array, jax.Array], jax.Array]

# config.model.formulation: how the network's output becomes the score, and the loss that trains it.
FORMULATIONS = ("paper", "edm")


def formulation(config) -> str:
    """config.model.formulation: 'paper' (the score parameterisations and losses of Song et al.; what configs saved
    before the key existed were trained with) or 'edm' (EDM's preconditioned denoiser and loss)."""
    name = str(config.model.get("formulation", "paper")).lower()
    if name not in FORMULATIONS:
        raise ValueError(f"config.model.formulation={name!r} is not one of {FORMULATIONS}")
    return name


def preconditioning_for(config) -> EDMPreconditioning | None:
    """EDM's preconditioning of the network of ``config`` (config.model.formulation='edm', with
    config.model.sigma_data), or None for the paper's formulation. Refuses what EDM's formulation excludes."""
    if formulation(config) == "paper":
        return None
    m = config.model
    for key, value, needed, why in (
        ("training.continuous", config.training.continuous, True, "EDM's formulation is continuous in sigma"),
        ("data.centered", config.data.centered, True, "EDM's c_in assumes data in [-1, 1] (sigma_data 0.5)"),
        ("model.scale_by_sigma", m.get("scale_by_sigma", False), False, "c_out scales the output instead"),
    ):
        if bool(value) != needed:
            raise ValueError(f"config.model.formulation='edm' needs config.{key}={needed}: {why}")
    return EDMPreconditioning(float(m.get("sigma_data", 0.5)), log_labels=m.get("embedding_type", "") == "fourier")


def make_loss_fn(config, model, *, train: bool) -> LossFn:
    """The loss of config.training (core's losses.py) for the Flax network ``model``: the paper's score matching
    or, with config.model.formulation='edm', EDM's; the network's output is cast to float32 (it may compute in
    bfloat16, config.model.dtype). A class-conditional network (config.model.num_classes = K > 0) takes batches
    (images, labels) and sees each label replaced by the null label K with probability
    config.training.label_dropout, drawn from the example's own key (so resuming and any device count see the
    same draws)."""
    training = config.training
    loss = losses.get_loss_fn(
        sde_lib.get_sde(config),
        continuous=training.continuous,
        reduce_mean=training.reduce_mean,
        likelihood_weighting=training.likelihood_weighting,
        preconditioning=preconditioning_for(config),
        P_mean=float(training.get("P_mean", -1.2)),
        P_std=float(training.get("P_std", 1.2)),
    )
    classes = models.num_classes(config, model)
    label_dropout = float(training.get("label_dropout", 0.0))
    if not 0.0 <= label_dropout <= 1.0:
        raise ValueError(f"config.training.label_dropout must lie in [0, 1], got {label_dropout}")

    def loss_fn(params, key, batch):
        loss_key, dropout_key = jax.random.split(key)
        model_fn = score.get_model_fn(model, {"params": params}, train=train, dropout_key=dropout_key)
        if not classes:
            return loss(lambda x, labels: model_fn(x, labels).astype(jnp.float32), loss_key, batch)
        x, y = batch
        label_key, loss_key = jax.random.split(loss_key)
        y = losses.drop_labels(label_key, y, label_dropout, classes)
        return loss(lambda x, labels: model_fn(x, labels, y).astype(jnp.float32), loss_key, x)

    return loss_fn


def make_classifier_loss_fn(config, model) -> LossFn:
    """loss_fn(params, key, (images, labels)): the time-dependent classifier's cross-entropy on x_t of
    config.training.sde (conditional/classifier.py), the logits cast to float32."""
    conventions = classifier_lib.InputConventions.from_config(config)

    def loss_fn(params, key, batch):
        images, labels = batch
        return classifier_lib.classifier_loss(model, conventions, params, key, images, labels)

    return loss_fn


def classifier_for(config, classifier_path: str, overrides=()):
    """(log_prob_fn(x, t, y), classifier config) of the trained classifier at ``classifier_path`` (a workdir or
    model checkpoint), checked to fit the score model of ``config``: the same SDE, image shape and data range."""
    model, params, classifier_config, _ = load_for_eval(classifier_path, overrides)
    if "input_mean" not in classifier_config.model:
        raise ValueError(f"{classifier_path} is not a classifier (its config.model has no input_mean)")
    classifier_lib.check_compatible(classifier_config, config)
    return classifier_lib.network_log_prob_fn(model, params, classifier_config), classifier_config


@dataclasses.dataclass(frozen=True)
class ClassGuidance:
    """How class-conditional samples of a score model are drawn: ``method`` 'classifier' (classifier guidance with
    a time-dependent classifier) or 'classifier-free' (guidance of a class-conditional network), over
    ``num_classes`` classes, with ``weight`` and (classifier-free only) ``interval``. ``guide(labels)`` is the
    guide `make_sample_fn`'s sample_fn takes for samples of the labels (B,)."""

    method: str
    num_classes: int
    weight: float
    interval: tuple[float, float] | None
    guide: Callable[[Any], Callable]

    def labels(self, spec, n: int, seed: int, shard: int) -> np.ndarray:
        """The labels (n,) of shard ``shard``'s samples: all ``spec`` (a class index, checked), or with
        spec 'random' each drawn uniformly from the classes by a generator seeded by (seed, shard)."""
        if isinstance(spec, str):
            if spec != "random":
                raise ValueError(f"a class label is a class index or 'random', got {spec!r}")
            return np.random.default_rng([seed, shard]).integers(0, self.num_classes, n).astype(np.int32)
        whose = "the classifier" if self.method == "classifier" else "the model"
        return np.full(n, check_labels([spec], self.num_classes, whose)[0], np.int32)


def class_guidance(config, *, classifier: str | None = None, weight=None, interval=None) -> ClassGuidance:
    """The class guidance of the score model of ``config``: classifier guidance with the classifier at
    ``classifier`` (a workdir or model checkpoint; ``weight`` default 1, the exact conditional), or, without one,
    classifier-free guidance of the class-conditional network (config.model.num_classes > 0; ``weight`` default 0,
    the conditional model exactly; ``interval`` (t_lo, t_hi) within [eps, T] where it applies)."""
    sde = sde_lib.get_sde(config)
    if classifier is not None:
        if interval is not None:
            raise ValueError("a guidance interval applies to classifier-free guidance, not to a classifier's")
        log_prob_fn, classifier_config = classifier_for(config, classifier)
        weight = 1.0 if weight is None else float(weight)

        def classifier_guide(labels):
            return lambda score_fn: classifier_guided(score_fn, log_prob_fn, labels, weight=weight)

        classes = int(classifier_config.model.num_classes)
        return ClassGuidance("classifier", classes, weight, None, classifier_guide)
    classes = models.num_classes(config, models.get_model(config))
    if not classes:
        raise ValueError(
            "class labels need a class-conditional model (config.model.num_classes > 0) or a classifier "
            "(--classifier); this model is unconditional"
        )
    weight = 0.0 if weight is None else float(weight)
    interval = None if interval is None else tuple(float(v) for v in interval)
    if interval is not None and len(interval) != 2:
        raise ValueError(f"a guidance interval is (t_lo, t_hi), got {interval}")
    # (built once with no labels: checks the weight and the interval before any sample is drawn)
    classifier_free_guided(lambda x, t, y: x, sde, [], num_classes=classes, weight=weight, interval=interval)

    def free_guide(labels):
        return lambda score_fn: classifier_free_guided(
            score_fn, sde, labels, num_classes=classes, weight=weight, interval=interval
        )

    return ClassGuidance("classifier-free", classes, weight, interval, free_guide)


def score_fn_for(config, model, params):
    """score_fn(x, t) of the network ``model`` with ``params``, as config.training and config.model.formulation
    trained it; score_fn(x, t, y) with class labels y for a class-conditional one (without: its null label)."""
    model_fn = score.get_model_fn(model, {"params": params})
    return score.get_score_fn(
        sde_lib.get_sde(config),
        model_fn,
        continuous=config.training.continuous,
        preconditioning=preconditioning_for(config),
    )


def make_sample_fn(config, model, *, num_samples: int, mesh=None):
    """``sample_fn(params, key, guide=None) -> (images in [0, 1] (num_samples, H, W, C), nfe)`` with
    config.sampling's sampler, the batch split over the devices of ``mesh`` (default: every device).
    ``guide(score_fn)``, if given, makes the score the sampler follows from the network's (e.g.
    conditional.classifier_guided, or conditional.classifier_free_guided of a class-conditional network); a guide
    of the same kind with other labels or weights reuses the compiled sampler. ``sample_fn.description`` names the
    sampler, its grid and steps."""
    mesh = parallel.data_mesh() if mesh is None else mesh
    parallel.check_batch_size(num_samples, mesh, "the number of samples per batch")
    shape = (num_samples, config.data.image_size, config.data.image_size, config.data.num_channels)
    sampling_fn = sampling.get_sampling_fn(
        config,
        sde_lib.get_sde(config),
        shape,
        data_lib.get_data_inverse_scaler(config),
        sharding=parallel.batch_sharding(mesh),
    )

    def sample_fn(params, key, guide: Callable | None = None):
        score_fn = score_fn_for(config, model, params)
        images, nfe = sampling_fn(key, score_fn if guide is None else guide(score_fn))
        return jnp.clip(images, 0.0, 1.0), nfe

    sample_fn.description = sampling_fn.description
    return sample_fn


def load_for_eval(model_path: str, overrides=()):
    """(network, EMA parameters, config, step) of a workdir or checkpoint (see checkpoints.load_model),
    with ``overrides`` ("a.b=value") applied to its saved config."""
    _, params_ema, config = ckpt_lib.load_model(model_path)
    config = with_checked_overrides(config, overrides)
    step = _checkpoint_step(model_path)
    return models.get_model(config), params_ema, config, step


# Keys added to the configs after checkpoints were first saved, with the value that configs without them meant.
LATER_KEYS = (("model", "formulation", "paper"), ("model", "num_classes", 0))


def with_later_keys(config):
    """A saved ``config`` with the `LATER_KEYS` it lacks added (in place), so that overrides can name them."""
    for group, key, value in LATER_KEYS:
        if key not in config[group]:
            config[group][key] = value
    return config


def with_checked_overrides(config, overrides=()):
    """A saved ``config`` (`with_later_keys`) with "a.b=value" ``overrides`` applied, refusing one that changes
    config.model.formulation: the network was trained in one formulation and means nothing in the other."""
    trained = formulation(with_later_keys(config))
    config = with_overrides(config, overrides)
    if formulation(config) != trained:
        raise ValueError(
            f"the model was trained with the {trained!r} formulation; it cannot be loaded with the "
            f"{formulation(config)!r} one (config.model.formulation)"
        )
    return config


def _checkpoint_step(model_path: str):
    """The training step of a workdir (its newest checkpoint) or of WORKDIR/<kind>/<step>; else None."""
    path = os.path.abspath(model_path)
    if os.path.isdir(os.path.join(path, ckpt_lib.PERIODIC)) or os.path.isdir(os.path.join(path, ckpt_lib.PREEMPTION)):
        steps = ckpt_lib.TrainCheckpoints(path).steps()
        return steps[0][0] if steps else None
    name = os.path.basename(path.rstrip(os.sep))
    return int(name) if name.isdigit() else None
