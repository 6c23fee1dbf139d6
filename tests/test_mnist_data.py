"""MNIST sources: the embedded 5k subset, IDX folders on disk, clear errors, caching."""

import time

import numpy as np
import pytest

from whatifgan.data import mnist as M
from whatifgan.data.mnist import MNISTNotFoundError, load_mnist, read_idx, write_idx


def test_embedded_loads_offline_with_500_per_class():
    images, labels = load_mnist("embedded", split="all")
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,) and labels.dtype == np.int64
    assert np.array_equal(np.bincount(labels), np.full(10, 500))
    assert images.max() == 255 and images.min() == 0
    # real digits: ink covers roughly 10-30% of the frame
    ink = (images > 127).mean(axis=(1, 2))
    assert 0.05 < np.median(ink) < 0.35


def test_embedded_split_is_stratified_disjoint_and_deterministic():
    xa, ya = load_mnist(split="all")
    xtr, ytr = load_mnist(split="train")
    xte, yte = load_mnist(split="test")
    assert len(xtr) == 4000 and len(xte) == 1000
    assert np.array_equal(np.bincount(ytr), np.full(10, 400))
    assert np.array_equal(np.bincount(yte), np.full(10, 100))
    idx = M.embedded_split_indices(ya)
    assert np.intersect1d(idx["train"], idx["test"]).size == 0
    assert np.array_equal(np.sort(np.concatenate([idx["train"], idx["test"]])), np.arange(5000))
    assert np.array_equal(xtr, xa[idx["train"]]) and np.array_equal(yte, ya[idx["test"]])
    # a fresh computation (no cache) gives the same split; classes are interleaved, not sorted
    M.clear_cache()
    xtr2, ytr2 = load_mnist(split="train")
    assert np.array_equal(xtr, xtr2) and np.array_equal(ytr, ytr2)
    assert len(np.unique(ytr[:50])) >= 8
    assert load_mnist(None, split="test")[0].shape == (1000, 28, 28)


def test_cache_makes_repeat_loads_cheap_and_returns_private_copies():
    x1, y1 = load_mnist(split="train")
    t = time.perf_counter()
    x2, y2 = load_mnist(split="train")
    assert time.perf_counter() - t < 0.1
    assert np.array_equal(x1, x2)
    x2[:] = 0
    y2[:] = -1
    x3, y3 = load_mnist(split="train")
    assert np.array_equal(x1, x3) and np.array_equal(y1, y3)


def _fake_mnist(rng, n):
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), rng.integers(0, 10, size=n).astype(np.uint8)


def _write_split(folder, stems, images, labels, gz):
    suffix = ".gz" if gz else ""
    write_idx(folder / (stems[0] + suffix), images)
    write_idx(folder / (stems[1] + suffix), labels)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_round_trip(tmp_path, gz):
    rng = np.random.default_rng(1)
    xtr, ytr = _fake_mnist(rng, 12)
    xte, yte = _fake_mnist(rng, 5)
    _write_split(tmp_path, ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), xtr, ytr, gz)
    _write_split(tmp_path, ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), xte, yte, gz)
    images, labels = load_mnist(tmp_path, split="train")
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    assert np.array_equal(images, xtr) and np.array_equal(labels, ytr)
    images, labels = load_mnist(str(tmp_path), split="test")
    assert np.array_equal(images, xte) and np.array_equal(labels, yte)
    images, labels = load_mnist(tmp_path, split="all")
    assert np.array_equal(images, np.concatenate([xtr, xte])) and len(labels) == 17


def test_torchvision_root_layout_and_dotted_names(tmp_path):
    rng = np.random.default_rng(2)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    xtr, ytr = _fake_mnist(rng, 7)
    _write_split(raw, ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), xtr, ytr, gz=True)
    images, labels = load_mnist(tmp_path, split="train")
    assert np.array_equal(images, xtr) and np.array_equal(labels, ytr)
    # some mirrors spell the files "t10k-images.idx3-ubyte"
    other = tmp_path / "mirror"
    other.mkdir()
    _write_split(other, ("t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte"), xtr, ytr, gz=False)
    assert np.array_equal(load_mnist(other, split="test")[0], xtr)


def test_keras_npz(tmp_path):
    rng = np.random.default_rng(3)
    xtr, ytr = _fake_mnist(rng, 6)
    xte, yte = _fake_mnist(rng, 4)
    np.savez(tmp_path / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    images, labels = load_mnist(tmp_path / "mnist.npz", split="test")
    assert np.array_equal(images, xte) and np.array_equal(labels, yte)
    assert len(load_mnist(tmp_path / "mnist.npz", split="all")[0]) == 10


def test_missing_path_or_files_raise_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_mnist(tmp_path / "nowhere", split="train")
    msg = str(e.value)
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert M.CONFIG_KEY in msg and M.CLI_OPTION in msg
    assert isinstance(e.value, MNISTNotFoundError)

    # folder exists but only the training images are there: the message names what is missing
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(MNISTNotFoundError) as e:
        load_mnist(tmp_path, split="train")
    msg = str(e.value)
    assert "train-labels-idx1-ubyte" in msg and str(tmp_path / "MNIST" / "raw") in msg
    assert "download" in msg.lower()  # says that nothing is downloaded
    with pytest.raises(MNISTNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist(tmp_path, split="test")


def test_bad_split_and_corrupt_idx(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_mnist(split="validation")
    bad = tmp_path / "train-images-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 10)
    with pytest.raises(ValueError, match="bytes"):
        read_idx(bad)
    (tmp_path / "junk").write_bytes(b"PK\x03\x04")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "junk")
