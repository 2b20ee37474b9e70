"""Tests of combgrad/tasks/_digits.py: the bundled digits, their split, and the MNIST IDX reader."""

from __future__ import annotations

import builtins
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from combgrad.tasks import _digits

pytest.importorskip("sklearn")


def _idx(values: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, values.ndim]) + b"".join(struct.pack(">i", size) for size in values.shape)
    return header + values.astype(values.dtype.newbyteorder(">")).tobytes()


def _write_mnist(folder: Path, n_train: int = 5, n_test: int = 3, side: int = 4, gz: bool = False) -> None:
    rng = np.random.default_rng(0)
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(count, side, side), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count, dtype=np.uint8)
        for name, values in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
            content = _idx(values)
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(content))
            else:
                (folder / name).write_bytes(content)


def test_digits_shapes_ranges_and_a_deterministic_split() -> None:
    first, second = _digits.load_digits(), _digits.load_digits()
    assert first.train_images.shape == (1438, 8, 8) and first.test_images.shape == (359, 8, 8)
    assert first.train_images.dtype == np.float32 and first.train_labels.dtype == np.int64
    for images in (first.train_images, first.test_images):
        assert images.min() == 0.0 and images.max() == 1.0
        # 17 grey levels: every value is a multiple of 1/16
        assert np.allclose(images * 16, np.round(images * 16))
    assert set(first.train_labels.tolist()) == set(range(10)) == set(first.test_labels.tolist())
    np.testing.assert_array_equal(first.test_images, second.test_images)
    np.testing.assert_array_equal(first.train_labels, second.train_labels)
    assert first.side == 8 and first.pixels == 64 and first.counts() == {"train": 1438, "test": 359}


def test_the_split_is_a_partition_independent_of_the_global_random_state() -> None:
    np.random.seed(123)
    train, test = _digits.split_indices(1797)
    np.random.seed(7)
    train_again, test_again = _digits.split_indices(1797)
    assert np.array_equal(train, train_again) and np.array_equal(test, test_again)
    assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 1797
    other_train, _ = _digits.split_indices(1797, seed=1)
    assert not np.array_equal(train, other_train)


def test_missing_scikit_learn_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'combgrad\[tasks\]'"):
        _digits.load_digits()


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files_round_trip(tmp_path: Path, gz: bool) -> None:
    _write_mnist(tmp_path, gz=gz)
    data = _digits.load_mnist(tmp_path)
    assert data.train_images.shape == (5, 4, 4) and data.test_images.shape == (3, 4, 4)
    assert data.train_images.dtype == np.float32 and 0.0 <= data.train_images.min() and data.train_images.max() <= 1.0
    raw = _digits.read_idx(tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    np.testing.assert_allclose(data.train_images, raw / 255.0, rtol=1e-6)
    assert data.source == str(tmp_path) and _digits.load(str(tmp_path)).counts() == {"train": 5, "test": 3}


def test_read_idx_other_element_types(tmp_path: Path) -> None:
    values = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
    path = tmp_path / "values.idx"
    path.write_bytes(_idx(values, 0x0C))
    np.testing.assert_array_equal(_digits.read_idx(path), values)


def test_bad_magic_number_is_a_clear_error(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    content = bytearray(path.read_bytes())
    content[0] = 0x1F
    path.write_bytes(bytes(content))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte: not an IDX file \(its magic number"):
        _digits.load_mnist(tmp_path)


def test_truncated_and_mismatched_files_are_named(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    images = tmp_path / "t10k-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: IDX header announces shape \(3, 4, 4\)"):
        _digits.load_mnist(tmp_path)
    _write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"4 labels for the 5 images"):
        _digits.load_mnist(tmp_path)
    _write_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx(np.zeros((5, 16), dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"MNIST images must be uint8 \[N, H, W\]"):
        _digits.load_mnist(tmp_path)
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.full(3, 11, dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"labels must be digits 0..9, got 11"):
        _digits.load_mnist(tmp_path)


def test_missing_files_and_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _digits.load_mnist(tmp_path / "absent")
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"holds no t10k-labels-idx1-ubyte \(nor t10k-labels-idx1-ubyte.gz\)"):
        _digits.load_mnist(tmp_path)


def test_binarise() -> None:
    assert _digits.binarise(np.array([[0.0, 0.5, 0.51, 1.0]])).tolist() == [[0.0, 0.0, 1.0, 1.0]]
