"""Reading image datasets a user already has on disk, in their official formats.

Nothing here downloads anything. Every loader returns an `ImagePool` (training and test
images with labels and class names) and raises PtbenchError, naming the file it expected,
when a file is missing or does not have the format it should: the CLI prints that one line
and exits with status 2.

Every reader bounds its memory before it allocates, so a small hostile file is refused the
same way: an IDX header may promise at most IDX_MAX_BYTES (then exactly that many bytes are
read, from a plain or a gzip stream); a CIFAR batch may be at most CIFAR_MAX_BYTES, and its
pickle may build only plain containers, strings, numbers and numpy arrays whose bytes are in
the file; an image may have at most IMAGE_MAX_PIXELS, read from its header before decoding.

Where the files are looked for, under the data directory DIR (`--data-dir` or PTBENCH_DATA):

    mnist           DIR/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
                    (or DIR/MNIST/raw/, the folder torchvision writes)
    fashion-mnist   DIR/fashion-mnist/... the same four names (or DIR/FashionMNIST/raw/)
    cifar10         DIR/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    cifar100        DIR/cifar-100-python/{train, test, meta}
    image-folder    DIR/ROOT/CLASS/*.png|jpg|... (one sub-folder per class)
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import pickle
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Sequence

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


def _one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one short line (the CLI prints an error as one line)."""
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


