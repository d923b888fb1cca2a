"""The wiring of a config into the pieces: its network, SDE, score function, loss, sampler and random streams.

Everything a job (train, evaluate, sample, compare, the conditional tasks) builds from a config or a trained
model comes from here, so that every job builds it the same way:

    model, params, config, step = load_for_eval("runs/cifar10_ve")     # a workdir or a model checkpoint
    score_fn = score_fn_for(config, model, params)                     # score_fn(x, t)
    sample_fn = make_sample_fn(config, model, num_samples=64)          # config.sampling's sampler
    loss_fn = make_loss_fn(config, model, train=True)                  # config.training's loss
    log_prob_fn, _ = classifier_for(config, "runs/classifier")         # a trained classifier, for guidance
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from score_sde import checkpoints as ckpt_lib
from score_sde import data as data_lib
from score_sde import losses, models, parallel, sampling, score
from score_sde import sde as sde_lib
from score_sde.conditional import classifier as classifier_lib
from score_sde.config import with_overrides

# Independent random streams derived from config.seed.
INIT_STREAM, TRAIN_STREAM, EVAL_STREAM, SAMPLE_STREAM = range(4)


def stream_key(config, stream: int) -> jax.Array:
    return jax.random.fold_in(jax.random.PRNGKey(config.seed), stream)


# loss_fn(params, key, x) -> scalar loss of the batch x, its random draws from key (see `make_loss_fn`).
LossFn = Callable[[Any, jax.Array, jax.Array], jax.Array]


def make_loss_fn(config, model, *, train: bool) -> LossFn:
    """The score-matching loss of config.training (core's losses.py) for the Flax network ``model``; the
    network's output is cast to float32 (it may compute in bfloat16, config.model.dtype)."""
    loss = losses.get_loss_fn(
        sde_lib.get_sde(config),
        continuous=config.training.continuous,
        reduce_mean=config.training.reduce_mean,
        likelihood_weighting=config.training.likelihood_weighting,
    )

    def loss_fn(params, key, x):
        loss_key, dropout_key = jax.random.split(key)
        model_fn = score.get_model_fn(model, {"params": params}, train=train, dropout_key=dropout_key)
        return loss(lambda x, labels: model_fn(x, labels).astype(jnp.float32), loss_key, x)

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
    if "num_classes" not in classifier_config.model:
        raise ValueError(f"{classifier_path} is not a classifier (its config.model has no num_classes)")
    classifier_lib.check_compatible(classifier_config, config)
    return classifier_lib.network_log_prob_fn(model, params, classifier_config), classifier_config


def score_fn_for(config, model, params):
    """score_fn(x, t) of the network ``model`` with ``params``, as config.training trained it."""
    model_fn = score.get_model_fn(model, {"params": params})
    return score.get_score_fn(sde_lib.get_sde(config), model_fn, continuous=config.training.continuous)


def make_sample_fn(config, model, *, num_samples: int, mesh=None, guide: Callable | None = None):
    """``sample_fn(params, key) -> (images in [0, 1] (num_samples, H, W, C), nfe)`` with config.sampling's
    sampler, the batch split over the devices of ``mesh`` (default: every device). ``guide(score_fn)``, if
    given, makes the score the sampler follows (e.g. conditional.classifier_guided)."""
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

    def sample_fn(params, key):
        score_fn = score_fn_for(config, model, params)
        images, nfe = sampling_fn(key, score_fn if guide is None else guide(score_fn))
        return jnp.clip(images, 0.0, 1.0), nfe

    return sample_fn


def load_for_eval(model_path: str, overrides=()):
    """(network, EMA parameters, config, step) of a workdir or checkpoint (see checkpoints.load_model),
    with ``overrides`` ("a.b=value") applied to its saved config."""
    _, params_ema, config = ckpt_lib.load_model(model_path)
    config = with_overrides(config, overrides)
    step = _checkpoint_step(model_path)
    return models.get_model(config), params_ema, config, step


def _checkpoint_step(model_path: str):
    """The training step of a workdir (its newest checkpoint) or of WORKDIR/<kind>/<step>; else None."""
    path = os.path.abspath(model_path)
    if os.path.isdir(os.path.join(path, ckpt_lib.PERIODIC)) or os.path.isdir(os.path.join(path, ckpt_lib.PREEMPTION)):
        steps = ckpt_lib.TrainCheckpoints(path).steps()
        return steps[0][0] if steps else None
    name = os.path.basename(path.rstrip(os.sep))
    return int(name) if name.isdigit() else None
