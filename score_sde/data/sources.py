"""Random-access sources of uint8 images, one per dataset and split.

A source is any sequence with `len(source)` and `source[i] -> (image, label)`: image uint8
(image_size, image_size, num_channels), label a Python int (0 where the dataset has no labels), and
`source.num_classes`, the number of classes its labels index (0 where it has none).
`get_source(config, split)` builds the one `config.data` names; split is 'train' or 'test', and 'test'
means the split the official code evaluates on (CIFAR-10/SVHN 'test', CelebA/LSUN 'validation',
FFHQ/CelebA-HQ 'train', which is all they have).
"""

from __future__ import annotations

import gzip
import io
import os
import pathlib
import struct
import threading
import zipfile
from collections.abc import Callable
from typing import Protocol

import numpy as np
from PIL import Image

from score_sde.data import images as imagelib

SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class ImageSource(Protocol):
    """What the pipeline reads: `len(source)` examples, `source[i] -> (uint8 (H, W, C), int label)`, and
    `num_classes` (0: an unlabelled dataset, whose labels are all 0)."""

    num_classes: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]: ...


class ArraySource:
    """Images held in memory: images uint8 (N, H, W, C), labels int (N,) of ``num_classes`` classes (0: none)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: int = 0):
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int32)
        self.num_classes = int(num_classes)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return self.images[index], int(self.labels[index])


# ----------------------------------------------------------------------------- files of images


class FolderSource:
    """Image files (PNG, JPEG, ...) under a folder or inside a .zip, decoded on access.

    Files are taken in sorted order of their path (relative to the split's folder), so the order does not
    depend on the file system. A file inside a sub-folder is labelled with the index of that first-level
    sub-folder's name among the sorted names (the ImageFolder convention); with no sub-folders every label
    is 0. Each image is converted to num_channels (L or RGB), its largest centred square is kept, and it is
    resized bicubically to image_size (a no-op for images already image_size x image_size).
    """

    def __init__(
        self,
        path: pathlib.Path,
        names: list[str],
        labels: list[int],
        image_size: int,
        num_channels: int,
        class_names: list[str],
    ):
        self.path = path
        self.names = names
        self.labels = labels
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.image_size = image_size
        self.num_channels = num_channels
        self._in_zip = not path.is_dir()
        self._local = threading.local()  # one open ZipFile per thread: decoding then runs in parallel

    def __len__(self) -> int:
        return len(self.names)

    def _read_bytes(self, name: str) -> bytes:
        if not self._in_zip:
            return (self.path / name).read_bytes()
        archive = getattr(self._local, "zip", None)
        if archive is None:
            archive = self._local.zip = zipfile.ZipFile(self.path)
        return archive.read(name)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        name = self.names[index]
        where = f"{self.path}:{name}" if self._in_zip else self.path / name
        try:
            with Image.open(io.BytesIO(self._read_bytes(name))) as image:
                array = imagelib.from_pil(image, self.num_channels)
        except (OSError, SyntaxError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"cannot read image file {where}: {e}") from e
        return imagelib.crop_resize(array, self.image_size), self.labels[index]

    def __getstate__(self):  # picklable for worker processes: the ZipFile handles stay behind
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state):
        self.__dict__.update(state, _local=threading.local())


_SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val", "validation")}


def folder_source(path: str | os.PathLike, split: str, image_size: int, num_channels: int) -> FolderSource:
    """A FolderSource over `path`: a folder, or a .zip read in place.

    If the top level holds split folders ('train', and 'test' / 'val' / 'validation'), the split's folder
    is used (and must exist); otherwise every split reads the whole folder.
    """
    root = pathlib.Path(path)
    if not root.exists():
        raise FileNotFoundError(f"config.data.path: no such folder or .zip file: {root}")
    if root.is_dir():
        files = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    elif zipfile.is_zipfile(root):
        with zipfile.ZipFile(root) as archive:
            files = [n for n in archive.namelist() if not n.endswith("/")]
    else:
        raise ValueError(f"config.data.path for dataset 'folder' must be a folder or a .zip file: {root}")
    # Image files only; hidden ones (".*", and macOS's "__MACOSX/" copies in zips) are not images.
    files = sorted(
        f
        for f in files
        if pathlib.PurePosixPath(f).suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") or part == "__MACOSX" for part in f.split("/"))
    )

    tops = {f.split("/", 1)[0] for f in files if "/" in f}
    split_tops = tops & {name for names in _SPLIT_FOLDERS.values() for name in names}
    prefix = ""
    if split_tops:
        found = [name for name in _SPLIT_FOLDERS[split] if name in split_tops]
        if not found:
            raise FileNotFoundError(
                f"{root} has split folders {sorted(split_tops)} but none for split {split!r} "
                f"(expected one of {list(_SPLIT_FOLDERS[split])})"
            )
        prefix = found[0] + "/"
    files = [f[len(prefix) :] for f in files if f.startswith(prefix)]
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {root}/{prefix}")

    nested = ["/" in f for f in files]
    if any(nested) and not all(nested):
        loose = files[nested.index(False)]
        raise ValueError(
            f"{root}/{prefix} mixes images at its top level ({loose}) with images in class "
            "sub-folders; put every image in a class sub-folder, or none"
        )
    class_names = sorted({f.split("/", 1)[0] for f in files}) if all(nested) else []
    index = {name: i for i, name in enumerate(class_names)}
    labels = [index[f.split("/", 1)[0]] if class_names else 0 for f in files]
    return FolderSource(root, [prefix + f for f in files], labels, image_size, num_channels, class_names)


# ----------------------------------------------------------------------------- arrays in files


def load_npz(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Images and labels of one split from an .npz file.

    Keys: `x_train`, `x_test` (and optional `y_train`, `y_test`), or `images` (and optional `labels`)
    read for every split. Images must be uint8 (N, H, W, C) or (N, H, W); labels non-negative integers
    (N,). Returns images as uint8 (N, H, W, C) and labels int32 (N,), or None where the file has none.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config.data.path: no such .npz file: {path}")
    with np.load(path, allow_pickle=False) as arrays:
        keys = set(arrays.files)
        x_key, y_key = (f"x_{split}", f"y_{split}") if f"x_{split}" in keys else ("images", "labels")
        if x_key not in keys:
            raise ValueError(
                f"{path} has no key 'x_{split}' nor 'images' (it has {sorted(keys)}); "
                "expected x_train / x_test (+ y_train / y_test) or images (+ labels)"
            )
        images = arrays[x_key]
        if y_key not in keys:
            return _as_nhwc(images, path, x_key), None
        labels = arrays[y_key]
    images = _as_nhwc(images, path, x_key)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
        raise ValueError(
            f"{path}['{y_key}'] must be non-negative integers of shape ({len(images)},); got {labels.dtype} of "
            f"shape {labels.shape}"
        )
    return images, labels.astype(np.int32)


def _as_nhwc(images: np.ndarray, path, key: str) -> np.ndarray:
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(
            f"{path}['{key}'] must be uint8 of shape (N, H, W, C) or (N, H, W); "
            f"got {images.dtype} of shape {images.shape}"
        )
    return images[..., None] if images.ndim == 3 else images


def _read_idx(path: pathlib.Path) -> np.ndarray:
    """An IDX file (the MNIST format), optionally gzipped, as a uint8 array."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (header {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_idx_folder(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST / Fashion-MNIST from a folder holding the four IDX files under their usual names
    ({train,t10k}-{images-idx3,labels-idx1}-ubyte, optionally .gz). Returns uint8 (N, 28, 28, 1), int32 (N,)."""
    prefix = {"train": "train", "test": "t10k"}[split]
    found = []
    for kind in ("images-idx3", "labels-idx1"):
        candidates = [pathlib.Path(path) / f"{prefix}-{kind}-ubyte{gz}" for gz in ("", ".gz")]
        existing = [c for c in candidates if c.is_file()]
        if not existing:
            raise FileNotFoundError(
                f"config.data.path: {path} has no {candidates[0].name}[.gz] (a folder of "
                "IDX files is expected here; for arrays, give the .npz file itself)"
            )
        found.append(_read_idx(existing[0]))
    return found[0][..., None], found[1].astype(np.int32)


# ----------------------------------------------------------------------------- TFRecords (FFHQ, CelebA-HQ)


class TFRecordSource:
    """Images in a TFRecord file as the official FFHQ / CelebA-HQ code reads them: each record a
    tf.train.Example with 'shape' = (C, H, W) int64 and 'data' = the raw uint8 bytes in that (CHW) order.

    TensorFlow is not needed: the record offsets are indexed once (reading only the 12-byte headers) and
    each record is parsed with tensorflow-datasets' own copy of the Example proto. CRCs are not checked.
    Labels are 0.
    """

    num_classes = 0  # FFHQ and CelebA-HQ have no labels

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"config.data.tfrecords_path: no such TFRecord file: {self.path}")
        self.offsets, self.lengths = [], []
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            offset = 0
            while offset < size:
                header = f.read(12)
                if len(header) < 12:
                    raise ValueError(f"{self.path}: truncated TFRecord header at byte {offset}")
                (length,) = struct.unpack("<Q", header[:8])
                if offset + 12 + length + 4 > size:
                    raise ValueError(
                        f"{self.path}: truncated TFRecord at byte {offset} (record of {length} bytes, file of {size})"
                    )
                self.offsets.append(offset + 12)
                self.lengths.append(length)
                offset += 12 + length + 4
                f.seek(offset)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        from tensorflow_datasets.proto import tf_example_pb2

        with open(self.path, "rb") as f:  # a file per read: safe from any thread
            f.seek(self.offsets[index])
            record = f.read(self.lengths[index])
        features = tf_example_pb2.Example.FromString(record).features.feature
        if "shape" not in features or "data" not in features:
            raise ValueError(
                f"{self.path}: record {index} has features {sorted(features)}, "
                "expected 'shape' (C, H, W) and 'data' (raw uint8 bytes)"
            )
        shape = tuple(features["shape"].int64_list.value)
        data = np.frombuffer(features["data"].bytes_list.value[0], np.uint8)
        if len(shape) != 3 or data.size != np.prod(shape):
            raise ValueError(f"{self.path}: record {index} has shape {shape} and {data.size} bytes of data")
        return data.reshape(shape).transpose(1, 2, 0), 0


# ----------------------------------------------------------------------------- tensorflow-datasets


class TfdsSource:
    """A tensorflow-datasets split read without TensorFlow, through `tfds.data_source` (random access to
    array_record files), with the official per-dataset preprocessing applied to each image."""

    def __init__(self, name: str, split: str, data_dir: str | None, preprocess: Callable[[np.ndarray], np.ndarray]):
        import tensorflow_datasets as tfds

        self.name, self.split, self.preprocess = name, split, preprocess
        try:
            self._data = tfds.data_source(
                name, split=split, data_dir=data_dir, download=False, builder_kwargs={"file_format": "array_record"}
            )
        except Exception as e:  # tfds raises KeyError / FileNotFoundError / NotImplementedError here
            where = data_dir or tfds.core.constants.DATA_DIR
            raise FileNotFoundError(
                f"tensorflow-datasets dataset {name!r} (split {split!r}) is not prepared in array_record "
                f"format under data_dir {where!r} ({type(e).__name__}: {e}). Downloads are never started "
                "from here. Prepare it once on a machine with internet access and TensorFlow: "
                f"`pip install tensorflow tensorflow-datasets && tfds build {name} --data_dir {where} "
                "--file_format array_record`, then copy that folder here and point "
                "config.data.tfds_data_dir (or $TFDS_DATA_DIR) at it."
            ) from e
        features = self._data.dataset_info.features
        # CIFAR-10, SVHN, MNIST, Fashion-MNIST have class labels; CelebA (attributes only) and LSUN none.
        self.num_classes = int(features["label"].num_classes) if "label" in features else 0

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        example = self._data[int(index)]
        return self.preprocess(np.asarray(example["image"], np.uint8)), int(example.get("label", 0))


def _official_preprocess(dataset: str, image_size: int) -> Callable[[np.ndarray], np.ndarray]:
    """The official code's crop / resize for the tfds datasets, on uint8 images."""
    if dataset == "CELEBA":
        return lambda image: imagelib.resize_small(imagelib.central_crop(image, 140), image_size)
    if dataset == "LSUN" and image_size == 128:
        return lambda image: imagelib.central_crop(imagelib.resize_small(image, image_size), image_size)
    if dataset == "LSUN":
        return lambda image: imagelib.crop_resize(image, image_size)
    return lambda image: imagelib.resize(image, image_size)  # CIFAR10, SVHN, MNIST, FashionMNIST


# ----------------------------------------------------------------------------- the registry

# config.data.dataset -> (tfds name, tfds split for 'train', tfds split for 'test')
_TFDS = {
    "CIFAR10": ("cifar10", "train", "test"),
    "SVHN": ("svhn_cropped", "train", "test"),
    "CELEBA": ("celeb_a", "train", "validation"),
    "LSUN": ("lsun/{category}", "train", "validation"),
    "MNIST": ("mnist", "train", "test"),
    "FashionMNIST": ("fashion_mnist", "train", "test"),
}
DATASETS = ("CIFAR10", "SVHN", "CELEBA", "LSUN", "FFHQ", "CelebAHQ", "digits", "MNIST", "FashionMNIST", "folder", "npz")
DIGITS_TRAIN = 1500  # digits: the first 1500 of scikit-learn's 1797 images train, the last 297 test


def _resized(images: np.ndarray, image_size: int) -> np.ndarray:
    """Every image of an in-memory uint8 (N, H, W, C) array resized (bilinear) to image_size."""
    if images.shape[1:3] == (image_size, image_size):
        return images
    return np.stack([imagelib.resize(image, image_size) for image in images])


def _labelled(images: np.ndarray, labels: np.ndarray | None, num_classes: int | None = None) -> ArraySource:
    """An ArraySource of ``num_classes`` classes (default: those the labels reach), unlabelled for labels None."""
    if labels is None:
        return ArraySource(images, np.zeros(len(images), np.int32))
    return ArraySource(images, labels, int(labels.max(initial=-1)) + 1 if num_classes is None else num_classes)


def _digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits in its order: the first 1500 train, the last 297 test; the 17 grey levels
    0..16 scaled to uint8 as round(v * 255 / 16) (0, 16, 32, ..., 239, 255). `get_source` resizes them
    bilinearly to config.data.image_size when that is not 8."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
    part = slice(None, DIGITS_TRAIN) if split == "train" else slice(DIGITS_TRAIN, None)
    return images[part], digits.target[part].astype(np.int32)


def _path(data, dataset: str) -> pathlib.Path:
    path = data.get("path", None)
    if not path:
        raise ValueError(f"config.data.path must name the data for dataset {dataset!r}")
    return pathlib.Path(path).expanduser()


def _make_source(data, split: str) -> ImageSource:
    dataset, size, channels = data.dataset, data.image_size, data.num_channels
    if dataset == "digits":
        images, labels = _digits(split)
        return _labelled(_resized(images, size), labels, 10)
    if dataset in ("MNIST", "FashionMNIST") and data.get("path", None):
        path = _path(data, dataset)
        if not path.exists():
            raise FileNotFoundError(f"config.data.path: no such .npz file or IDX folder: {path}")
        images, labels = load_npz(path, split) if path.is_file() else load_idx_folder(path, split)
        return _labelled(_resized(images, size), labels, 10)
    if dataset == "npz":
        path = _path(data, dataset)
        images, labels = load_npz(path, split)
        if images.shape[1:] != (size, size, channels):
            raise ValueError(
                f"{path}: images of shape {images.shape[1:]} (H, W, C) do not match the config "
                f"(config.data.image_size={size}, config.data.num_channels={channels}); "
                "npz arrays are used as stored, so resize them first"
            )
        return _labelled(images, labels)
    if dataset == "folder":
        return folder_source(_path(data, dataset), split, size, channels)
    if dataset in ("FFHQ", "CelebAHQ"):
        path = data.get("tfrecords_path", None)
        if not path:
            raise ValueError(f"config.data.tfrecords_path must name the TFRecord file for dataset {dataset!r}")
        return TFRecordSource(pathlib.Path(path).expanduser())
    if dataset in _TFDS:
        name, train_split, test_split = _TFDS[dataset]
        if dataset == "LSUN":
            name = name.format(category=data.category)
        return TfdsSource(
            name,
            train_split if split == "train" else test_split,
            data.get("tfds_data_dir", None),
            _official_preprocess(dataset, size),
        )
    raise ValueError(f"unknown config.data.dataset {dataset!r}; known datasets: {', '.join(DATASETS)}")


def get_source(config, split: str = "train") -> ImageSource:
    """The uint8 source of `split` ('train' or 'test') of the dataset config.data names.

    Fields read: config.data.dataset, image_size, num_channels, and by dataset: path (folder, npz, and
    the local copies of MNIST / FashionMNIST), category (LSUN), tfrecords_path (FFHQ, CelebAHQ),
    tfds_data_dir (tensorflow-datasets' data_dir; default $TFDS_DATA_DIR or ~/tensorflow_datasets).
    Checks the first example against image_size and num_channels, naming both on a mismatch.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data = config.data
    source = _make_source(data, split)
    if len(source) == 0:
        raise ValueError(f"dataset {data.dataset!r} split {split!r} has no examples")
    image, _ = source[0]
    expected = (data.image_size, data.image_size, data.num_channels)
    if image.dtype != np.uint8 or image.shape != expected:
        raise ValueError(
            f"dataset {data.dataset!r} split {split!r} gives {image.dtype} images of shape "
            f"{image.shape}, but the config asks for uint8 {expected} (config.data.image_size, "
            "config.data.num_channels)"
        )
    return source