#: Dimensions an IDX file may have here: MNIST's images have 3, its labels 1.
IDX_MAX_DIMS = 4
#: The most bytes of data an IDX file may promise (2 GiB; MNIST's largest holds 47 MB,
#: EMNIST's 550 MB). A header that promises more is corrupt and is refused before anything
#: is allocated, as is one whose dimensions multiply past int64.
IDX_MAX_BYTES = 2**31
_IDX_CHUNK = 16 * 2**20  # read (and decompress) this many bytes at a time


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (plain, or gzip when the name ends in .gz) as an array.

    The header is read and checked first; then exactly the bytes it promises are read (one
    more tells trailing data), so a small .gz that inflates to gigabytes costs no more memory
    than the array its header describes."""
    gz = path.name.endswith(".gz")
    try:
        with (gzip.open(path, "rb") if gz else path.open("rb")) as f:
            return _read_idx_stream(f, path, gz)
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise PtbenchError(f"cannot read {str(path)!r} ({_one_line(err)}); replace it with the original IDX file") from None


def _read_idx_stream(f: Any, path: Path, gz: bool) -> np.ndarray:
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] != 0x08:
        raise PtbenchError(f"{str(path)!r} is not an IDX file of unsigned bytes (bad magic number); replace it with the original file")
    ndim = magic[3]
    if not 1 <= ndim <= IDX_MAX_DIMS:
        raise PtbenchError(
            f"{str(path)!r} has an IDX header of {ndim} dimensions (1 to {IDX_MAX_DIMS} expected); "
            "the file is corrupt, replace it with the original file"
        )
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise PtbenchError(f"{str(path)!r} has a truncated IDX header; replace it with the original file")
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw_dims[4 * i : 4 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)  # Python ints: exact, whatever the header claims
    if expected > IDX_MAX_BYTES:
        raise PtbenchError(
            f"{str(path)!r}: its IDX header promises {expected} bytes of data {dims}, more than the "
            f"{IDX_MAX_BYTES} an IDX file may hold; the file is corrupt, replace it with the original file"
        )
    if not gz:  # a plain file's size tells truncation or trailing data before anything is read
        held = os.fstat(f.fileno()).st_size - header
        if held != expected:
            raise PtbenchError(
                f"{str(path)!r} holds {held} bytes of data, its header promises {expected} {dims}; "
                "the file is truncated or corrupt, replace it"
            )
    try:
        out = np.empty(expected, dtype=np.uint8)
    except MemoryError:
        raise PtbenchError(f"{str(path)!r}: not enough memory for the {expected} bytes of data its header promises {dims}") from None
    view = memoryview(out)
    got = 0
    while got < expected:
        n = f.readinto(view[got : got + _IDX_CHUNK])
        if not n:
            break
        got += n
    if got < expected:
        raise PtbenchError(
            f"{str(path)!r} holds {got} bytes of data, its header promises {expected} {dims}; "
            "the file is truncated or corrupt, replace it"
        )
    if f.read(1):
        raise PtbenchError(
            f"{str(path)!r} holds more than the {expected} bytes of data its header promises {dims}; "
            "the file is corrupt (trailing data), replace it"
        )
    return out.reshape(dims)


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


#: The largest CIFAR file read (the biggest official one, cifar-100's train, is 158 MB).
CIFAR_MAX_BYTES = 512 * 2**20


class _NdarrayName:
    """What `numpy.ndarray` unpickles to: numpy's own pickles only pass it to _reconstruct
    (with shape (0,), filled in by the state that follows), while calling it would allocate an
    array of any size, uninitialised, from a few bytes of pickle."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError("refusing to call numpy.ndarray (only numpy's own _reconstruct may use it)")

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayName()
_PLAIN_KINDS = "biuf"  # bools, integers, floats: all a CIFAR file holds in arrays


def _refuse(what: str) -> NoReturn:
    raise pickle.UnpicklingError(f"refusing {what}")


def _reconstruct_array(real: Any, subtype: Any, shape: Any, dtype: Any) -> Any:
    numpys_own = subtype is _NDARRAY and type(shape) is tuple and shape == (0,) and type(dtype) in (bytes, str) and dtype in (b"b", "b")
    if not numpys_own:
        _refuse("numpy _reconstruct arguments other than numpy's own (ndarray, (0,), 'b')")
    return real(np.ndarray, (0,), dtype)


def _plain_dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if type(obj) not in (bytes, str) or len(obj) > 16:
        _refuse("a numpy dtype that is not a plain type name")
    dtype = np.dtype(obj, bool(align), bool(copy))
    if dtype.kind not in _PLAIN_KINDS or dtype.names is not None or dtype.subdtype is not None:
        _refuse(f"numpy dtype {str(dtype)[:40]} (only booleans, integers and floats)")
    return dtype


def _plain_scalar(real: Any, dtype: Any, obj: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in _PLAIN_KINDS or type(obj) is not bytes or len(obj) != dtype.itemsize:
        _refuse("a numpy scalar that is not a plain number")
    return real(dtype, obj)


def _latin1_bytes(obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    # Python 3 writes bytes into a protocol-2 pickle as _codecs.encode(str, 'latin1'); any
    # other codec ('hex', 'base64', ...) would let a few bytes of pickle grow without bound.
    if type(obj) is not str or encoding != "latin1" or errors != "strict":
        _refuse("_codecs.encode other than to latin1 (how Python 3 writes bytes)")
    return obj.encode("latin1")


_KEY_TYPES = (str, bytes, int, float, bool, type(None))


def _check_key(key: Any) -> Any:
    # A tuple (nested, with shared parts) hashes in time exponential in its depth: a few
    # hundred bytes of pickle would keep the CPU busy for hours. CIFAR keys are bytes.
    if type(key) not in _KEY_TYPES:
        _refuse(f"a dict key of type {type(key).__name__}")
    return key


class _ArrayUnpickler(pickle._Unpickler):  # the pure-Python unpickler, whose opcodes can be checked
    """Unpickles dicts, lists, strings, numbers and numpy arrays, nothing else: the CIFAR
    batches are pickles, and a pickle may otherwise run any code (the same care as
    torch.load(weights_only=True)). Each global allowed is bounded too: numpy's array
    reconstructor only as numpy itself writes it (the data then comes from the file), plain
    dtypes, latin1 bytes; dict keys are plain values; and the opcodes a CIFAR file never holds
    (sets, objects, extensions, persistent ids, out-of-band buffers) are refused."""

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
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module[:80]}.{name[:80]}")
        if (module, name) == ("numpy", "ndarray"):
            return _NDARRAY
        if (module, name) == ("numpy", "dtype"):
            return _plain_dtype
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        found = super().find_class(module, name)
        if name == "_reconstruct":
            return functools.partial(_reconstruct_array, found)
        if name == "scalar":
            return functools.partial(_plain_scalar, found)
        return found

    dispatch = dict(pickle._Unpickler.dispatch)

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        target = self.stack[-1]
        if type(target) is not dict:
            _refuse(f"setting an item of a {type(target).__name__}")
        target[_check_key(key)] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not dict:
            _refuse(f"setting items of a {type(target).__name__}")
        for i in range(0, len(items), 2):
            target[_check_key(items[i])] = items[i + 1]

    def load_dict(self) -> None:
        items = self.pop_mark()
        self.append({_check_key(items[i]): items[i + 1] for i in range(0, len(items), 2)})

    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.DICT[0]] = load_dict
    for _name in (
        "PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX",
        "EMPTY_SET", "ADDITEMS", "FROZENSET", "BYTEARRAY8", "NEXT_BUFFER", "READONLY_BUFFER",
    ):
        if hasattr(pickle, _name):
            dispatch[getattr(pickle, _name)[0]] = functools.partial(lambda self, op: _refuse(f"pickle opcode {op}"), op=_name)
    del _name


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > CIFAR_MAX_BYTES:
                raise PtbenchError(
                    f"{str(path)!r} is {size} bytes, more than any CIFAR python batch ({CIFAR_MAX_BYTES} at most); "
                    "replace it with the original file"
                )
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except PtbenchError:
        raise
    except OSError as err:
        raise PtbenchError(f"cannot read {str(path)!r} ({err.strerror}); replace it with the original CIFAR file") from None
    except Exception as err:  # unpickling errors come in many types
        raise PtbenchError(
            f"{str(path)!r} is not a CIFAR python batch ({type(err).__name__}: {_one_line(err)}); replace it with the original file"
        ) from None
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


CIFAR_ROW = 3 * 32 * 32


def _cifar_labels(value: Any, n: int, n_classes: int) -> np.ndarray | None:
    """`value` as int64 labels when it is a flat list (or 1-d integer array) of n labels in
    0..n_classes-1, else None. Types and length are checked before anything is converted: a
    pickle can nest shared lists so that a few hundred bytes expand to billions of elements."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.kind not in "iu" or len(value) != n:
            return None
        if value.size and (value.min() < 0 or value.max() >= n_classes):
            return None
        return value.astype(np.int64)
    if type(value) not in (list, tuple) or len(value) != n:
        return None
    if not all((type(v) is int or isinstance(v, np.integer)) and 0 <= v < n_classes for v in value):
        return None
    return np.asarray(value, dtype=np.int64)


def _cifar_batches(paths: Sequence[Path], labels_key: str, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for path in paths:
        batch = _unpickle(path)
        data = _field(batch, "data", path)
        raw_labels = _field(batch, labels_key, path)
        if isinstance(data, np.ndarray):
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CIFAR_ROW:
                raise PtbenchError(f"{str(path)!r}: 'data' should be uint8 rows of 3072 values, got {data.dtype} {data.shape}; replace the file")
        elif type(data) is bytes and type(raw_labels) in (list, tuple) and len(data) == CIFAR_ROW * len(raw_labels):
            data = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_ROW)
        else:
            what = f"{len(data)} bytes" if type(data) is bytes else f"a {type(data).__name__}"
            raise PtbenchError(
                f"{str(path)!r}: 'data' should be uint8 rows of 3072 values (a numpy array), got {what}; replace the file"
            )
        labels = _cifar_labels(raw_labels, len(data), n_classes)
        if labels is None:
            raise PtbenchError(f"{str(path)!r}: {labels_key!r} should hold one label in 0..{n_classes - 1} per image; replace the file")
        xs.append(data.reshape(-1, 3, 32, 32))
        ys.append(labels)
    return np.concatenate(xs), np.concatenate(ys)


def _class_names(value: Any, expected: int, key: str, path: Path, dataset: str) -> list[str]:
    """The class names of a meta file: a flat list of `expected` strings (checked before use)."""
    bad = PtbenchError(f"{str(path)!r}: {key!r} should be a list of {expected} class names; replace the file")
    if type(value) not in (list, tuple):
        raise bad
    if len(value) != expected:
        raise PtbenchError(f"{str(path)!r} names {len(value)} classes, {dataset} has {expected}; replace the file")
    if not all(type(n) in (bytes, str) for n in value):
        raise bad
    try:
        return [n.decode("utf-8") if isinstance(n, bytes) else n for n in value]
    except UnicodeDecodeError:
        raise bad from None


def load_cifar(dataset: str) -> ImagePool:
    """CIFAR-10 or CIFAR-100 (fine labels) from the official python batches."""
    spec = CIFAR[dataset]
    files = cifar_files(dataset)
    meta = _unpickle(files["meta"])
    expected = 10 if dataset == "cifar10" else 100
    names = _class_names(_field(meta, spec["names"], files["meta"]), expected, spec["names"], files["meta"], dataset)
    x, y = _cifar_batches(files["train"], spec["labels"], expected)
    tx, ty = _cifar_batches(files["test"], spec["labels"], expected)
    return ImagePool(x=x, y=y, classes=names, test_x=tx, test_y=ty)


# --------------------------------------------------------------------------- image folders

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
#: The largest image read (8192 x 8192), checked from its header before any pixel is decoded.
IMAGE_MAX_PIXELS = 8192 * 8192


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
    bombs = (Image.DecompressionBombError, Image.DecompressionBombWarning)
    xs, ys = [], []
    with warnings.catch_warnings():
        # PIL warns (above Image.MAX_IMAGE_PIXELS) before it refuses (above twice that): here
        # its warning is an error too, for these files only; MAX_IMAGE_PIXELS is left alone.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for label, (name, files) in enumerate(classes.items()):
            for file in files:
                try:
                    with Image.open(file) as img:  # lazy: reads the header, not the pixels
                        width, height = img.size
                        if width * height > IMAGE_MAX_PIXELS:
                            raise PtbenchError(
                                f"image-folder: image {str(file)!r} is {width}x{height} pixels, more than the "
                                f"{IMAGE_MAX_PIXELS} read here; shrink or remove it"
                            )
                        arr = np.asarray(img.convert(mode).resize((size, size), Image.BILINEAR), dtype=np.uint8)
                except bombs as err:
                    raise PtbenchError(f"image-folder: image {str(file)!r} is too large to read ({_one_line(err)}); shrink or remove it") from None
                except (OSError, UnidentifiedImageError, ValueError, EOFError, SyntaxError) as err:
                    raise PtbenchError(f"image-folder: cannot read image {str(file)!r} ({_one_line(err)}); fix or remove it") from None
                xs.append(arr.reshape(size, size, channels).transpose(2, 0, 1))
                ys.append(label)
    return ImagePool(x=np.stack(xs), y=np.asarray(ys, dtype=np.int64), classes=list(classes))


# --------------------------------------------------------------------------- bundled data


def load_digits_pool() -> ImagePool:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images; no download), in [0, 1]."""
    data = _bundled_digits()
    if data is None:  # not where this scikit-learn version keeps it: ask scikit-learn
        try:
            from sklearn.datasets import load_digits
        except ImportError:  # pragma: no cover
            raise PtbenchError("the digits tasks need scikit-learn: pip install scikit-learn") from None
        digits = load_digits()
        images, target = digits.images, digits.target
    else:
        images, target = data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    x = (images / 16.0).astype(np.float32)[:, None]
    return ImagePool(x=x, y=target.astype(np.int64), classes=[str(i) for i in range(10)])


def _bundled_digits() -> np.ndarray | None:
    """The digits file scikit-learn ships (sklearn/datasets/data/digits.csv.gz), read as
    `sklearn.datasets.load_digits` reads it (`np.loadtxt` of the gzipped CSV: the same
    numbers), without importing scikit-learn: that import (scipy.stats under it) took 1.7 s
    before the first unit of every digits sweep could start. None when the file is not there."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        return None
    with gzip.open(path, mode="rt", encoding="utf-8") as lines:
        return np.loadtxt(lines, delimiter=",")


def as_float(x: np.ndarray) -> np.ndarray:
    """Images as float32 in [0, 1], whatever they were stored as."""
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255.0
    return x.astype(np.float32, copy=False)
