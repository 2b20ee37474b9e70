"""Handwritten digits for the discrete-latent tasks (``combgrad vae``, ``combgrad l2x``).

Two sources, one shape of result (:class:`Digits`):

* scikit-learn's bundled digits (:func:`load_digits`; the default): 1,797 images of
  8x8 pixels with 17 grey levels, shipped inside scikit-learn, so nothing is
  downloaded. They are split once into train and test by a fixed seed
  (:data:`SPLIT_SEED`), independent of a run's seed, so that every run of every
  estimator is evaluated on the same test images (which is what makes the L2X
  selections of two runs comparable).
* MNIST in its original IDX files (:func:`load_mnist`), when a user has them:
  ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
  and ``t10k-labels-idx1-ubyte``, each optionally gzipped (``.gz``), in one folder.
  The files' own train/test split is used.

Pixel values are float32 in ``[0, 1]`` (grey level / 16 for the digits, / 255 for MNIST).

References:
    E. Alpaydin, C. Kaynak. Optical Recognition of Handwritten Digits. UCI
    Machine Learning Repository, 1998 (the data of ``sklearn.datasets.load_digits``).

    Y. LeCun, L. Bottou, Y. Bengio, P. Haffner. Gradient-based learning applied to
    document recognition. Proceedings of the IEEE, 1998 (MNIST and its IDX format).
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLIT_SEED = 0
"""Seed of the fixed train/test split of the bundled digits (not the run's seed)."""

TEST_FRACTION = 0.2
"""Share of the bundled digits held out for test (359 of 1,797 images)."""

_EXTRA = "pip install 'combgrad[tasks]' (or scikit-learn)"

# The IDX header's third byte: the element type, with its big-endian numpy dtype.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
"""The four MNIST files a ``--data`` folder holds (each may also end in ``.gz``)."""


@dataclass(frozen=True)
class Digits:
    """Images and labels of a train and a test split.

    Attributes:
        train_images: ``[N, H, W]`` float32 in ``[0, 1]``.
        train_labels: ``[N]`` int64 in ``0..9``.
        test_images: ``[M, H, W]`` float32 in ``[0, 1]``.
        test_labels: ``[M]`` int64 in ``0..9``.
        source: ``"digits"`` or the MNIST folder.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str

    @property
    def side(self) -> int:
        """Pixels per image side (8 for the digits, 28 for MNIST)."""
        return int(self.train_images.shape[-1])

    @property
    def pixels(self) -> int:
        """Pixels per image (64 or 784)."""
        return int(self.train_images.shape[-2] * self.train_images.shape[-1])

    def counts(self) -> dict[str, int]:
        """Images per split."""
        return {"train": len(self.train_images), "test": len(self.test_images)}


def split_indices(
    count: int, *, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(count)``: (train indices, test indices), each sorted.

    Example:
        >>> train, test = split_indices(10, test_fraction=0.3)
        >>> len(train), len(test), sorted([*train, *test]) == list(range(10))
        (7, 3, True)
    """
    order = np.random.default_rng(seed).permutation(count)
    held_out = int(round(count * test_fraction))
    return np.sort(order[held_out:]), np.sort(order[:held_out])


def load_digits() -> Digits:
    """scikit-learn's bundled 8x8 digits, split by :data:`SPLIT_SEED` (1,438 train, 359 test).

    Raises:
        ModuleNotFoundError: If scikit-learn is not installed (the message says what to install).

    Example:
        >>> digits = load_digits()
        >>> digits.train_images.shape, digits.test_images.shape, float(digits.train_images.max())
        ((1438, 8, 8), (359, 8, 8), 1.0)
    """
    try:
        from sklearn import datasets
    except ImportError as error:
        raise ModuleNotFoundError(
            f"the digits data set comes with scikit-learn, which is not installed: {_EXTRA}"
        ) from error
    bunch = datasets.load_digits()
    images = (np.asarray(bunch.images, dtype=np.float32) / 16.0).astype(np.float32)
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, test = split_indices(len(images))
    return Digits(images[train], labels[train], images[test], labels[test], "digits")


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"mnist: {folder} holds no {name} (nor {name}.gz); it must hold {', '.join(MNIST_FILES.values())}"
    )


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array in an IDX file (gzipped when its name ends in ``.gz``).

    The format: two zero bytes, a type byte (0x08 unsigned byte, 0x09 signed byte,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), a byte giving the number
    of dims, then each dim as a big-endian int32, then the values, big-endian.

    Raises:
        ValueError: Naming the file, if its magic number, type or size is wrong.
        OSError: If it cannot be read.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny-idx1-ubyte"
        >>> _ = path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
        >>> read_idx(path)
        array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            content = handle.read()
    except (gzip.BadGzipFile, EOFError) as error:
        raise ValueError(f"{path}: not a readable gzip file ({error})") from error
    if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[2] not in _IDX_TYPES:
        raise ValueError(
            f"{path}: not an IDX file (its magic number must be 00 00 <type 08-0E> <dims>, "
            f"got {content[:4].hex(' ') or 'nothing'})"
        )
    dtype = np.dtype(_IDX_TYPES[content[2]])
    ndim = content[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(content) < header:
        raise ValueError(f"{path}: IDX header announces {ndim} dims but the file ends within it")
    shape = tuple(int(value) for value in np.frombuffer(content, dtype=">i4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(content) != expected:
        raise ValueError(
            f"{path}: IDX header announces shape {shape} ({expected} bytes), but the file has {len(content)} bytes"
        )
    return np.frombuffer(content, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _read_pair(folder: Path, images_name: str, labels_name: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = _find(folder, images_name), _find(folder, labels_name)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path}: MNIST images must be uint8 [N, H, W] (magic 00 00 08 03), got {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"{labels_path}: MNIST labels must be uint8 [N] (magic 00 00 08 01), got {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(f"{labels_path}: {len(labels)} labels for the {len(images)} images of {images_path}")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: labels must be digits 0..9, got {int(labels.max())}")
    return (images.astype(np.float32) / 255.0), labels.astype(np.int64)


def load_mnist(folder: str | os.PathLike) -> Digits:
    """MNIST from its four IDX files in ``folder`` (see :data:`MNIST_FILES`), with their own split.

    Raises:
        FileNotFoundError: Naming the missing file.
        ValueError: Naming the file whose content is not MNIST's.

    Example:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> for split, n in (("train", 2), ("t10k", 1)):
        ...     _ = (folder / f"{split}-images-idx3-ubyte").write_bytes(
        ...         bytes([0, 0, 8, 3, 0, 0, 0, n, 0, 0, 0, 2, 0, 0, 0, 2]) + bytes(4 * n))
        ...     _ = (folder / f"{split}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, n]) + bytes(n))
        >>> load_mnist(folder).counts()
        {'train': 2, 'test': 1}
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"mnist: data folder {root} does not exist")
    train_images, train_labels = _read_pair(root, MNIST_FILES["train_images"], MNIST_FILES["train_labels"])
    test_images, test_labels = _read_pair(root, MNIST_FILES["test_images"], MNIST_FILES["test_labels"])
    if train_images.shape[1:] != test_images.shape[1:]:
        raise ValueError(f"mnist: train images are {train_images.shape[1:]} but test images {test_images.shape[1:]}")
    return Digits(train_images, train_labels, test_images, test_labels, str(root))


def load(data: str | os.PathLike | None) -> Digits:
    """The bundled digits (``data=None``) or the MNIST files in folder ``data``.

    Example:
        >>> load(None).source
        'digits'
    """
    return load_digits() if data is None else load_mnist(data)


def binarise(images: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """0/1 float32 pixels: 1 where the value exceeds ``threshold`` (the VAE's Bernoulli targets).

    Example:
        >>> binarise(np.array([0.2, 0.5, 0.9])).tolist()
        [0.0, 0.0, 1.0]
    """
    return (np.asarray(images) > threshold).astype(np.float32)


__all__ = ["MNIST_FILES", "SPLIT_SEED", "TEST_FRACTION", "Digits", "binarise", "load", "load_digits", "load_mnist",
           "read_idx", "split_indices"]
