"""Measurement operators against their dense matrices (adjoint, pseudo-inverse, Gram solves, projection), the
official decoupled colour basis, the inpainting masks, and the errors of operators a method cannot take."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from score_sde import analytic
from score_sde.conditional import (
    DECOUPLE,
    AveragePool,
    GaussianBlur,
    GreyScale,
    Mask,
    NoPseudoInverse,
    couple,
    decouple,
    dps,
    pigdm,
    replacement_sampler,
)
from score_sde.conditional.masks import MASKS
from score_sde.conditional.operators import matrix
from score_sde.sde import VPSDE

SHAPE = (4, 6, 3)
OPERATORS = {
    "mask": Mask.create((np.random.default_rng(0).random((1, *SHAPE)) < 0.4).astype(np.float32)),
    "grey": GreyScale(SHAPE),
    "pool2": AveragePool(SHAPE, 2),
    "blur": GaussianBlur(SHAPE, 0.8),
}
# float32 arithmetic on values of order 1 against float64 dense algebra.
TOL = dict(rtol=1e-5, atol=2e-6)


def _flat(a):
    return np.asarray(a, np.float64).reshape(a.shape[0], -1)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_operator_against_its_dense_matrix(name):
    op = OPERATORS[name]
    a = matrix(op)
    x = jax.random.normal(jax.random.key(0), (3, *SHAPE))
    y = op.A(x)
    np.testing.assert_allclose(_flat(y), _flat(x) @ a.T, **TOL)
    v = jax.random.normal(jax.random.key(1), y.shape)
    if name == "mask":
        v = op.A(v)  # its measurements live on the known pixels
    np.testing.assert_allclose(_flat(op.At(v)), _flat(v) @ a, **TOL)
    gram = 0.3 * a @ a.T + 0.05 * np.eye(len(a))
    got = _flat(op.gram_solve(v, 0.3, 0.05))
    np.testing.assert_allclose(got @ gram.T, _flat(v), **TOL)
    if op.has_pinv:
        np.testing.assert_allclose(_flat(op.pinv(y)), _flat(y) @ np.linalg.pinv(a).T, **TOL)
        p = op.project(x + 1.0, y)  # the nearest point of {A x' = y}: measures y, moved along A's rows only
        np.testing.assert_allclose(_flat(op.A(p)), _flat(y), **TOL)
        moved = _flat(p) - _flat(x + 1.0)
        np.testing.assert_allclose(moved, moved @ (np.linalg.pinv(a) @ a).T, **TOL)
    else:
        assert name == "blur"
        with pytest.raises(NoPseudoInverse, match="Gaussian blur operator has no pseudo-inverse"):
            op.pinv(y)


def test_mask_writes_known_pixels_exactly_and_measures_only_them():
    op = OPERATORS["mask"]
    x = jax.random.normal(jax.random.key(0), (2, *SHAPE))
    y = jax.random.normal(jax.random.key(1), (2, *SHAPE))
    p = np.asarray(op.project(x, y))
    known = np.broadcast_to(np.asarray(op.mask) > 0, p.shape)
    np.testing.assert_array_equal(p[known], np.asarray(y)[known])
    np.testing.assert_array_equal(p[~known], np.asarray(x)[~known])
    noisy = np.asarray(op.measure(jax.random.key(2), x, 0.1))
    assert np.all(noisy[~known] == 0) and np.std(noisy[known] - np.asarray(x)[known]) == pytest.approx(0.1, rel=0.2)


def test_decoupled_colour_basis_is_the_official_one():
    official = np.array(  # controllable_generation.py, get_pc_colorizer's M
        [
            [5.7735014e-01, -8.1649649e-01, 4.7008697e-08],
            [5.7735026e-01, 4.0824834e-01, 7.0710671e-01],
            [5.7735026e-01, 4.0824822e-01, -7.0710683e-01],
        ]
    )
    np.testing.assert_allclose(DECOUPLE, official, atol=2e-7)  # the official entries are rounded to float32
    np.testing.assert_allclose(DECOUPLE.T @ DECOUPLE, np.eye(3), atol=1e-15)
    x = jax.random.uniform(jax.random.key(0), (2, 4, 4, 3))
    np.testing.assert_allclose(couple(decouple(x)), x, atol=1e-6)
    grey = np.asarray(x).mean(-1, keepdims=True)
    np.testing.assert_allclose(decouple(x)[..., :1], np.sqrt(3) * grey, atol=1e-6)
    np.testing.assert_allclose(GreyScale((4, 4, 3)).A(x), grey, atol=1e-6)


def test_masks():
    shape = (3, 8, 8, 2)
    rng = np.random.default_rng(0)
    centre = MASKS.lookup("centre_box")(rng, shape)
    assert centre.shape == shape and centre.mean() == 0.75 and np.all(centre[:, 2:6, 2:6] == 0)
    boxes = MASKS.lookup("random_box")(rng, shape)
    assert np.all(boxes.mean(axis=(1, 2, 3)) == 0.75) and not np.array_equal(boxes[0], boxes[1])
    half = MASKS.lookup("half")(rng, shape)
    assert np.all(half[:, :, :4] == 1) and np.all(half[:, :, 4:] == 0)
    pixels = MASKS.lookup("random_pixels")(np.random.default_rng(1), (4, 32, 32, 3))
    assert np.all(pixels[..., :1] == pixels) and abs(pixels.mean() - 0.25) < 0.03  # 4096 pixels: sd 0.007
    with pytest.raises(ValueError, match="unknown mask 'box'"):
        MASKS.lookup("box")
    with pytest.raises(ValueError, match=r"image batches \(B, H, W, C\)"):
        MASKS.lookup("half")(rng, (8, 8, 2))


def test_errors_name_the_problem():
    sde = VPSDE(N=10)
    score_fn = analytic.score_fn(analytic.example_mixture(), sde)
    with pytest.raises(ValueError, match="only 0 .* and 1"):
        Mask.create(np.full((1, 4), 0.5))
    with pytest.raises(ValueError, match=r"grey-scale needs RGB images \(..., 3\), got examples of shape \(4, 4, 1\)"):
        GreyScale((4, 4, 1))
    with pytest.raises(ValueError, match="divisible by 4"):
        AveragePool((6, 6, 1), 4)
    pool = AveragePool((2, 2, 1), 2)
    with pytest.raises(
        ValueError, match=r"measurement y has shape \(3, 2, 2, 1\), but the average-pool operator gives"
    ):
        pigdm(score_fn, sde, pool, np.zeros((3, 2, 2, 1)), sigma_y=0.1)
    with pytest.raises(ValueError, match="dps needs the measurement noise sigma_y > 0"):
        dps(score_fn, sde, pool, np.zeros((3, 1, 1, 1)), sigma_y=0.0)
    blur = GaussianBlur((2, 2, 1), 1.0)
    with pytest.raises(NoPseudoInverse, match="pigdm without measurement noise .* Gaussian blur"):
        pigdm(score_fn, sde, blur, np.zeros((3, 2, 2, 1)), sigma_y=0.0)
    with pytest.raises(NoPseudoInverse, match="replacement method needs .* pseudo-inverse.*'dps' or 'pigdm'"):
        replacement_sampler(jax.random.key(0), score_fn, sde, blur, jnp.zeros((3, 2, 2, 1)))
    # A mask whose batch is neither the measurement's nor 1: named, with both shapes, by every method.
    mask = Mask.create(np.ones((5, 2, 2, 1)))
    message = r"the mask has shape \(5, 2, 2, 1\) and the measurement y \(8, 2, 2, 1\): their batches \(5, 8\)"
    for method in (
        lambda: replacement_sampler(jax.random.key(0), score_fn, sde, mask, jnp.zeros((8, 2, 2, 1))),
        lambda: pigdm(score_fn, sde, mask, np.zeros((8, 2, 2, 1)), sigma_y=0.0),
        lambda: dps(score_fn, sde, mask, np.zeros((8, 2, 2, 1)), sigma_y=0.1),
    ):
        with pytest.raises(ValueError, match=message):
            method()
    pigdm(score_fn, sde, Mask.create(np.ones((1, 2, 2, 1))), np.zeros((8, 2, 2, 1)), sigma_y=0.0)  # one for all
