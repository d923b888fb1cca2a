"""Training batches and the evaluation pass: determinism in (seed, step), independence of the number of
processes, resumption, epochs as permutations, pixel scaling, flips and dequantisation, one exact pass.

The source is synthetic: example i is labelled i, so every row of a batch says which example it holds.
"""

import ml_collections
import numpy as np
import pytest

from score_sde import data

N, SIZE = 37, 4  # 37 examples: not a multiple of any batch size used here


def _source(n=N, size=SIZE):
    """Example i: label i; pixels a fixed random uint8 image whose rows are not mirror-symmetric."""
    rng = np.random.default_rng(1234)
    images = rng.integers(0, 256, (n, size, size, 1), dtype=np.uint8)
    return data.ArraySource(images, np.arange(n))


def _config(seed=3, batch_size=8, flip=True, dequantize=True, centered=True):
    return ml_collections.ConfigDict(
        dict(
            seed=seed,
            training=dict(batch_size=batch_size),
            data=dict(
                dataset="npz",
                image_size=SIZE,
                num_channels=1,
                centered=centered,
                random_flip=flip,
                uniform_dequantization=dequantize,
            ),
        )
    )


def _take(iterator, k):
    return [next(iterator) for _ in range(k)]


def test_batches_depend_on_seed_and_step_only_and_not_on_process_count():
    source, config = _source(), _config()
    steps = [0, 1, 4, 5, 9, 1000]  # 4 and 5 straddle the first epoch boundary (37 / 8)
    whole = data.train_dataset(source, config, process_index=0, process_count=1, num_devices=1)
    again = data.train_dataset(_source(), _config(), process_index=0, process_count=1, num_devices=1)
    for s in steps:
        np.testing.assert_array_equal(whole[s]["image"], again[s]["image"])
        np.testing.assert_array_equal(whole[s]["label"], again[s]["label"])
    for count in (2, 4, 8):
        parts = [
            data.train_dataset(source, config, process_index=p, process_count=count, num_devices=8)
            for p in range(count)
        ]
        for s in steps:
            for key in ("image", "label"):
                np.testing.assert_array_equal(np.concatenate([part[s][key] for part in parts]), whole[s][key])
    other = data.train_dataset(source, _config(seed=4), process_index=0, process_count=1, num_devices=1)
    assert not np.array_equal(other[0]["label"], whole[0]["label"])
    # The noise of a row changes from step to step (it is keyed by the step, not only by the row).
    u0, u1 = ((whole[s]["image"][0] + 1) * 128 % 1 for s in (0, 1))
    assert not np.array_equal(u0, u1)


