"""Sources against known contents: files the tests write (PNG folders and zips, npz, TFRecords), the
scikit-learn digits, tensorflow-datasets' mock data, and the real MNIST / Fashion-MNIST / CIFAR-10 copies
in ../shared/data (skipped when absent)."""

import struct
import zipfile

import numpy as np
import pytest
from PIL import Image

from score_sde import data
from score_sde.data import images as imagelib

from support import SHARED_DATA, data_config, needs_shared


def _all(source):
    return np.stack([source[i][0] for i in range(len(source))]), np.array([source[i][1] for i in range(len(source))])


def test_digits_are_sklearn_digits_on_17_grey_levels():
    from sklearn.datasets import load_digits

    digits = load_digits()
    train = data.get_source(data_config("digits", 8, 1), "train")
    test = data.get_source(data_config("digits", 8, 1), "test")
    assert (len(train), len(test)) == (1500, 297)
    x, y = _all(train)
    np.testing.assert_array_equal(x[..., 0], np.round(digits.images[:1500] * 255 / 16))
    np.testing.assert_array_equal(y, digits.target[:1500])
    np.testing.assert_array_equal(_all(test)[1], digits.target[1500:])
    assert train.num_classes == test.num_classes == 10
    assert set(np.unique(x)) <= {round(v * 255 / 16) for v in range(17)} and x.max() == 255
    # Resized to 16x16 (bilinear): a resize keeps the mean grey level to within a fraction of a level.
    big = _all(data.get_source(data_config("digits", 16, 1), "train"))[0]
    assert big.shape == (1500, 16, 16, 1)
    assert abs(big.astype(float).mean() - x.astype(float).mean()) < 1.0


