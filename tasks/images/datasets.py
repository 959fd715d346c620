"""Reading image datasets a user already has on disk, in their official formats.

Nothing here downloads anything. Every loader returns an `ImagePool` (training and test
images with labels and class names) and raises PtbenchError, naming the file it expected,
when a file is missing or does not have the format it should: the CLI prints that one line
and exits with status 2.

Where the files are looked for, under the data directory DIR (`--data-dir` or PTBENCH_DATA):

    mnist           DIR/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
                    (or DIR/MNIST/raw/, the folder torchvision writes)
    fashion-mnist   DIR/fashion-mnist/... the same four names (or DIR/FashionMNIST/raw/)
    cifar10         DIR/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    cifar100        DIR/cifar-100-python/{train, test, meta}
    image-folder    DIR/ROOT/CLASS/*.png|jpg|... (one sub-folder per class)
"""

from __future__ import annotations

import gzip
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ptbench.errors import PtbenchError

DATA_ENV = "PTBENCH_DATA"


@dataclass
class ImagePool:
    """Every labelled image of a dataset: x as [N, C, H, W] (uint8 0..255, or floats in
    [0, 1]), y as class indices into `classes`. `test_x` is None when the dataset has no
    official test split (the task then holds out part of the training images)."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    test_x: np.ndarray | None = None
    test_y: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.x.shape[1:])  # type: ignore[return-value]


def data_dir(dataset: str) -> Path:
    """The data directory from PTBENCH_DATA (which `--data-dir` sets), or a PtbenchError."""
    value = os.environ.get(DATA_ENV, "").strip()
    if not value:
        raise PtbenchError(
            f"{dataset} reads its files from disk: pass --data-dir DIR (or set {DATA_ENV}) to the folder that holds them"
        )
    path = Path(value).expanduser()
    if not path.is_dir():
        raise PtbenchError(f"data directory {str(path)!r} does not exist; pass --data-dir DIR (or set {DATA_ENV}) to an existing folder")
    return path


# --------------------------------------------------------------------------- IDX (MNIST)

IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
IDX_FOLDERS = {"mnist": ("mnist", "MNIST/raw"), "fashion-mnist": ("fashion-mnist", "FashionMNIST/raw")}
MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (plain, or gzip when the name ends in .gz) as an array."""
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise PtbenchError(f"cannot read {str(path)!r} ({err}); replace it with the original IDX file") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise PtbenchError(f"{str(path)!r} is not an IDX file of unsigned bytes (bad magic number); replace it with the original file")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise PtbenchError(f"{str(path)!r} has a truncated IDX header; replace it with the original file")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise PtbenchError(
            f"{str(path)!r} holds {len(raw) - header} bytes of data, its header promises {expected} {dims}; "
            "the file is truncated or corrupt, replace it"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def idx_folder(dataset: str, root: Path) -> Path:
    """The folder holding a dataset's IDX files; names the file expected when there is none."""
    candidates = [root / sub for sub in IDX_FOLDERS[dataset]]
    for folder in candidates:
        if any((folder / (IDX_FILES["train_x"] + ext)).is_file() for ext in ("", ".gz")):
            return folder
    expected = candidates[0] / IDX_FILES["train_x"]
    raise PtbenchError(
        f"{dataset}: missing {str(expected)!r} (or .gz); put the four IDX files of {dataset} "
        f"({', '.join(IDX_FILES.values())}, plain or .gz) in {str(candidates[0])!r}"
    )


def idx_file(folder: Path, stem: str, dataset: str) -> Path:
    for ext in ("", ".gz"):
        if (folder / (stem + ext)).is_file():
            return folder / (stem + ext)
    raise PtbenchError(f"{dataset}: missing {str(folder / stem)!r} (or .gz); put the four IDX files of {dataset} there")


def check_idx(dataset: str) -> list[Path]:
    """The four IDX files of `dataset`, all present (PtbenchError naming the first missing)."""
    folder = idx_folder(dataset, data_dir(dataset))
    return [idx_file(folder, stem, dataset) for stem in IDX_FILES.values()]


def load_idx_dataset(dataset: str) -> ImagePool:
    """MNIST or Fashion-MNIST from their four IDX files."""
    paths = dict(zip(IDX_FILES, check_idx(dataset)))
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if images.ndim != 3:
            raise PtbenchError(f"{str(paths[f'{split}_x'])!r} should hold images (3 dimensions), it has {images.ndim}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise PtbenchError(
                f"{str(paths[f'{split}_y'])!r} should hold one label per image of {paths[f'{split}_x'].name} "
                f"({len(images)}), it has shape {labels.shape}"
            )
        if labels.size and labels.max() > 9:
            raise PtbenchError(f"{str(paths[f'{split}_y'])!r} has label {int(labels.max())}; {dataset} labels are 0..9")
    classes = MNIST_CLASSES if dataset == "mnist" else FASHION_CLASSES
    return ImagePool(
        x=arrays["train_x"][:, None], y=arrays["train_y"].astype(np.int64), classes=list(classes),
        test_x=arrays["test_x"][:, None], test_y=arrays["test_y"].astype(np.int64),
    )


# --------------------------------------------------------------------------- CIFAR


CIFAR = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "labels": "labels",
        "names": "label_names",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "labels": "fine_labels",
        "names": "fine_label_names",
    },
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays, nothing else: the CIFAR
    batches are pickles, and a pickle may otherwise run any code (the same care as
    torch.load(weights_only=True))."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("copyreg", "_reconstructor"),
        ("builtins", "object"),
        ("_codecs", "encode"),  # how Python 3 writes bytes into a protocol-2 pickle
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except OSError as err:
        raise PtbenchError(f"cannot read {str(path)!r} ({err.strerror}); replace it with the original CIFAR file") from None
    except Exception as err:  # unpickling errors come in many types
        raise PtbenchError(f"{str(path)!r} is not a CIFAR python batch ({type(err).__name__}: {err}); replace it with the original file") from None
    if not isinstance(obj, dict):
        raise PtbenchError(f"{str(path)!r} is not a CIFAR python batch (a pickled dict); replace it with the original file")
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _field(batch: dict, key: str, path: Path) -> Any:
    if key not in batch:
        raise PtbenchError(f"{str(path)!r} has no {key!r} entry; it is not a CIFAR python batch, replace it with the original file")
    return batch[key]


