"""Each malformed input gets an error that names the path, key or dataset and what was expected."""

import re

import numpy as np
import pytest
from PIL import Image

from score_sde import data

from support import data_config


@pytest.mark.parametrize(
    "dataset,field",
    [("folder", "path"), ("npz", "path"), ("MNIST", "path"), ("FashionMNIST", "path"), ("FFHQ", "tfrecords_path")],
)
def test_missing_path(tmp_path, dataset, field):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=rf"config\.data\.{field}.*{re.escape(str(missing))}"):
        data.get_source(data_config(dataset, **{field: str(missing)}), "train")


def test_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=rf"no image files \(\.png, \.jpg.*under {re.escape(str(tmp_path))}"):
        data.get_source(data_config("folder", path=str(tmp_path)), "train")


def test_corrupt_image_names_the_file(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    config = data_config("folder", path=str(tmp_path))
    source = data.get_source(config, "train")  # the first image is fine; files are decoded when read
    with pytest.raises(ValueError, match=rf"cannot read image file {re.escape(str(tmp_path / 'b.png'))}"):
        source[1]
    # The same error reaches the caller of the training iterator, from the thread that decoded it.
    with pytest.raises(ValueError, match=r"cannot read image file .*b\.png"):
        next(data.train_batches(source, config, batch_size=2, num_devices=1, process_count=1, process_index=0))


def test_npz_without_the_expected_keys(tmp_path):
    np.savez(tmp_path / "d.npz", pictures=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"no key 'x_train' nor 'images' \(it has \['pictures'\]\)"):
        data.get_source(data_config("npz", path=str(tmp_path / "d.npz")), "train")


@pytest.mark.parametrize(
    "images,complaint",
    [
        (np.zeros((2, 4, 4), np.float32), r"\['images'\] must be uint8 .* got float32 of shape \(2, 4, 4\)"),
        (
            np.zeros((2, 16), np.uint8),
            r"\['images'\] must be uint8 of shape \(N, H, W, C\) or \(N, H, W\); got uint8 of shape \(2, 16\)",
        ),
    ],
)
def test_npz_with_wrong_dtype_or_shape(tmp_path, images, complaint):
    np.savez(tmp_path / "d.npz", images=images)
    with pytest.raises(ValueError, match=complaint):
        data.get_source(data_config("npz", path=str(tmp_path / "d.npz")), "train")


def test_npz_labels_of_the_wrong_length(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((2, 4, 4), np.uint8), y_train=np.zeros(3, np.int64))
    message = r"\['y_train'\] must be non-negative integers of shape \(2,\); got int64 of shape \(3,\)"
    with pytest.raises(ValueError, match=message):
        data.get_source(data_config("npz", path=str(tmp_path / "d.npz")), "train")


def test_image_size_or_channels_mismatch(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"images of shape \(8, 8, 3\).*image_size=4.*num_channels=1"):
        data.get_source(data_config("npz", path=str(tmp_path / "d.npz")), "train")
    with pytest.raises(
        ValueError,
        match=r"'digits' split 'train' gives uint8 images of shape \(4, 4, 1\), but "
        r"the config asks for uint8 \(4, 4, 3\)",
    ):
        data.get_source(data_config("digits", num_channels=3), "train")


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(
        ValueError,
        match=r"unknown config\.data\.dataset 'cifar'; known datasets: CIFAR10, SVHN, "
        r"CELEBA, LSUN, FFHQ, CelebAHQ, digits, MNIST, FashionMNIST, folder, npz",
    ):
        data.get_source(data_config("cifar"), "train")


def test_tfds_dataset_not_prepared(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match=rf"'cifar10' \(split 'test'\) is not prepared .* under data_dir "
        rf"'{re.escape(str(tmp_path))}'.*tfds build cifar10 --data_dir "
        rf"{re.escape(str(tmp_path))} --file_format array_record",
    ):
        data.get_source(data_config("CIFAR10", 32, 3, tfds_data_dir=str(tmp_path)), "test")


def test_batch_not_divisible_by_processes_or_devices():
    source, config = data.ArraySource(np.zeros((5, 4, 4, 1), np.uint8), np.zeros(5)), data_config("npz")
    with pytest.raises(ValueError, match=r"batch size 10 is not divisible by the number of processes 4"):
        data.train_dataset(source, config, batch_size=10, process_index=0, process_count=4, num_devices=1)
    with pytest.raises(ValueError, match=r"batch size 12 is not divisible by the number of devices 8"):
        data.train_dataset(source, config, batch_size=12, process_index=0, process_count=1, num_devices=8)
    with pytest.raises(ValueError, match=r"batch size 10 is not divisible by the number of processes 3"):
        data.eval_dataset(source, 10, config, process_index=0, process_count=3)
