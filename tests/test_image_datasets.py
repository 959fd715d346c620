"""Loaders of datasets on disk, on small files written here in the official formats: IDX
(plain and .gz), CIFAR-10 and CIFAR-100 python pickles, and image folders of PNGs. Missing and
malformed files must stop with a PtbenchError that names the file."""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

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
    assert "mnist/train-images-idx3-ubyte" in lines[0] and "Traceback" not in proc.stderr
