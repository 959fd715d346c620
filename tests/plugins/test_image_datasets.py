"""Loaders of datasets on disk, on small files written here in the official formats: IDX
(plain and .gz), CIFAR-10 and CIFAR-100 python pickles, and image folders of PNGs. Missing and
malformed files must stop with a PtbenchError that names the file."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest

from ptbench.tasks.images import datasets
from ptbench.tasks.images.datasets import load_cifar, load_idx_dataset, load_image_folder, read_idx
from ptbench.errors import PtbenchError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --------------------------------------------------------------------------- writers


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """An IDX file as MNIST ships it: magic 0x00 0x00 0x08 ndim, big-endian int32 dims, bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(raw)
    else:
        path.write_bytes(raw)
    return path


def write_mnist(folder: Path, n_train: int = 60, n_test: int = 30, gz: bool = False, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(n_test, dtype=np.uint8) % 10,
    }
    for name, array in arrays.items():
        write_idx(folder / name, array, gz=gz)
    return arrays


def official_pickle(obj: dict) -> bytes:
    """A protocol-2 pickle whose numpy references read as in the official CIFAR files
    (written by Python 2 with numpy.core)."""
    return pickle.dumps(obj, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def write_cifar10(root: Path, per_batch: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": [int(i % 10) for i in range(per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"img{i}.png".encode() for i in range(per_batch)],
        }
        (folder / name).write_bytes(official_pickle(batch))
    meta = {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(official_pickle(meta))
    return folder


def write_cifar100(root: Path, n: int = 200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in ("train", "test"):
        batch = {
            b"filenames": [f"img{i}.png".encode() for i in range(n)],
            b"batch_label": name.encode(),
            b"fine_labels": [int(i % 100) for i in range(n)],
            b"coarse_labels": [int(i % 20) for i in range(n)],
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
        (folder / name).write_bytes(official_pickle(batch))
    meta = {b"fine_label_names": [f"class_{i:02d}".encode() for i in range(100)], b"coarse_label_names": [f"super_{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(official_pickle(meta))
    return folder


def write_image_folder(root: Path, classes: dict[str, int], size: int = 12, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    monkeypatch.setenv("PTBENCH_DATA", str(tmp_path))
    return tmp_path


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_plain_and_gz(tmp_path, gz):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / "x-idx3-ubyte", array, gz=gz)
    assert np.array_equal(read_idx(path), array)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loads_the_four_files(data_env, gz):
    arrays = write_mnist(data_env / "mnist", gz=gz)
    pool = load_idx_dataset("mnist")
    assert pool.x.shape == (60, 1, 28, 28) and pool.test_x.shape == (30, 1, 28, 28)
    assert np.array_equal(pool.x[:, 0], arrays["train-images-idx3-ubyte"])
    assert np.array_equal(pool.test_y, arrays["t10k-labels-idx1-ubyte"])
    assert pool.classes == [str(i) for i in range(10)]


def test_fashion_mnist_reads_torchvision_layout(data_env):
    write_mnist(data_env / "FashionMNIST" / "raw", gz=True)
    pool = load_idx_dataset("fashion-mnist")
    assert pool.x.shape[0] == 60 and "sneaker" in pool.classes


def test_missing_mnist_names_the_expected_file(data_env):
    with pytest.raises(PtbenchError, match=r"mnist/train-images-idx3-ubyte"):
        load_idx_dataset("mnist")


def test_one_missing_idx_file_is_named(data_env):
    write_mnist(data_env / "mnist")
    (data_env / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(PtbenchError, match=r"t10k-labels-idx1-ubyte"):
        load_idx_dataset("mnist")


def test_truncated_idx_file_is_named(data_env):
    write_mnist(data_env / "mnist")
    path = data_env / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(PtbenchError, match=r"train-images-idx3-ubyte.*truncated"):
        load_idx_dataset("mnist")


def test_bad_magic_and_bad_gzip_are_named(data_env):
    write_mnist(data_env / "mnist")
    (data_env / "mnist" / "train-labels-idx1-ubyte").write_bytes(b"\x89PNG not an idx file")
    with pytest.raises(PtbenchError, match=r"train-labels-idx1-ubyte.*magic"):
        load_idx_dataset("mnist")
    other = data_env / "other"
    other.mkdir()
    (other / "broken.gz").write_bytes(b"this is not gzip data")
    with pytest.raises(PtbenchError, match=r"broken\.gz"):
        read_idx(other / "broken.gz")


def test_label_count_mismatch_is_named(data_env):
    write_mnist(data_env / "mnist")
    write_idx(data_env / "mnist" / "train-labels-idx1-ubyte", np.zeros(59, dtype=np.uint8))
    with pytest.raises(PtbenchError, match=r"train-labels-idx1-ubyte.*one label per image"):
        load_idx_dataset("mnist")


def test_no_data_dir_says_how_to_give_one(monkeypatch):
    monkeypatch.delenv("PTBENCH_DATA", raising=False)
    with pytest.raises(PtbenchError, match=r"--data-dir"):
        load_idx_dataset("mnist")


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_python_batches(data_env):
    write_cifar10(data_env)
    pool = load_cifar("cifar10")
    assert pool.x.shape == (100, 3, 32, 32) and pool.x.dtype == np.uint8
    assert pool.test_x.shape == (20, 3, 32, 32)
    assert pool.classes == CIFAR10_NAMES
    assert sorted(set(pool.y.tolist())) == list(range(10))
    # rows are 1024 red, then green, then blue values: channel 0 is the first 1024 bytes
    raw = pickle.loads((data_env / "cifar-10-batches-py" / "data_batch_1").read_bytes(), encoding="bytes")
    assert np.array_equal(pool.x[0, 0].reshape(-1), raw[b"data"][0, :1024])


def test_cifar100_uses_fine_labels(data_env):
    write_cifar100(data_env)
    pool = load_cifar("cifar100")
    assert len(pool.classes) == 100 and pool.classes[7] == "class_07"
    assert pool.y.max() == 99 and pool.x.shape == (200, 3, 32, 32)


def test_missing_cifar_batch_is_named(data_env):
    folder = write_cifar10(data_env)
    (folder / "data_batch_3").unlink()
    with pytest.raises(PtbenchError, match=r"cifar-10-batches-py/data_batch_3"):
        load_cifar("cifar10")
    with pytest.raises(PtbenchError, match=r"cifar-100-python/train"):
        load_cifar("cifar100")


def test_malformed_cifar_batches_are_named(data_env):
    folder = write_cifar10(data_env)
    (folder / "test_batch").write_bytes(b"garbage, not a pickle")
    with pytest.raises(PtbenchError, match=r"test_batch.*not a CIFAR python batch"):
        load_cifar("cifar10")
    (folder / "test_batch").write_bytes(official_pickle({b"labels": [0, 1]}))
    with pytest.raises(PtbenchError, match=r"test_batch.*'data'"):
        load_cifar("cifar10")


def test_cifar_pickles_cannot_run_code(data_env):
    folder = write_cifar10(data_env)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": Evil()}, protocol=2))
    with pytest.raises(PtbenchError, match=r"batches\.meta.*refusing to load"):
        load_cifar("cifar10")


# --------------------------------------------------------------------------- image folders


def test_image_folder_reads_resizes_and_labels(data_env):
    write_image_folder(data_env / "images", {"cats": 3, "dogs": 2, "owls": 4})
    pool = load_image_folder("images", size=8, channels=3)
    assert pool.classes == ["cats", "dogs", "owls"]
    assert pool.x.shape == (9, 3, 8, 8) and pool.x.dtype == np.uint8
    assert pool.y.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    grey = load_image_folder(str(data_env / "images"), size=8, channels=1)  # absolute root
    assert grey.x.shape == (9, 1, 8, 8)


def test_image_folder_errors_name_the_path(data_env):
    with pytest.raises(PtbenchError, match=r"images.*one sub-folder of images per class"):
        load_image_folder("images", 8, 3)
    write_image_folder(data_env / "images", {"cats": 2, "dogs": 2})
    (data_env / "images" / "dogs" / "1.png").write_bytes(b"not a png")
    with pytest.raises(PtbenchError, match=r"dogs/1\.png"):
        load_image_folder("images", 8, 3)
    (data_env / "images" / "empty").mkdir()
    with pytest.raises(PtbenchError, match=r"empty.*holds no images"):
        load_image_folder("images", 8, 3)


# --------------------------------------------------------------------------- the CLI


@pytest.mark.slow  # a real process (or a whole report with plots): seconds, not milliseconds
def test_cli_missing_data_is_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PTBENCH_DATA"}
    proc = subprocess.run(
        [sys.executable, "-m", "ptbench", "run", "--task", "mnist", "--data-dir", str(empty), "--strategy", "scratch",
         "--seeds", "1", "--store", str(tmp_path / "r.db"), "--no-leaderboard", "--quiet"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "mnist/ (train-images-idx3-ubyte" in lines[0] and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- hostile files
#
# Each reader bounds its memory before it allocates: a small file that promises (or expands
# to) gigabytes stops with one line naming it. The bombs are real files in the official
# formats, made cheaply; the slow tests run the CLI in a subprocess and measure its peak RSS.

GIB = 2**30


def idx_header(dims: tuple[int, ...], ndim: int | None = None) -> bytes:
    ndim = len(dims) if ndim is None else ndim
    return bytes([0, 0, 0x08, ndim]) + b"".join(int(d).to_bytes(4, "big") for d in dims)


def write_gzip_bomb(path: Path, dims: tuple[int, ...] = (60000, 28, 28), zeros: int = 3 * GIB // 2) -> Path:
    """A valid IDX .gz whose header promises `dims`, followed by `zeros` bytes of zeros: a
    header member and then one 16 MiB member of zeros repeated (a gzip file is a series of
    members, RFC 1952), so ~1.5 GiB of data takes ~1.5 MB on disk and 0.1 s to make."""
    chunk = 16 * 2**20
    member = gzip.compress(bytes(chunk), compresslevel=9)
    with path.open("wb") as f:
        f.write(gzip.compress(idx_header(dims)))
        for _ in range(zeros // chunk):
            f.write(member)
    return path


def single_line_error(call) -> str:
    with pytest.raises(PtbenchError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    return message


def run_cli_measured(tmp_path: Path, *args: str) -> tuple[int, list[str], int]:
    """`python -m ptbench ARGS` in a subprocess: (exit status, non-empty stderr lines, peak RSS
    in bytes), the RSS measured by a wrapper process with getrusage(RUSAGE_CHILDREN)."""
    resource = pytest.importorskip("resource")
    del resource
    rss_file = tmp_path / "maxrss"
    wrapper = (
        "import resource, subprocess, sys\n"
        "rc = subprocess.run(sys.argv[2:]).returncode\n"
        "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
        "sys.exit(rc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PTBENCH_DATA"}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", wrapper, str(rss_file), sys.executable, "-m", "ptbench", *args],
        capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path,
    )
    maxrss = int(rss_file.read_text()) * (1 if sys.platform == "darwin" else 1024)  # Linux: KiB
    return proc.returncode, [line for line in proc.stderr.splitlines() if line.strip()], maxrss


def cli_run(task: str, data: Path, store: Path) -> list[str]:
    return ["run", "--task", task, "--strategy", "scratch", "--seeds", "1", "--data-dir", str(data),
            "--store", str(store), "--no-leaderboard", "--quiet"]


# IDX ------------------------------------------------------------------------------------


def test_idx_gzip_bomb_stops_after_the_promised_bytes(tmp_path):
    bomb = write_gzip_bomb(tmp_path / "train-images-idx3-ubyte.gz")
    assert bomb.stat().st_size < 2 * 2**20
    start = time.perf_counter()
    message = single_line_error(lambda: read_idx(bomb))
    assert time.perf_counter() - start < 2.0
    assert "train-images-idx3-ubyte.gz" in message and "trailing data" in message and "47040000" in message


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dims", [(65536, 65536, 65536, 65536), (2**32 - 1,) * 4, (60000, 28, 28, 4096)])
def test_idx_header_promising_too_much_is_refused_before_reading(tmp_path, gz, dims):
    # (65536,)*4 multiplies to 2**64: as int64 (numpy's product) it wraps to 0
    path = tmp_path / ("x-idx4-ubyte" + (".gz" if gz else ""))
    raw = idx_header(dims) + bytes(16)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    message = single_line_error(lambda: read_idx(path))
    assert path.name in message and f"more than the {2**31}" in message


@pytest.mark.parametrize("ndim", [0, 5, 255])
def test_idx_header_with_odd_dimension_count_is_refused(tmp_path, ndim):
    path = tmp_path / "x-idx-ubyte"
    path.write_bytes(idx_header((2,) * min(ndim, 8), ndim=ndim) + bytes(64))
    message = single_line_error(lambda: read_idx(path))
    assert "x-idx-ubyte" in message and f"{ndim} dimensions" in message


def test_idx_trailing_and_missing_data_plain_and_gz(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_header(array.shape) + array.tobytes()
    for name, content, expected in [
        ("long-idx3-ubyte", raw + b"\0", "holds 25 bytes of data, its header promises 24"),
        ("short-idx3-ubyte", raw[:-1], "holds 23 bytes of data, its header promises 24"),
        ("header-idx3-ubyte", raw[:9], "truncated IDX header"),
    ]:
        (tmp_path / name).write_bytes(content)
        (tmp_path / (name + ".gz")).write_bytes(gzip.compress(content))
        assert expected in single_line_error(lambda: read_idx(tmp_path / name))
    assert "trailing data" in single_line_error(lambda: read_idx(tmp_path / "long-idx3-ubyte.gz"))
    assert "holds 23 bytes" in single_line_error(lambda: read_idx(tmp_path / "short-idx3-ubyte.gz"))
    assert "truncated IDX header" in single_line_error(lambda: read_idx(tmp_path / "header-idx3-ubyte.gz"))


def test_idx_corrupt_gzip_streams_are_one_line(tmp_path):
    array = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    good = write_idx(tmp_path / "good-idx3-ubyte", array, gz=True).read_bytes()
    cases = {
        "deflate.gz": good[:20] + bytes(b ^ 0xFF for b in good[20:60]) + good[60:],  # zlib.error
        "crc.gz": good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:],  # CRC check failed
        "cut.gz": good[: len(good) // 2],  # EOFError: ended before the end-of-stream marker
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        message = single_line_error(lambda: read_idx(tmp_path / name))
        assert name in message, message


@pytest.mark.slow
def test_cli_on_an_idx_gzip_bomb_is_one_line_exit_2_and_bounded_memory(tmp_path):
    folder = tmp_path / "data" / "mnist"
    write_mnist(folder)
    (folder / "train-images-idx3-ubyte").unlink()
    write_gzip_bomb(folder / "train-images-idx3-ubyte.gz")  # inflates to 1.5 GiB
    start = time.perf_counter()
    code, lines, maxrss = run_cli_measured(tmp_path, *cli_run("mnist", tmp_path / "data", tmp_path / "r.db"))
    assert code == 2 and len(lines) == 1, lines
    assert "train-images-idx3-ubyte.gz" in lines[0] and "trailing data" in lines[0]
    assert maxrss < GIB, f"peak RSS {maxrss / 2**20:.0f} MiB"
    assert time.perf_counter() - start < 60


# CIFAR ----------------------------------------------------------------------------------


def laughs(depth: int, leaf=0, kind=list):
    """Nested shared containers: `depth` levels of pairs of the same object, 2**depth leaves
    but only `depth` distinct objects, so the pickle is a few hundred bytes."""
    node = kind([leaf, leaf])
    for _ in range(depth - 1):
        node = kind([node, node])
    return node


def write_cifar10_with(data_env: Path, name: str, obj) -> Path:
    folder = write_cifar10(data_env, per_batch=2)
    raw = official_pickle(obj)
    (folder / name).write_bytes(raw)
    return folder / name


@pytest.mark.parametrize("where", ["data", "labels", "tuple-labels", "names"])
def test_cifar_billion_laughs_pickle_is_refused_before_expanding(data_env, where):
    bomb = laughs(30, kind=tuple if where == "tuple-labels" else list)  # 2**30 leaves
    good = {b"data": np.zeros((2, 3072), dtype=np.uint8), b"labels": [0, 1]}
    if where == "data":
        path = write_cifar10_with(data_env, "data_batch_1", {**good, b"data": bomb})
    elif where == "names":
        path = write_cifar10_with(data_env, "batches.meta", {b"label_names": [bomb] * 10})
    else:
        path = write_cifar10_with(data_env, "data_batch_1", {**good, b"labels": bomb})
    # the bomb itself is ~200 bytes; the labels' file also holds two real rows of data
    assert path.stat().st_size < (600 if where in ("data", "names") else 7000)
    start = time.perf_counter()
    message = single_line_error(lambda: load_cifar("cifar10"))
    assert time.perf_counter() - start < 2.0
    assert str(path) in message
    assert {"data": "'data' should be", "names": "class names"}.get(where, "'labels' should hold") in message


def tuple_key_bomb(depth: int) -> bytes:
    """A protocol-2 pickle of {t: 1} where t is `depth` levels of (t', t'), written opcode by
    opcode (building the dict here would hash t, as unpickling it does: 2**depth steps)."""
    ops = [pickle.PROTO + b"\x02", pickle.EMPTY_DICT, pickle.NONE, pickle.NONE, pickle.TUPLE2, pickle.BINPUT + b"\x00", pickle.POP]
    for level in range(depth):
        get = pickle.BINGET + bytes([level])
        ops += [get, get, pickle.TUPLE2, pickle.BINPUT + bytes([level + 1]), pickle.POP]
    ops += [pickle.BINGET + bytes([depth]), pickle.BININT1 + b"\x01", pickle.SETITEM, pickle.STOP]
    return b"".join(ops)


def test_cifar_tuple_key_hash_bomb_is_refused(data_env):
    # hashing 2**40 shared tuples would take hours; a key that is not a plain value is refused
    folder = write_cifar10(data_env, per_batch=2)
    path = folder / "batches.meta"
    path.write_bytes(tuple_key_bomb(40))
    assert path.stat().st_size < 400
    message = single_line_error(lambda: load_cifar("cifar10"))
    assert "batches.meta" in message and "refusing a dict key of type tuple" in message


class _Call:
    """Pickles as a call of `func(*args)`: how a hostile pickle names a global to call."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("value, expected", [
    (_Call(np.ndarray, (100000, 3072), "u1"), "refusing to call numpy.ndarray"),  # 300 MB, uninitialised
    (_Call(__import__("codecs").encode, b"abc" * 20, "hex"), "_codecs.encode other than to latin1"),  # doubles per call
    (_Call(np.dtype, "O", False, True), "numpy dtype object"),
    (_Call(np.dtype, "u1,u1", False, True), "numpy dtype"),
    ({1, 2}, "pickle opcode EMPTY_SET"),  # protocol 4 writes sets as opcodes
], ids=["ndarray-call", "hex-codec", "object-dtype", "structured-dtype", "set"])
def test_cifar_unpickler_bounds_what_its_globals_do(data_env, value, expected):
    batch = {b"data": value, b"labels": [0]}
    path = write_cifar10(data_env, per_batch=2) / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=4) if isinstance(value, set) else official_pickle(batch))
    message = single_line_error(lambda: load_cifar("cifar10"))
    assert "data_batch_1" in message and expected in message


def test_cifar_reconstruct_only_as_numpy_writes_it(data_env):
    # numpy's own pickles call _reconstruct(ndarray, (0,), b'b'); a larger shape allocates
    from numpy._core.multiarray import _reconstruct

    write_cifar10_with(data_env, "data_batch_1", {b"data": _Call(_reconstruct, np.ndarray, (50000, 3072), b"b"), b"labels": [0]})
    assert "_reconstruct arguments" in single_line_error(lambda: load_cifar("cifar10"))


def test_cifar_batch_larger_than_any_official_one_is_refused_unread(data_env):
    folder = write_cifar10(data_env, per_batch=2)
    with (folder / "data_batch_2").open("r+b") as f:
        f.truncate(datasets.CIFAR_MAX_BYTES + 1)  # sparse: costs no disk
    message = single_line_error(lambda: load_cifar("cifar10"))
    assert "data_batch_2" in message and "more than any CIFAR python batch" in message


def test_cifar_data_as_bytes_and_label_arrays(data_env):
    rows = np.random.default_rng(1).integers(0, 256, (3, 3072), dtype=np.uint8)
    folder = write_cifar10(data_env, per_batch=2)
    (folder / "data_batch_1").write_bytes(official_pickle({b"data": rows.tobytes(), b"labels": [1, 2, 3]}))
    (folder / "data_batch_2").write_bytes(official_pickle({b"data": rows, b"labels": np.array([4, 5, 6], dtype=np.uint8)}))
    pool = load_cifar("cifar10")
    assert pool.x.shape == (3 + 3 + 3 * 2, 3, 32, 32)
    assert np.array_equal(pool.x[0].reshape(-1), rows[0]) and pool.y[:6].tolist() == [1, 2, 3, 4, 5, 6]
    for data, labels in [
        (rows.tobytes()[:-1], [1, 2, 3]),  # bytes one short
        (rows, [1, 2]),  # one label missing
        (rows, [1, 2, 10]),  # out of range
        (rows, [1, 2, 3.0]),  # not an int
        (rows, [1, 2, True]),
        (rows, [1, 2, [3]]),  # nested
        (rows, np.array([1, 2, 3], dtype=np.float32)),
        (rows, b"\x01\x02\x03"),
        (rows.astype(np.int64), [1, 2, 3]),
    ]:
        (folder / "data_batch_1").write_bytes(official_pickle({b"data": data, b"labels": labels}))
        assert "data_batch_1" in single_line_error(lambda: load_cifar("cifar10"))


@pytest.mark.slow
def test_cli_on_cifar_pickle_bombs_is_one_line_exit_2_and_bounded_memory(tmp_path):
    data = tmp_path / "data"
    folder = write_cifar10(data, per_batch=2)
    # 2**34 leaves in ~250 bytes: np.asarray would want 128 GiB
    (folder / "data_batch_1").write_bytes(official_pickle({b"data": laughs(34), b"labels": laughs(34)}))
    code, lines, maxrss = run_cli_measured(tmp_path, *cli_run("cifar10", data, tmp_path / "r.db"))
    assert code == 2 and len(lines) == 1, lines
    assert "data_batch_1" in lines[0] and maxrss < GIB


# image folders --------------------------------------------------------------------------


def write_png_claiming(path: Path, width: int, height: int) -> Path:
    """A ~70-byte PNG whose IHDR claims width x height (a 1x1 image with its header patched
    and the chunk's CRC recomputed): PIL reads the header, the pixels are never there."""
    from PIL import Image

    Image.new("RGB", (1, 1)).save(path)
    raw = bytearray(path.read_bytes())
    assert raw[12:16] == b"IHDR"
    raw[16:24] = struct.pack(">II", width, height)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("width, height, expected", [
    (20000, 20000, "too large to read"),  # 400 megapixels: PIL's DecompressionBombError
    (10000, 10000, "too large to read"),  # 100 megapixels: PIL's DecompressionBombWarning, an error here
    (8200, 8200, "is 8200x8200 pixels"),  # under PIL's limit, over the 8192 x 8192 read here
])
def test_image_folder_refuses_huge_images_by_their_header(data_env, width, height, expected):
    from PIL import Image

    write_image_folder(data_env / "images", {"cats": 2, "dogs": 2})
    huge = write_png_claiming(data_env / "images" / "dogs" / "huge.png", width, height)
    assert huge.stat().st_size < 200
    limit, filters = Image.MAX_IMAGE_PIXELS, list(warnings.filters)
    start = time.perf_counter()
    message = single_line_error(lambda: load_image_folder("images", 8, 3))
    assert time.perf_counter() - start < 2.0
    assert str(huge) in message and expected in message
    assert Image.MAX_IMAGE_PIXELS == limit and warnings.filters == filters  # nothing changed for the process


def test_the_digits_pool_is_scikit_learns_load_digits_read_without_importing_scikit_learn():
    """The digits come from the file scikit-learn bundles, read as load_digits reads it, so
    that a digits sweep need not import scikit-learn (and scipy under it: 1.7 s) before its
    first unit; the numbers are load_digits's, bit for bit. A fresh interpreter shows the
    import is not needed; one without the file falls back to load_digits itself."""
    from sklearn.datasets import load_digits

    pool = datasets.load_digits_pool()
    digits = load_digits()
    assert np.array_equal(pool.x, (digits.images / 16.0).astype(np.float32)[:, None]) and pool.x.dtype == np.float32
    assert np.array_equal(pool.y, digits.target) and pool.y.dtype == np.int64 and pool.x.shape == (1797, 1, 8, 8)
    code = "import sys; from ptbench.tasks.images.datasets import load_digits_pool; load_digits_pool(); print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_the_digits_pool_falls_back_to_load_digits_where_the_file_is_elsewhere(monkeypatch):
    from sklearn.datasets import load_digits

    monkeypatch.setattr(datasets, "_bundled_digits", lambda: None)
    pool = datasets.load_digits_pool()
    assert np.array_equal(pool.x, (load_digits().images / 16.0).astype(np.float32)[:, None])
