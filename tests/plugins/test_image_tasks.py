"""The image tasks: class splits, disjoint training and test images, label remapping and
noise, the cross-domain pair, the disk tasks on small written files, and one end-to-end run
of a tiny digits task through the harness into a real SQLite store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ptbench.tasks.images.datasets import load_digits_pool
from ptbench.errors import PtbenchError
from ptbench.tasks.images.base import draw_split, noisy_labels, parse_classes
from ptbench.registry import default_registry
from ptbench.rng import RandomStreams
from ptbench.run.options import RunOptions
from ptbench.results.store import Store
from ptbench.sweep.plan import expand, load_suite
from ptbench.sweep.sweep import run_sweep
from test_image_datasets import write_cifar10, write_image_folder, write_mnist

REGISTRY = default_registry()


def task(spec_name: str, **values):
    return REGISTRY.task(spec_name)(**values)


def test_class_set_grammar():
    names = [str(i) for i in range(10)]
    assert parse_classes("0-4", names, "x") == [0, 1, 2, 3, 4]
    assert parse_classes("7+1+3-4", names, "x") == [7, 1, 3, 4]
    cifar = ["airplane", "automobile", "bird"]
    assert parse_classes("bird+airplane", cifar, "x") == [2, 0]
    for bad in ("0-12", "4-2", "1+1", "cat", "1++2"):
        with pytest.raises(ValueError):
            parse_classes(bad, names, "x")


def test_bad_class_sets_are_user_errors():
    with pytest.raises(PtbenchError, match="source_classes"):
        task("digits-split", source_classes="0-11")
    with pytest.raises(PtbenchError, match="at least 2"):
        task("digits-split", target_classes="5")
    with pytest.raises(PtbenchError, match="cifar10.*unknown class 'zebra'"):
        task("cifar10", target_classes="zebra+cat")


def test_digits_split_is_disjoint_and_paired():
    pool = load_digits_pool()
    split = draw_split(pool, [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], None, 10, None, 0.3, RandomStreams(0).numpy("split"))
    (src_train, src_test), (tgt_train, tgt_test) = split["source"], split["target"]
    assert len(set(src_train) & set(tgt_train)) == 0
    for test in (src_test, tgt_test):  # test images are never training images
        assert len(set(test) & (set(src_train) | set(tgt_train))) == 0
    assert np.bincount(pool.y[tgt_train], minlength=10)[5:].tolist() == [10] * 5
    assert set(pool.y[src_train]) == {0, 1, 2, 3, 4}
    again = draw_split(pool, [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], None, 10, None, 0.3, RandomStreams(0).numpy("split"))
    assert np.array_equal(again["target"][0], tgt_train)  # same seed, same split: pairing
    other = draw_split(pool, [0, 1, 2, 3, 4], [5, 6, 7, 8, 9], None, 10, None, 0.3, RandomStreams(1).numpy("split"))
    assert not np.array_equal(other["target"][0], tgt_train)


def test_shared_classes_never_share_images():
    pool = load_digits_pool()
    split = draw_split(pool, list(range(10)), list(range(10)), 50, 5, None, 0.3, RandomStreams(0).numpy("split"))
    assert len(set(split["source"][0]) & set(split["target"][0])) == 0
    assert len(split["source"][0]) == 500 and len(split["target"][0]) == 50


def test_digits_task_data_remaps_labels_and_normalises():
    t = task("digits-split", target_classes="9+5+7", n_target=4)
    streams = RandomStreams(3)
    source, target = t.data("source", streams), t.data("target", streams)
    assert target.train.y.dtype == torch.int64 and sorted(target.train.y.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    assert target.extras["classes"] == ["9", "5", "7"]  # label 0 is digit 9, in the order written
    assert set(source.train.y.tolist()) == {0, 1, 2, 3, 4}
    assert source.train.x.shape[1:] == (1, 8, 8)
    pooled = torch.cat([source.train.x, target.train.x])
    assert abs(float(pooled.mean())) < 0.3 and 0.7 < float(pooled.std()) < 1.3  # standardised
    # both roles see the same split, so the source's test set contains no target training image
    assert not (target.train.x[:, None] == source.test.x[None]).flatten(2).all(dim=2).any()
    model = t.model("target", torch.Generator().manual_seed(0))
    assert model(target.train.x).shape == (12, 3) and model.inherit_head is False
    same = task("digits-split", source_classes="0-4", target_classes="0-4")
    assert same.model("target", torch.Generator().manual_seed(0)).inherit_head is True


def test_source_label_noise_changes_that_share_of_labels():
    y = np.arange(10000) % 5
    noisy = noisy_labels(y, 5, 0.3, np.random.default_rng(0))
    assert abs(float((noisy != y).mean()) - 0.3) < 0.02 and noisy.max() == 4
    clean = task("digits-split").data("source", RandomStreams(0)).train.y
    dirty = task("digits-split", source_label_noise=0.4).data("source", RandomStreams(0)).train.y
    assert 0.3 < float((clean != dirty).float().mean()) < 0.5
    target_clean = task("digits-split").data("target", RandomStreams(0)).train.y
    assert torch.equal(target_clean, task("digits-split", source_label_noise=0.4).data("target", RandomStreams(0)).train.y)


def test_cross_domain_pair_textures_to_digits():
    t = task("cross-domain", n_target=3, pool=20, n_test=10)
    streams = RandomStreams(0)
    source, target = t.data("source", streams), t.data("target", streams)
    assert source.extras["classes"] == ["brick", "grass", "gravel"]
    assert source.train.x.shape == (60, 1, 8, 8) and source.test.x.shape == (30, 1, 8, 8)
    assert target.train.x.shape == (30, 1, 8, 8) and target.extras["classes"] == [str(i) for i in range(10)]
    assert t.model("target", torch.Generator().manual_seed(0)).inherit_head is False
    with pytest.raises(PtbenchError, match="same domain"):
        task("cross-domain", source="digits", target="digits")


def test_patch_test_regions_are_disjoint_from_training_regions(monkeypatch):
    from ptbench.tasks.images import cross_domain

    # a picture whose grey value is its column: a patch's mean tells where it was cut from
    ramp = np.tile(np.arange(100, dtype=np.float32) / 100, (40, 1))
    monkeypatch.setattr(cross_domain, "picture", lambda name: ramp)
    pool = cross_domain.patch_pool("textures", 16, 200, 200, 0.3, np.random.default_rng(0))
    cut = 70 / 100  # training patches lie left of column 70, test patches right of it
    assert pool.x.max() < cut and pool.test_x.min() >= cut
    assert pool.x.shape == (600, 1, 8, 8) and np.bincount(pool.test_y).tolist() == [200] * 3


def test_disk_tasks_on_written_files(tmp_path, monkeypatch):
    monkeypatch.setenv("PTBENCH_DATA", str(tmp_path))
    write_mnist(tmp_path / "mnist", n_train=200, n_test=50, gz=True)
    mnist = task("mnist", n_target=3)
    target = mnist.data("target", RandomStreams(0))
    assert target.train.x.shape == (15, 1, 28, 28) and set(target.train.y.tolist()) == {0, 1, 2, 3, 4}
    assert len(target.test) == 25  # the official test split, classes 5-9
    write_cifar10(tmp_path, per_batch=30)
    cifar = task("cifar10", n_target=2, arch="cnn", width=4, depth=2)
    source = cifar.data("source", RandomStreams(0))
    assert source.extras["classes"] == ["airplane", "automobile", "ship", "truck"]
    assert source.train.x.shape[1:] == (3, 32, 32)
    assert cifar.model("source", torch.Generator().manual_seed(0))(source.train.x[:2]).shape == (2, 4)
    write_image_folder(tmp_path / "images", {"a": 6, "b": 6, "c": 6, "d": 6}, size=10)
    folder = task("image-folder", n_target=2, size=8)
    assert folder.sides() == ([0, 1], [2, 3])
    tdata = folder.data("target", RandomStreams(0))
    assert tdata.train.x.shape == (4, 3, 8, 8) and tdata.extras["classes"] == ["c", "d"]


def test_too_few_images_is_a_user_error():
    with pytest.raises(PtbenchError, match="n_target=500"):
        task("digits-split", n_target=500).data("target", RandomStreams(0))


def test_tiny_digits_task_end_to_end(tmp_path):
    spec = "digits-split[n_target=5,width=4,depth=2,source_steps=40,target_steps=20,n_test=10]"
    suite = load_suite("quick")
    specs = expand(suite, REGISTRY, tasks=[spec], strategies=["scratch", "partial-layers[layers=2,freeze=true]"], seeds=2)
    with Store(tmp_path / "r.db") as store:
        report = run_sweep(specs, store, RunOptions(device="cpu"), progress=False)
        df = store.frame()
    assert report.failed == 0 and len(df) == 4
    assert (df["status"] == "ok").all()
    assert (df["source_acc"] > 0.4).all()  # five classes: chance is 0.2
    assert df["target_acc"].between(0, 1).all()
    # every strategy of a seed met the same source model
    assert df.groupby("seed")["source_acc"].nunique().eq(1).all()