def cifar_files(dataset: str) -> dict[str, Any]:
    """Paths of a CIFAR dataset's batches, all present (PtbenchError naming the first missing)."""
    spec = CIFAR[dataset]
    folder = data_dir(dataset) / spec["folder"]
    out: dict[str, Any] = {}
    for role in ("train", "test"):
        out[role] = [folder / name for name in spec[role]]
    out["meta"] = folder / spec["meta"]
    for path in out["train"] + out["test"] + [out["meta"]]:
        if not path.is_file():
            raise PtbenchError(
                f"{dataset}: missing {str(path)!r}; extract the official python version of {dataset} "
                f"so that the folder {spec['folder']}/ sits inside the data directory"
            )
    return out


def _cifar_batches(paths: Sequence[Path], labels_key: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for path in paths:
        batch = _unpickle(path)
        data = np.asarray(_field(batch, "data", path))
        labels = np.asarray(_field(batch, labels_key, path), dtype=np.int64)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise PtbenchError(f"{str(path)!r}: 'data' should be uint8 rows of 3072 values, got {data.dtype} {data.shape}; replace the file")
        if labels.shape != (len(data),) or (labels.size and (labels.min() < 0 or labels.max() >= n_classes)):
            raise PtbenchError(f"{str(path)!r}: {labels_key!r} should hold one label in 0..{n_classes - 1} per image; replace the file")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def load_cifar(dataset: str) -> ImagePool:
    """CIFAR-10 or CIFAR-100 (fine labels) from the official python batches."""
    spec = CIFAR[dataset]
    files = cifar_files(dataset)
    meta = _unpickle(files["meta"])
    names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in _field(meta, spec["names"], files["meta"])]
    expected = 10 if dataset == "cifar10" else 100
    if len(names) != expected:
        raise PtbenchError(f"{str(files['meta'])!r} names {len(names)} classes, {dataset} has {expected}; replace the file")
    x, y = _cifar_batches(files["train"], spec["labels"], expected)
    tx, ty = _cifar_batches(files["test"], spec["labels"], expected)
    return ImagePool(x=x, y=y, classes=names, test_x=tx, test_y=ty)


# --------------------------------------------------------------------------- image folders

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def image_folder_root(root: str) -> Path:
    """DIR/root (or root itself when absolute), which must exist."""
    path = Path(root).expanduser()
    if not path.is_absolute():
        path = data_dir("image-folder") / path
    if not path.is_dir():
        raise PtbenchError(f"image-folder: missing folder {str(path)!r}; it should hold one sub-folder of images per class")
    return path


def image_folder_classes(path: Path) -> dict[str, list[Path]]:
    """Class name -> its image files (sorted), for every sub-folder of `path`."""
    classes = {}
    for sub in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in sub.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise PtbenchError(
                f"image-folder: {str(sub)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); add some or remove the folder"
            )
        classes[sub.name] = files
    if len(classes) < 2:
        raise PtbenchError(f"image-folder: {str(path)!r} should hold one sub-folder per class (at least 2), found {len(classes)}")
    return classes


def load_image_folder(root: str, size: int, channels: int) -> ImagePool:
    """Every image under root/CLASS/, resized to size x size, grey (1) or RGB (3) channels."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:  # pragma: no cover - pillow comes with scikit-image and matplotlib
        raise PtbenchError("image-folder needs pillow: pip install pillow") from None
    classes = image_folder_classes(image_folder_root(root))
    mode = {1: "L", 3: "RGB"}[channels]
    xs, ys = [], []
    for label, (name, files) in enumerate(classes.items()):
        for file in files:
            try:
                with Image.open(file) as img:
                    arr = np.asarray(img.convert(mode).resize((size, size), Image.BILINEAR), dtype=np.uint8)
            except (OSError, UnidentifiedImageError, ValueError) as err:
                raise PtbenchError(f"image-folder: cannot read image {str(file)!r} ({err}); fix or remove it") from None
            xs.append(arr.reshape(size, size, channels).transpose(2, 0, 1))
            ys.append(label)
    return ImagePool(x=np.stack(xs), y=np.asarray(ys, dtype=np.int64), classes=list(classes))


# --------------------------------------------------------------------------- bundled data


def load_digits_pool() -> ImagePool:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images; no download), in [0, 1]."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover
        raise PtbenchError("the digits tasks need scikit-learn: pip install scikit-learn") from None
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    return ImagePool(x=x, y=digits.target.astype(np.int64), classes=[str(i) for i in range(10)])


def as_float(x: np.ndarray) -> np.ndarray:
    """Images as float32 in [0, 1], whatever they were stored as."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    return x.astype(np.float32, copy=False)