def _random_images(n, h, w, c, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def test_npz_source_reads_arrays_as_stored(tmp_path):
    x_train, x_test = _random_images(6, 5, 5, 3), _random_images(4, 5, 5, 3, seed=1)
    np.savez(tmp_path / "split.npz", x_train=x_train, y_train=np.arange(6) % 3, x_test=x_test, y_test=np.arange(4))
    config = data_config("npz", 5, 3, path=str(tmp_path / "split.npz"))
    for split, x, y in (("train", x_train, np.arange(6) % 3), ("test", x_test, np.arange(4))):
        source = data.get_source(config, split)
        got_x, got_y = _all(source)
        np.testing.assert_array_equal(got_x, x)
        np.testing.assert_array_equal(got_y, y)
        assert source.num_classes == y.max() + 1  # the classes its labels reach
    # images / labels: one array for every split; NHW greyscale gets its channel axis; no labels -> 0.
    grey = _random_images(3, 5, 5, 1)[..., 0]
    np.savez(tmp_path / "one.npz", images=grey)
    unlabelled = data.get_source(data_config("npz", 5, 1, path=str(tmp_path / "one.npz")), "test")
    got_x, got_y = _all(unlabelled)
    np.testing.assert_array_equal(got_x[..., 0], grey)
    np.testing.assert_array_equal(got_y, 0)
    assert unlabelled.num_classes == 0


def _write_pngs(root, images, names):
    for image, name in zip(images, names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / name)


def test_folder_source_orders_files_labels_classes_and_reads_zips(tmp_path):
    images = _random_images(5, 6, 6, 3)
    names = ["train/dog/b.png", "train/cat/10.png", "train/cat/2.png", "train/dog/a.png", "test/cat/0.png"]
    _write_pngs(tmp_path / "imgs", images, names)
    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as archive:
        for name in names:
            archive.write(tmp_path / "imgs" / name, name)
    # Sorted paths: cat/10, cat/2, dog/a, dog/b; labels: cat 0, dog 1.
    order, labels = [1, 2, 3, 0], [0, 0, 1, 1]
    for path in (tmp_path / "imgs", tmp_path / "imgs.zip"):
        source = data.get_source(data_config("folder", 6, 3, path=str(path)), "train")
        x, y = _all(source)
        np.testing.assert_array_equal(x, images[order])
        np.testing.assert_array_equal(y, labels)
        assert source.class_names == ["cat", "dog"] and source.num_classes == 2
        np.testing.assert_array_equal(
            _all(data.get_source(data_config("folder", 6, 3, path=str(path)), "test"))[0], images[4:]
        )
    # No split folders, no class folders: every split reads everything, labels 0. A 10x6 image keeps its
    # centred 6x6 square (rows 2..7), exactly, at image_size 6; greyscale conversion is Pillow's L.
    tall = _random_images(1, 10, 6, 3)[0]
    _write_pngs(tmp_path / "flat", [tall], ["x.png"])
    flat = data.get_source(data_config("folder", 6, 3, path=str(tmp_path / "flat")), "test")
    x, y = _all(flat)
    np.testing.assert_array_equal(x[0], tall[2:8])
    assert y.tolist() == [0] and flat.num_classes == 0
    grey = data.get_source(data_config("folder", 6, 1, path=str(tmp_path / "flat")), "train")[0][0]
    np.testing.assert_array_equal(grey[..., 0], np.asarray(Image.fromarray(tall[2:8]).convert("L")))


def _write_tfrecords(path, chw_images):
    """The official FFHQ / CelebA-HQ layout: an Example per image with 'shape' (C, H, W) and raw 'data'."""
    from tensorflow_datasets.proto import tf_example_pb2

    with open(path, "wb") as f:
        for image in chw_images:
            example = tf_example_pb2.Example()
            example.features.feature["shape"].int64_list.value.extend(image.shape)
            example.features.feature["data"].bytes_list.value.append(image.tobytes())
            record = example.SerializeToString()
            f.write(struct.pack("<Q", len(record)) + b"\0" * 4 + record + b"\0" * 4)  # CRCs are not read


def test_tfrecords_source_reads_the_official_ffhq_layout(tmp_path):
    hwc = _random_images(3, 8, 8, 3)
    _write_tfrecords(tmp_path / "ffhq-r03.tfrecords", hwc.transpose(0, 3, 1, 2))
    for dataset in ("FFHQ", "CelebAHQ"):
        config = data_config(dataset, 8, 3, tfrecords_path=str(tmp_path / "ffhq-r03.tfrecords"))
        source = data.get_source(config, "test")
        x, y = _all(source)
        np.testing.assert_array_equal(x, hwc)
        np.testing.assert_array_equal(y, 0)
        assert source.num_classes == 0


def test_tfds_sources_through_mock_data():
    """tensorflow-datasets' mock data stands in for prepared array_record files (no download here)."""
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        raw = tfds.data_source("cifar10", split="test")
        cifar10 = data.get_source(data_config("CIFAR10", 32, 3), "test")
        x, y = _all(cifar10)
        assert cifar10.num_classes == 10
        np.testing.assert_array_equal(x, np.stack([raw[i]["image"] for i in range(6)]))
        np.testing.assert_array_equal(y, [raw[i]["label"] for i in range(6)])
        # CelebA: centre 140x140 crop of the 218x178 image (rows 39.., columns 19..), then resized.
        raw = tfds.data_source("celeb_a", split="validation")
        celeba = data.get_source(data_config("CELEBA", 64, 3), "test")
        x, _ = _all(celeba)
        assert celeba.num_classes == 0  # attributes, no class label
        for i in range(6):
            crop = raw[i]["image"][39:179, 19:159]
            expected = np.asarray(Image.fromarray(crop).resize((64, 64), Image.Resampling.BILINEAR))
            np.testing.assert_array_equal(x[i], expected)
        for size in (128, 32):  # LSUN's two official paths: resize_small + crop, and crop_resize
            source = data.get_source(data_config("LSUN", size, 3, category="bedroom"), "train")
            assert source[0][0].shape == (size, size, 3)
        assert data.get_source(data_config("MNIST", 28, 1), "train")[0][0].shape == (28, 28, 1)
        # The official names and evaluation splits.
        for dataset, split, name in [
            ("CIFAR10", "test", "cifar10"),
            ("SVHN", "test", "svhn_cropped"),
            ("CELEBA", "validation", "celeb_a"),
            ("LSUN", "validation", "lsun/church_outdoor"),
            ("MNIST", "test", "mnist"),
            ("FashionMNIST", "test", "fashion_mnist"),
        ]:
            size, channels = (28, 1) if "MNIST" in dataset else (32, 3)
            source = data.get_source(data_config(dataset, size, channels, category="church_outdoor"), "test")
            assert (source.name, source.split) == (name, split)


def test_official_crops():
    image = np.arange(10 * 7 * 1, dtype=np.uint8).reshape(10, 7, 1)
    np.testing.assert_array_equal(imagelib.central_crop(image, 4), image[3:7, 1:5])
    assert imagelib.resize_small(np.zeros((30, 20, 3), np.uint8), 8).shape == (12, 8, 3)
    np.testing.assert_array_equal(imagelib.crop_resize(image, 7), image[1:8])


@needs_shared("mnist/mnist_reconstructed.npz")
def test_mnist_from_shared_data_has_the_known_pixel_mean():
    """The MNIST train pixel mean is 0.1307 (std 0.3081), to the 4 digits it is always quoted with."""
    config = data_config("MNIST", 28, 1, path=str(SHARED_DATA / "mnist" / "mnist_reconstructed.npz"))
    source = data.get_source(config, "train")
    assert len(source) == 60000 and len(data.get_source(config, "test")) == 10000
    total, count = 0.0, 0
    for batch in data.eval_batches(source, 10000, config):  # x = p / 255 through the evaluation pass
        total += batch["image"][batch["mask"]].astype(np.float64).sum()
        count += batch["image"][batch["mask"]].size
    assert abs(total / count - 0.1307) < 5e-5
    assert np.bincount(source.labels)[:2].tolist() == [5923, 6742]


@needs_shared("fashion-mnist")
def test_fashion_mnist_idx_files_from_shared_data():
    config = data_config("FashionMNIST", 28, 1, path=str(SHARED_DATA / "fashion-mnist"))
    source = data.get_source(config, "train")
    assert abs(source.images.mean() / 255 - 0.2860) < 5e-5
    assert np.bincount(source.labels).tolist() == [6000] * 10
    assert np.bincount(data.get_source(config, "test").labels).tolist() == [1000] * 10


CIFAR_ZIP = SHARED_DATA / "cifar10" / "YoongiKim_CIFAR-10-images_jpg.zip"
CIFAR_NPZ = SHARED_DATA / "cifar10" / "cifar10_labels_and_exact_subset.npz"


@needs_shared("cifar10/YoongiKim_CIFAR-10-images_jpg.zip", "cifar10/cifar10_labels_and_exact_subset.npz")
def test_cifar10_jpeg_zip_as_a_folder_source():
    """train/<class>/NNNN.jpg is the NNNN-th image of that class in official order. Sorted class names are
    the official label order, so labels come out right; 40 JPEGs against the exact pixels: PSNR about
    30 dB when aligned, about 9 dB when off by one image, so a 25 dB threshold tells them apart."""
    source = data.get_source(data_config("folder", 32, 3, path=str(CIFAR_ZIP)), "train")
    assert len(source) == 50000
    exact = np.load(CIFAR_NPZ)
    y_train, x_exact, index_exact = exact["y_train"], exact["x_train_exact"], exact["train_exact_index"]
    np.testing.assert_array_equal(np.bincount(source.labels), [5000] * 10)
    errors = []
    for c in range(10):
        official = np.flatnonzero(y_train == c)  # official index of the n-th image of class c
        for n in range(4):
            k = int(np.searchsorted(index_exact, official[n]))
            assert index_exact[k] == official[n]  # the first images of each class are among the exact ones
            image, label = source[5000 * c + n]
            assert label == c
            errors.append(np.mean((image.astype(float) - x_exact[k]) ** 2))
    assert 10 * np.log10(255**2 / np.mean(errors)) > 25