def test_each_epoch_is_a_new_permutation_of_the_source():
    source = _source()
    ds = data.train_dataset(source, _config(), process_index=0, process_count=1, num_devices=1)
    labels = np.concatenate([ds[s]["label"] for s in range(3 * N // 8 + 1)])  # 3 epochs of 37 and more
    epochs = [labels[e * N : (e + 1) * N] for e in range(3)]
    for epoch in epochs:
        np.testing.assert_array_equal(np.sort(epoch), np.arange(N))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    assert not np.array_equal(epochs[0], np.arange(N))


def test_resuming_at_any_step_gives_the_tail_of_an_uninterrupted_run():
    source, config = _source(), _config()
    kwargs = dict(process_index=1, process_count=2, num_devices=2)
    run = _take(data.train_batches(source, config, **kwargs), 12)  # prefetching: 2 threads, 2 ahead
    plain = _take(data.train_batches(source, config, prefetch=0, **kwargs), 12)
    for a, b in zip(run, plain):
        np.testing.assert_array_equal(a["image"], b["image"])
    for start in (1, 5, 11):
        resumed = _take(data.train_batches(source, config, start_step=start, **kwargs), 12 - start)
        for a, b in zip(run[start:], resumed):
            np.testing.assert_array_equal(a["image"], b["image"])
            np.testing.assert_array_equal(a["label"], b["label"])
    # Blocks of n_steps consecutive steps, for a scan over steps inside one jitted call.
    blocks = _take(data.train_batches(source, config, start_step=3, n_steps=4, **kwargs), 2)
    assert blocks[0]["image"].shape == (4, 4, SIZE, SIZE, 1) and blocks[0]["label"].shape == (4, 4)
    for k, block in enumerate(blocks):
        np.testing.assert_array_equal(block["image"], np.stack([b["image"] for b in run[3 + 4 * k : 7 + 4 * k]]))


def test_pixel_scaling_and_the_inverse_scaler():
    source = _source()
    pixels = np.stack([source[i][0] for i in range(N)]).astype(np.float64)
    for centered in (False, True):
        config = _config(flip=False, dequantize=False, centered=centered)
        batch = data.train_dataset(source, config, process_index=0, process_count=1, num_devices=1)[0]
        expected = pixels[batch["label"]] / 255.0
        # float32 round-off of p / 255 (and of 2x - 1): a few ulp of 1.
        x = data.get_data_inverse_scaler(config)(batch["image"].astype(np.float64))
        np.testing.assert_allclose(x, expected, atol=3e-7, rtol=0)
        np.testing.assert_allclose(data.get_data_scaler(config)(expected), batch["image"], atol=3e-7, rtol=0)
        assert batch["image"].dtype == np.float32 and batch["label"].dtype == np.int32
        lo, hi = (-1.0, 1.0) if centered else (0.0, 1.0)
        assert batch["image"].min() >= lo and batch["image"].max() <= hi


def test_flip_and_dequantisation_statistics():
    """3000 rows x 16 pixels. A row is flipped iff it equals its source image mirrored (rows are not
    mirror-symmetric). Flip rate: binomial sd sqrt(0.25 / 3000) = 0.009, tolerance 0.04 (4.4 sd).
    Noise u = 256 x - pixel: exactly in [0, 1); mean 1/2 and variance 1/12 over 48,000 values have sd
    0.0013 and 0.0007, tolerances 0.006 and 0.003 (about 4.5 sd); its correlation between a pixel and
    the next has sd 1/sqrt(48000) = 0.0046, tolerance 0.02."""
    source = _source()
    config = _config(batch_size=100, centered=False)
    ds = data.train_dataset(source, config, process_index=0, process_count=1, num_devices=1)
    batches = [ds[s] for s in range(30)]
    x = np.concatenate([b["image"] for b in batches]).astype(np.float64)
    labels = np.concatenate([b["label"] for b in batches])
    pixels = np.stack([source[i][0] for i in labels]).astype(np.float64)
    floor = np.floor(256 * x)
    flipped = np.all(floor == pixels[:, :, ::-1], axis=(1, 2, 3))
    kept = np.all(floor == pixels, axis=(1, 2, 3))
    assert np.all(flipped ^ kept)  # each row is its image, flipped or not, to the grey level
    assert abs(flipped.mean() - 0.5) < 0.04
    reference = np.where(flipped[:, None, None, None], pixels[:, :, ::-1], pixels)
    u = (256 * x - reference).ravel()
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.006 and abs(u.var() - 1 / 12) < 0.003
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.02
    # Flips do not depend on whether dequantisation is on: the coin is the first draw of the same stream.
    plain = data.train_dataset(
        source,
        _config(batch_size=100, centered=False, dequantize=False),
        process_index=0,
        process_count=1,
        num_devices=1,
    )
    np.testing.assert_array_equal(np.round(plain[0]["image"] * 255), floor[:100])


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_pass_sees_every_example_once_in_order(process_count):
    source, config = _source(), _config()
    batch_size = 8  # 37 = 4 * 8 + 5: the last batch is padded with 3 masked rows
    pixels = np.stack([source[i][0] for i in range(N)])  # uint8
    runs = {}
    for mode in ("float", "uint8", "dequantize"):
        parts = [
            list(
                data.eval_batches(
                    source,
                    batch_size,
                    config,
                    process_index=p,
                    process_count=process_count,
                    uint8=mode == "uint8",
                    dequantize=mode == "dequantize",
                )
            )
            for p in range(process_count)
        ]
        assert all(len(p) == 5 for p in parts)
        runs[mode] = {
            key: np.concatenate([np.concatenate([p[i][key] for p in parts]) for i in range(5)])
            for key in ("image", "label", "mask")
        }
    for run in runs.values():
        np.testing.assert_array_equal(run["mask"], np.arange(40) < N)
        np.testing.assert_array_equal(run["label"], np.where(np.arange(40) < N, np.arange(40), 0))
        assert not run["image"][N:].any()
    np.testing.assert_array_equal(runs["uint8"]["image"][:N], pixels)
    assert runs["uint8"]["image"].dtype == np.uint8
    # centered: x = 2 p / 255 - 1, to float32 round-off.
    np.testing.assert_allclose(runs["float"]["image"][:N], 2 * pixels.astype(np.float64) / 255.0 - 1, atol=3e-7, rtol=0)
    deq = (runs["dequantize"]["image"][:N].astype(np.float64) + 1) / 2
    np.testing.assert_array_equal(np.floor(256 * deq), pixels)
    again = list(data.eval_batches(source, batch_size, config, dequantize=True, process_index=0, process_count=1))
    np.testing.assert_array_equal(np.concatenate([b["image"] for b in again])[:N], runs["dequantize"]["image"][:N])
    other = list(
        data.eval_batches(source, batch_size, config, dequantize=True, repeat=1, process_count=1, process_index=0)
    )
    other = (np.concatenate([b["image"] for b in other])[:N].astype(np.float64) + 1) / 2
    np.testing.assert_array_equal(np.floor(256 * other), pixels)  # a new repeat: the same pixels, new noise
    assert np.mean(other == deq) < 0.01
