"""Tiers of the image tasks on disk (tasks/images/disk.py): `tier=gpu` is exactly the task
that existed before tiers (same values, same instance names, same store keys), `tier=cpu`
fills in its own budget, an explicit value wins over either, and a dataset that is not on
disk is one line saying where it belongs, exit status 2, before any run trains."""

from __future__ import annotations

import json
import sqlite3

import pytest

import ptbench.sweep.sweep as sweep_module
from ptbench.errors import PtbenchError
from ptbench.registry import default_registry
from ptbench.spec import parse_spec
from ptbench.sweep.plan import expand, load_suite, task_labels
from ptbench.tasks.images.disk import TIER_PARAMS, DiskTask
from test_image_datasets import write_cifar10, write_cifar100, write_image_folder, write_mnist

REGISTRY = default_registry()
DISK_TASKS = ["mnist", "fashion-mnist", "cifar10", "cifar100", "image-folder"]

#: Every parameter value of the disk tasks as they were before tiers existed, written out:
#: their gpu tier must keep them, since the store keys of every earlier run are made of them.
_SPLIT = dict(n_source=None, n_test=None, test_fraction=0.3, source_label_noise=0.0, optimizer="adam")
_MNIST = dict(n_target=10, arch="cnn", width=16, depth=4, source_steps=1000, target_steps=300, batch_size=64, lr=0.001)
_CIFAR = dict(arch="resnet18", width=64, depth=4, source_steps=3000, target_steps=500, batch_size=128, lr=0.001)
BEFORE_TIERS = {
    "mnist": dict(_SPLIT, **_MNIST, source_classes="0-4", target_classes="5-9"),
    "fashion-mnist": dict(_SPLIT, **_MNIST, source_classes="t-shirt+trouser+pullover+dress+coat+shirt",
                          target_classes="sandal+sneaker+bag+ankle-boot"),
    "cifar10": dict(_SPLIT, **_CIFAR, n_target=50, source_classes="airplane+automobile+ship+truck",
                    target_classes="bird+cat+deer+dog+frog+horse"),
    "cifar100": dict(_SPLIT, **_CIFAR, n_target=20, source_classes="0-49", target_classes="50-99"),
    "image-folder": dict(_SPLIT, **_MNIST, source_classes="first-half", target_classes="second-half", root="images", size=32, channels=3),
}


def task(spec: str):
    name, fixed = parse_spec(spec)
    (instance,) = REGISTRY.task(name).expand(fixed)
    return instance


# --------------------------------------------------------------------------- the gpu tier is today's task


@pytest.mark.parametrize("name", DISK_TASKS)
def test_gpu_tier_keeps_every_value_name_and_key(name):
    default = task(name)
    assert default.tier == "gpu" and default.instance_name == name
    for key, value in BEFORE_TIERS[name].items():
        got = getattr(default, key)
        assert got == value and type(got) is type(value), (key, got, value)
    assert default.key == name + json.dumps(BEFORE_TIERS[name], sort_keys=True)
    assert task(f"{name}[tier=gpu]").key == default.key


def test_the_cifar10_key_is_the_one_stored_before_tiers():
    # written out once, as the store holds it, so that no refactoring of the test can hide a change
    assert task("cifar10").key == (
        'cifar10{"arch": "resnet18", "batch_size": 128, "depth": 4, "lr": 0.001, "n_source": null, "n_target": 50, '
        '"n_test": null, "optimizer": "adam", "source_classes": "airplane+automobile+ship+truck", "source_label_noise": 0.0, '
        '"source_steps": 3000, "target_classes": "bird+cat+deer+dog+frog+horse", "target_steps": 500, "test_fraction": 0.3, '
        '"width": 64}'
    )
    before = dict(BEFORE_TIERS["cifar10"], arch="cnn", width=32)  # an explicit override, as before
    assert task("cifar10[arch=cnn,width=32]").key == "cifar10" + json.dumps(before, sort_keys=True)
    assert task("cifar10[arch=cnn,width=32]").instance_name == "cifar10[arch=cnn,width=32]"


def test_other_image_tasks_have_no_tier():
    for name in ("digits-split", "cross-domain"):
        assert "tier" not in REGISTRY.task(name).params


# --------------------------------------------------------------------------- the cpu tier


@pytest.mark.parametrize("name", DISK_TASKS)
def test_cpu_tier_fills_in_its_values(name):
    cls = REGISTRY.task(name)
    cpu = task(f"{name}[tier=cpu]")
    assert cpu.instance_name == f"{name}[tier=cpu]"
    assert set(cls.tiers) == {"gpu", "cpu"}
    for key, value in cls.tier_values("cpu").items():
        assert getattr(cpu, key) == value, key
    assert cpu.arch == "cnn" and cpu.source_steps < cls.tier_values("gpu")["source_steps"]
    assert cpu.n_source is not None  # a per-class cap on source images
    # the split is the task's, at every tier
    for key in ("source_classes", "target_classes", "n_target", "source_label_noise", "optimizer"):
        assert getattr(cpu, key) == getattr(task(name), key)
    # the key holds what a run uses, not the tier's name; the record says which tier it was
    assert json.loads(cpu.key[len(name):]) == {k: v for k, v in cpu.values.items() if k != "tier"}
    assert cpu.values["tier"] == "cpu" and cpu.values["width"] == cpu.width
    assert cpu.key != task(name).key


