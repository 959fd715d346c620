"""Class splits of image datasets a user already has on disk (nothing is downloaded).

Point `--data-dir DIR` (or PTBENCH_DATA) at the folder that holds them:

    DIR/mnist/            train-images-idx3-ubyte, train-labels-idx1-ubyte,
                          t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (plain or .gz)
    DIR/fashion-mnist/    the same four names
    DIR/cifar-10-batches-py/   data_batch_1..5, test_batch, batches.meta
    DIR/cifar-100-python/      train, test, meta
    DIR/images/CLASS/*.png     image-folder (another folder: root=NAME or an absolute path)

A missing file stops the run with one line saying where the data belongs; every task here
has `check_data()`, which says so before anything is read or trained, and a malformed file
stops it with one line naming the file (`datasets.py`).

Each dataset has a default source/target class split that `source_classes` and
`target_classes` change (see ptbench.tasks.images.base for the grammar): MNIST digits 0-4 -> 5-9;
Fashion-MNIST clothes -> shoes and bags; CIFAR-10 vehicles -> animals; CIFAR-100 the first
50 fine classes -> the last 50 (alphabetical, so close to Yosinski's random halves);
image folders the first half of the sorted class folders -> the second half. Test images are
the official test sets (image folders hold out `test_fraction` of each class).

Tiers: one task, two budgets
----------------------------
The same split is worth running at two sizes: the budget these tasks were designed with
(ResNet-18, width 64, 3000 source steps on CIFAR), which wants a GPU, and one that a 2-core
CPU finishes in minutes, so that real images are not only for machines with a GPU. `tier`
names the budget: `gpu` (the default, so `cifar10` is the task it always was, with the same
store keys) or `cpu` (`cifar10[tier=cpu]`). A tier sets the parameters in TIER_PARAMS (model,
steps, batch, learning rate, and caps on the source and test images per class); it leaves
the split itself (classes, `n_target`, label noise) alone, so both tiers ask the same
question with different means. Those parameters default to None, meaning "the tier's
value", and `python -m ptbench list tasks` prints what each tier sets. A value given
explicitly wins: `cifar10[tier=cpu,width=32]` is the CPU budget with a wider network.
`n_source` and `n_test` are caps where None means "every image": at a tier that caps them,
ask for every image with a number at least the class size (`n_source=6000`).

Identity: a task's key (the store's and the donor cache's) holds every value a run uses,
with the tier's filled in, and not `tier` itself, which only names a set of them; so the
gpu-tier keys are exactly the keys these tasks had before tiers existed. A value given
explicitly but equal to its tier's is dropped from the instance name (`cifar10[tier=cpu,
width=16]` is `cifar10[tier=cpu]`): one experiment, one name, one key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from ptbench.errors import PtbenchError
from ptbench.spec import format_value
from ptbench.tasks.images.base import ClassSplitTask, parse_classes, split_params
from ptbench.tasks.images.datasets import (
    CIFAR,
    DATA_ENV,
    FASHION_CLASSES,
    IDX_FILES,
    IDX_FOLDERS,
    MNIST_CLASSES,
    ImagePool,
    load_cifar,
    load_idx_dataset,
    load_image_folder,
)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

#: The tier a SPEC that names none runs at: today's budgets, so today's names and keys.
DEFAULT_TIER = "gpu"
#: The parameters a tier sets, with their types (their default, None, cannot tell the type).
TIER_PARAMS: dict[str, type] = {
    "n_source": int,
    "n_test": int,
    "arch": str,
    "width": int,
    "depth": int,
    "source_steps": int,
    "target_steps": int,
    "batch_size": int,
    "lr": float,
}

# gpu: the values these tasks have always had (they must not change: they are the store keys
# of every run made before tiers). cpu: sized by measurement, see the sizes noted below.
_MNIST_TIERS: dict[str, dict[str, Any]] = {
    "gpu": dict(n_source=None, n_test=None, arch="cnn", width=16, depth=4, source_steps=1000, target_steps=300, batch_size=64, lr=0.001),
    # 28x28 grey images: a width-8 CNN, 1000 source images per class (400 steps of 32 see
    # each about 2-3 times), 500 test images per class
    "cpu": dict(n_source=1000, n_test=500, arch="cnn", width=8, depth=4, source_steps=400, target_steps=150, batch_size=32, lr=0.002),
}
_CIFAR10_TIERS: dict[str, dict[str, Any]] = {
    "gpu": dict(n_source=None, n_test=None, arch="resnet18", width=64, depth=4, source_steps=3000, target_steps=500, batch_size=128, lr=0.001),
    # A 4-layer CNN of widths 16, 16, 32, 32; 500 source steps of 32 over 1000 images per
    # class (4 epochs), 150 target steps (16 epochs of the 300 target images), 500 test
    # images per class. Measured with `run --jobs 1` on full-size CIFAR-10 files (random
    # pixels) on 2 shared cores, 5 seeds x 4 strategies (20 runs, 5 source models): 257 s
    # on the per-run loop with one torch thread (load 4.1 -> 2.5), 409 s on the vmapped
    # engine (load 2-4); 600/200 steps had taken 597 s at load 5, too close to 10 minutes.
    "cpu": dict(n_source=1000, n_test=500, arch="cnn", width=16, depth=4, source_steps=500, target_steps=150, batch_size=32, lr=0.002),
}
_CIFAR100_TIERS: dict[str, dict[str, Any]] = {
    "gpu": _CIFAR10_TIERS["gpu"],
    # 50 source classes: 200 images each (10,000 in all), more source steps for 50 classes,
    # 50 of the 100 test images per class
    "cpu": dict(n_source=200, n_test=50, arch="cnn", width=16, depth=4, source_steps=1000, target_steps=200, batch_size=32, lr=0.002),
}


def tiered_params(tiers: dict[str, dict[str, Any]], **overrides: list[Any]) -> dict[str, list[Any]]:
    """The parameter grid of a task with tiers: `tier` first (so that it leads the instance
    name, `cifar10[tier=cpu,...]`), then the class-split grid with every parameter a tier
    sets defaulting to None (the tier's value). Only the default tier is offered in the grid:
    a parameter with several offered values is named in every instance name, and `cifar10`
    must stay `cifar10`; every tier in `tiers` is accepted."""
    for tier, values in tiers.items():
        if set(values) != set(TIER_PARAMS):
            raise ValueError(f"tier {tier!r} must set exactly {', '.join(TIER_PARAMS)}")  # pragma: no cover - a coding slip
    return {"tier": [DEFAULT_TIER], **split_params(**overrides, **{key: [None] for key in TIER_PARAMS})}


def _data_root() -> Path | None:
    """The data directory PTBENCH_DATA names (what --data-dir sets), or None when unset."""
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value).expanduser() if value else None


def _where_to_put(task: str, what: str, folder: str, contents: str, root: Path | None, missing: list[str]) -> str:
    """The one line that says where a dataset belongs, whichever part of it is not there: no
    data directory, one that does not exist, one without the dataset's folder, or files
    missing inside that folder (`missing`, the paths looked for and not found)."""
    shown = f"{root}/{folder}" if root is not None else f"DIR/{folder}"
    line = f"{task} needs {what} in {shown}/ ({contents})"
    fix = f"pass --data-dir DIR or set {DATA_ENV}"
    if root is None:
        return f"{line}; {fix}"
    if not root.is_dir():
        return f"{line}, but the data directory {str(root)!r} does not exist; {fix} to the folder that holds {folder}/"
    if not (root / folder).is_dir():
        return f"{line}, but {str(root)!r} holds no {folder}/; put it there, or {fix} to the folder that holds it"
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    return f"{line}, but {missing[0]!r}{more} is missing; put the files there, or {fix} to the folder that holds {folder}/"


class DiskTask(ClassSplitTask):
    """A class split of a dataset on disk, with tiers (see the module docstring).

    Subclasses set `name`, `tiers` (tier -> the value of every TIER_PARAMS parameter),
    `params = tiered_params(tiers, ...)`, and implement `read_pool()` and `check_data()`.
    """

    tiers: ClassVar[dict[str, dict[str, Any]]] = {}
    param_types: ClassVar[dict[str, type]] = TIER_PARAMS

    # -- tiers -----------------------------------------------------------------------------
    @classmethod
    def tier_values(cls, tier: str) -> dict[str, Any]:
        """What `tier` sets; a ValueError naming the tiers when there is no such tier."""
        if tier not in cls.tiers:
            raise ValueError(f"tier must be one of {', '.join(cls.tiers)}, got {tier!r}")
        return dict(cls.tiers[tier])

    def batched_engine(self):
        """The image tasks' vmapped engine, for CUDA only: these are full-size datasets
        (28x28 and 32x32 images), and on a CPU the engine's grouped convolutions ran slower
        than the per-run loop (cifar10[tier=cpu], 5 seeds x 4 strategies, one thread: 409 s
        against 257 s), so CPU runs take the per-run loop."""
        engine = super().batched_engine()
        if engine is not None:
            engine.cpu = False
        return engine

    @classmethod
    def param_notes(cls) -> list[str]:
        """What `python -m ptbench list` prints under the parameters: each tier's values."""
        lines = [f"tier={tier}: " + ", ".join(f"{k}={format_value(v)}" for k, v in values.items()) for tier, values in cls.tiers.items()]
        return lines + ["(a parameter left at None takes its tier's value; for n_source and n_test None there means every image)"]

    def validate(self) -> None:
        # The one place the tier is resolved: Parametrized calls validate once, right after
        # setting the attributes, so every check below and every use later sees the value
        # a run uses (self.width is 64 at tier=gpu, whatever the SPEC left out).
        tier = self.tier_values(self.tier)
        for key, value in tier.items():
            if self._values[key] is None:
                setattr(self, key, value)
            elif self._values[key] == value and type(self._values[key]) is type(value):
                self._values[key] = None  # given, but the tier's value: the same instance, the same name
        super().validate()

    @property
    def values(self) -> dict[str, Any]:
        """Every parameter's value, the tier's filled in: what a run used (and its record
        stores); `tier` says which tier that was."""
        return {key: getattr(self, key) for key in self._values}

    @property
    def key(self) -> str:
        """The store's and the donor cache's identity: every value a run uses, without
        `tier` (which only names some of them), so a gpu-tier task keeps the key it had
        before tiers existed and two SPECs of the same experiment share one key."""
        values = {k: v for k, v in self.values.items() if k != "tier"}
        return f"{type(self).name}{json.dumps(values, sort_keys=True)}"

    # -- data ------------------------------------------------------------------------------
    def check_data(self) -> None:  # pragma: no cover - abstract
        """Raise a one-line PtbenchError saying where the data belongs when it is not there.
        Cheap (it looks at file names, reads nothing), so a sweep can ask every task before
        any run trains."""
        raise NotImplementedError

    def read_pool(self) -> ImagePool:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_pool(self) -> ImagePool:
        self.check_data()  # the same line as the pre-flight, had the sweep not asked
        return self.read_pool()


class _IdxTask(DiskTask):
    """MNIST and Fashion-MNIST: four IDX files, found where they were put or where
    torchvision writes them."""

    what: ClassVar[str] = ""

    def check_data(self) -> None:
        root = _data_root()
        folders = IDX_FOLDERS[self.name]
        stems = list(IDX_FILES.values())
        if root is not None and root.is_dir():
            for folder in folders:
                if all(any((root / folder / (stem + ext)).is_file() for ext in ("", ".gz")) for stem in stems):
                    return
        missing = [str(root / folders[0] / stem) for stem in stems if root is not None
                   and not any((root / folders[0] / (stem + ext)).is_file() for ext in ("", ".gz"))]
        contents = ", ".join(stems) + f", plain or .gz; torchvision's DIR/{folders[1]}/ also works"
        raise PtbenchError(_where_to_put(self.name, self.what, folders[0], contents, root, missing))

    def read_pool(self) -> ImagePool:
        return load_idx_dataset(self.name)


class Mnist(_IdxTask):
    """MNIST from its IDX files under --data-dir (default split: digits 0-4 -> 5-9)."""

    name = "mnist"
    what = "MNIST's four IDX files"
    tiers = _MNIST_TIERS
    params = tiered_params(tiers)

    def known_classes(self) -> list[str]:
        return MNIST_CLASSES


class FashionMnist(_IdxTask):
    """Fashion-MNIST from its IDX files under --data-dir (default: clothes -> shoes and bags)."""

    name = "fashion-mnist"
    what = "Fashion-MNIST's four IDX files"
    tiers = _MNIST_TIERS
    params = tiered_params(
        tiers,
        source_classes=["t-shirt+trouser+pullover+dress+coat+shirt"],
        target_classes=["sandal+sneaker+bag+ankle-boot"],
    )

    def known_classes(self) -> list[str]:
        return FASHION_CLASSES


class _CifarTask(DiskTask):
    """CIFAR-10 and CIFAR-100: the official python version, extracted."""

    what: ClassVar[str] = ""
    contents: ClassVar[str] = ""

    def check_data(self) -> None:
        spec = CIFAR[self.name]
        root = _data_root()
        names = spec["train"] + spec["test"] + [spec["meta"]]
        missing = [] if root is None else [str(root / spec["folder"] / n) for n in names if not (root / spec["folder"] / n).is_file()]
        if root is None or missing or not root.is_dir():
            raise PtbenchError(_where_to_put(self.name, self.what, spec["folder"], self.contents, root, missing))

    def read_pool(self) -> ImagePool:
        return load_cifar(self.name)


class Cifar10(_CifarTask):
    """CIFAR-10's python batches under --data-dir (default: vehicles -> animals)."""

    name = "cifar10"
    what = "CIFAR-10's python batches"
    contents = "data_batch_1..5, test_batch, batches.meta"
    tiers = _CIFAR10_TIERS
    params = tiered_params(
        tiers,
        source_classes=["airplane+automobile+ship+truck"],
        target_classes=["bird+cat+deer+dog+frog+horse"],
        n_target=[50],
    )

    def known_classes(self) -> list[str]:
        return CIFAR10_CLASSES


class Cifar100(_CifarTask):
    """CIFAR-100's python batches under --data-dir (default: fine classes 0-49 -> 50-99)."""

    name = "cifar100"
    what = "CIFAR-100's python version"
    contents = "train, test, meta"
    tiers = _CIFAR100_TIERS
    params = tiered_params(tiers, source_classes=["0-49"], target_classes=["50-99"], n_target=[20])


class ImageFolder(DiskTask):
    """One sub-folder of images per class under --data-dir/ROOT (default: first half -> second half)."""

    name = "image-folder"
    tiers = _MNIST_TIERS
    params = tiered_params(
        tiers,
        root=["images"],  # relative to --data-dir, or an absolute path
        size=[32],  # images are resized to size x size
        channels=[3],  # 1: grey, 3: RGB
        source_classes=["first-half"],
        target_classes=["second-half"],
    )

    def validate(self) -> None:
        super().validate()
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        if self.size < 8:
            raise ValueError(f"size must be at least 8, got {self.size}")

    def class_sets(self, names: list[str]) -> tuple[list[int], list[int]]:
        """Like every class-split task's, plus the keywords first-half and second-half (of the
        sorted class folders), the defaults, since folder names are only known from disk."""
        half = (len(names) + 1) // 2
        keywords = {"first-half": list(range(half)), "second-half": list(range(half, len(names)))}

        def side(text: str, what: str) -> list[int]:
            return keywords[text] if text in keywords else parse_classes(text, names, what)

        source, target = side(self.source_classes, "source_classes"), side(self.target_classes, "target_classes")
        if len(source) < 2 or len(target) < 2:
            raise ValueError(
                f"found {len(names)} class folders; source_classes and target_classes need at least 2 classes each"
            )
        return source, target

    def check_data(self) -> None:
        """The folder is there and holds at least two sub-folders (the loader checks the
        images themselves). An absolute `root` needs no data directory."""
        given = Path(self.root).expanduser()
        contents = "one sub-folder of images per class, at least 2"
        if given.is_absolute():
            folder = given
            if not folder.is_dir():
                raise PtbenchError(f"image-folder needs {contents} in {str(folder)!r}, which does not exist; give root=PATH of an existing folder")
        else:
            root = _data_root()
            if root is None or not (root / given).is_dir():
                raise PtbenchError(_where_to_put(self.name, "its images", self.root, contents, root, []))
            folder = root / given
        subs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(subs) < 2:
            raise PtbenchError(f"image-folder needs {contents} in {str(folder)!r}, which holds {len(subs)}; add the class folders there")

    def read_pool(self) -> ImagePool:
        return load_image_folder(self.root, self.size, self.channels)