def test_cifar10_cpu_tier_is_a_narrow_cnn():
    cpu = task("cifar10[tier=cpu]")
    assert (cpu.arch, cpu.width, cpu.depth, cpu.n_source, cpu.n_test) == ("cnn", 16, 4, 1000, 500)
    assert (cpu.source_steps, cpu.target_steps, cpu.batch_size, cpu.lr) == (500, 150, 32, 0.002)


def test_an_explicit_value_wins_over_the_tier():
    wide = task("cifar10[tier=cpu,width=32]")
    assert wide.width == 32 and wide.arch == "cnn" and wide.source_steps == 500
    assert wide.instance_name == "cifar10[tier=cpu,width=32]"
    assert wide.key != task("cifar10[tier=cpu]").key
    assert task("cifar10[arch=cnn]").arch == "cnn" and task("cifar10[arch=cnn]").width == 64  # gpu tier, cnn
    everything = task("cifar10[tier=cpu,n_source=6000]")  # a cap above the class size: every image
    assert everything.n_source == 6000


def test_an_explicit_value_equal_to_the_tiers_is_the_same_instance():
    spelled = task("cifar10[tier=cpu,width=16,source_steps=500,lr=0.002]")
    assert spelled.instance_name == "cifar10[tier=cpu]"
    assert spelled.key == task("cifar10[tier=cpu]").key
    assert task("cifar10[arch=resnet18,width=64]").instance_name == "cifar10"


def test_values_are_typed_and_checked():
    assert task("cifar10[tier=cpu,lr=1]").lr == 1.0 and isinstance(task("cifar10[tier=cpu,lr=1]").lr, float)
    with pytest.raises(PtbenchError, match="'width' expects int"):
        task("cifar10[tier=cpu,width=wide]")
    with pytest.raises(PtbenchError, match="width must be at least 1"):
        task("cifar10[tier=cpu,width=0]")
    with pytest.raises(PtbenchError, match=r"cifar10\[tier=tpu\]: tier must be one of gpu, cpu, got 'tpu'"):
        task("cifar10[tier=tpu]")


@pytest.mark.parametrize("spec", ["cifar10[tier=cpu]", "cifar10[tier=cpu,width=32]", "mnist[tier=cpu,n_target=5]", "cifar100"])
def test_instance_names_paste_back_as_the_same_instance(spec):
    instance = task(spec)
    again = task(instance.instance_name)
    assert again.key == instance.key and again.instance_name == instance.instance_name
    rebuilt = type(instance)(**instance.values)  # a stored record's parameters, all written out
    assert rebuilt.key == instance.key and rebuilt.instance_name == instance.instance_name


def test_every_tier_sets_every_tier_parameter():
    for name in DISK_TASKS:
        cls = REGISTRY.task(name)
        assert issubclass(cls, DiskTask)
        for tier in cls.tiers:
            assert set(cls.tier_values(tier)) == set(TIER_PARAMS)
        assert all(cls.params[key] == [None] for key in TIER_PARAMS)
        assert cls.params["tier"] == ["gpu"] and list(cls.params)[0] == "tier"


def test_list_shows_what_each_tier_sets(cli):
    res = cli("list", "tasks", "cifar10")
    assert res.code == 0, res.err
    assert "tier=gpu: n_source=None, n_test=None, arch=resnet18, width=64, depth=4, source_steps=3000" in res.out
    assert "tier=cpu: n_source=1000, n_test=500, arch=cnn, width=16, depth=4, source_steps=500, target_steps=150" in res.out
    assert "takes its tier's value" in res.out


# --------------------------------------------------------------------------- the cifar suite


def test_the_cifar_suite_is_the_layer_and_filter_sweep_at_the_cpu_tier():
    suite = load_suite("cifar")
    specs = expand(suite, REGISTRY)
    assert {s.task.instance_name for s in specs} == {"cifar10[tier=cpu]"}
    strategies = {s.strategy.instance_name for s in specs}
    assert len(strategies) == 1 + 8 + 8 + 6 and "scratch" in strategies
    assert {s.strategy.name for s in specs} == {"scratch", "partial-layers", "selffer", "partial-filters"}
    assert len(specs) == 115 and suite.seeds == 5 and suite.baseline == "scratch"
    assert task_labels(suite, REGISTRY) == {"cifar10[tier=cpu]": "CIFAR-10 vehicles -> animals"}


# --------------------------------------------------------------------------- data on disk


@pytest.fixture
def no_data(monkeypatch):
    monkeypatch.delenv("PTBENCH_DATA", raising=False)


def test_absent_cifar10_says_where_to_put_it(no_data, tmp_path, monkeypatch):
    with pytest.raises(PtbenchError) as err:
        task("cifar10[tier=cpu]").check_data()
    assert str(err.value) == (
        "cifar10 needs CIFAR-10's python batches in DIR/cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta); "
        "pass --data-dir DIR or set PTBENCH_DATA"
    )
    monkeypatch.setenv("PTBENCH_DATA", str(tmp_path))
    with pytest.raises(PtbenchError, match=rf"in {tmp_path}/cifar-10-batches-py/ .* holds no cifar-10-batches-py/; put it there"):
        task("cifar10").check_data()
    folder = write_cifar10(tmp_path, per_batch=10)
    task("cifar10").check_data()  # every file there: nothing to say
    (folder / "data_batch_3").unlink()
    with pytest.raises(PtbenchError, match=r"'.*/cifar-10-batches-py/data_batch_3' is missing; put the files there"):
        task("cifar10").check_data()
    monkeypatch.setenv("PTBENCH_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(PtbenchError, match="the data directory '.*nowhere' does not exist"):
        task("cifar10").check_data()


def test_every_disk_task_checks_its_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PTBENCH_DATA", str(tmp_path))
    for name in DISK_TASKS:
        with pytest.raises(PtbenchError, match=rf"^{name} needs .* in {tmp_path}/"):
            task(name).check_data()
    write_mnist(tmp_path / "mnist")
    write_mnist(tmp_path / "FashionMNIST" / "raw", gz=True)  # torchvision's layout
    write_cifar10(tmp_path, per_batch=10)
    write_cifar100(tmp_path, n=100)
    write_image_folder(tmp_path / "images", {"a": 1, "b": 1})
    for name in DISK_TASKS:
        task(name).check_data()
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(PtbenchError, match="t10k-labels-idx1-ubyte' is missing"):
        task("mnist").check_data()


def test_loading_says_the_same_line_as_the_check(no_data):
    # without the sweep's pre-flight, the first data a run asks for stops it with the same line
    with pytest.raises(PtbenchError, match=r"^cifar10 needs CIFAR-10's python batches in DIR/cifar-10-batches-py/"):
        task("cifar10[tier=cpu]").pool()


def _stored_runs(path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as db:
        return db.execute("select count(*) from runs").fetchone()[0]


def test_the_cifar_suite_without_data_stops_before_anything_trains(cli, no_data, tmp_path):
    res = cli("run", "--suite", "cifar", "--store", "s.db", "--leaderboard", "lb", "--no-html")
    assert res.code == 2, res.err
    assert "Traceback" not in res.err
    last = res.err.strip().splitlines()[-1]
    assert last.startswith("ptbench: error: cifar10 needs CIFAR-10's python batches in DIR/cifar-10-batches-py/")
    assert last.endswith("pass --data-dir DIR or set PTBENCH_DATA")
    assert _stored_runs(tmp_path / "s.db") == 0 and not (tmp_path / "lb").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli("run", "--suite", "cifar", "--data-dir", str(empty), "--store", "s.db", "--leaderboard", "lb", "--no-html")
    assert res.code == 2 and "holds no cifar-10-batches-py/" in res.err.strip().splitlines()[-1]
    assert _stored_runs(tmp_path / "s.db") == 0


PREFLIGHT = pytest.mark.skipif(
    not hasattr(sweep_module, "check_data"),
    reason="needs the sweep's pre-flight (ptbench.sweep.sweep.check_data, issue 14) that asks every task before training",
)


@PREFLIGHT
def test_absent_data_is_one_line(cli, no_data):
    res = cli("run", "--suite", "cifar", "--store", "s.db", "--leaderboard", "lb", "--no-html")
    assert res.code == 2
    assert res.err.strip().splitlines() == [
        "ptbench: error: cifar10 needs CIFAR-10's python batches in DIR/cifar-10-batches-py/ (data_batch_1..5, test_batch, "
        "batches.meta); pass --data-dir DIR or set PTBENCH_DATA"
    ]


@PREFLIGHT
def test_absent_data_stops_a_suite_before_its_other_tasks_train(cli, no_data, tmp_path):
    (tmp_path / "mixed.toml").write_text(
        'seeds = 1\ntasks = ["digits-split[width=4,source_steps=5,target_steps=5]", "cifar10[tier=cpu]"]\nstrategies = ["scratch"]\n'
    )
    res = cli("run", "--suite", "mixed.toml", "--store", "s.db", "--no-leaderboard", "-q")
    assert res.code == 2 and "cifar10 needs CIFAR-10's python batches" in res.err
    assert _stored_runs(tmp_path / "s.db") == 0  # the digits task, first in the suite, did not run either
