"""What every class-split image task shares: class sets, disjoint splits, label noise,
normalisation, the image model and a minibatch budget.

A class-split task takes one labelled image pool (an `ImagePool`) and makes two problems of
it: the source classifies `source_classes`, the target `target_classes`, with labels
remapped to 0..k-1 on each side in the order the classes are written. Concrete tasks (in
`tasks/`) only say where the pool comes from and which defaults suit it; nothing here knows
a particular dataset.

Class sets are written with `+` between items; an item is a class name, an index, or a
range of indices `a-b`: `0-4`, `airplane+automobile+ship+truck`, `0+2+4-6`.

Both sides are standardised with one per-channel mean and deviation, those of the whole
training pool (every class): a dataset constant, like the CIFAR means everyone hard-codes,
so that the source model meets target images on the scale it was trained on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ptbench.api import Split, Task, TaskData, TrainBudget, TransferModel
from ptbench.tasks.images.datasets import ImagePool, as_float
from ptbench.errors import PtbenchError
from ptbench.tasks.images.models import MODELS, build_image_model
from ptbench.rng import RandomStreams

OPTIMIZERS = ("adam", "sgd")


def split_params(**overrides: list[Any]) -> dict[str, list[Any]]:
    """The parameter grid of a class-split task; `overrides` replace defaults (first value)
    or add task-specific parameters."""
    base: dict[str, list[Any]] = {
        "source_classes": ["0-4"],
        "target_classes": ["5-9"],
        "n_source": [None],  # training images per source class; None: every one available
        "n_target": [10],  # training images per target class
        "n_test": [None],  # test images per class (a random subset per seed); None: all
        "test_fraction": [0.3],  # held out per class when the dataset has no test split
        "source_label_noise": [0.0],  # share of source training labels set to another class
        "arch": ["cnn"],  # cnn (SmallCNN: width, depth) or resnet18 (width only)
        "width": [16],
        "depth": [4],
        "source_steps": [400],
        "target_steps": [200],
        "batch_size": [32],
        "lr": [0.002],
        "optimizer": ["adam"],
    }
    base.update(overrides)
    return base


def parse_classes(text: str, names: list[str], what: str) -> list[int]:
    """A class-set string as indices into `names`, in the order written, without repeats."""
    out: list[int] = []
    for item in str(text).split("+"):
        item = item.strip()
        if not item:
            raise ValueError(f"{what} {text!r} has an empty item; write classes as a+b+c or a range a-b")
        if item in names:
            picked = [names.index(item)]
        elif item.isdigit():
            picked = [int(item)]
        elif "-" in item and all(p.strip().isdigit() for p in item.split("-", 1)):
            low, high = (int(p) for p in item.split("-", 1))
            if low > high:
                raise ValueError(f"{what}: range {item!r} runs backwards; write low-high")
            picked = list(range(low, high + 1))
        else:
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise ValueError(f"{what}: unknown class {item!r}; use indices 0-{len(names) - 1}, ranges a-b or names ({shown})")
        for index in picked:
            if not 0 <= index < len(names):
                raise ValueError(f"{what}: class index {index} is out of range; this dataset has classes 0-{len(names) - 1}")
            if index in out:
                raise ValueError(f"{what}: class {names[index]!r} is listed twice")
            out.append(index)
    return out


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of images in [0, 1], computed in chunks so
    that a 50,000-image pool never exists as floats all at once."""
    total = np.zeros(x.shape[1])
    squares = np.zeros(x.shape[1])
    count = 0
    for start in range(0, len(x), chunk):
        part = as_float(x[start : start + chunk]).astype(np.float64)
        total += part.sum(axis=(0, 2, 3))
        squares += (part**2).sum(axis=(0, 2, 3))
        count += part.shape[0] * part.shape[2] * part.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def draw_split(
    pool: ImagePool,
    source: list[int],
    target: list[int],
    n_source: int | None,
    n_target: int,
    n_test: int | None,
    test_fraction: float,
    rng: np.random.Generator,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per role, (training indices into pool.x, test indices into the test images).

    Class by class, in index order, the class's images are shuffled by `rng`. Without an
    official test split the first `test_fraction` of them are held out for testing. The
    target takes the next `n_target`, the source the rest (at most `n_source`), so no image
    serves twice even when both sides share a class. Both roles call this with generators
    of the same role and get the same split (pairing).
    """
    has_test = pool.test_x is not None
    out: dict[str, tuple[list, list]] = {"source": ([], []), "target": ([], [])}
    for c in sorted(set(source) | set(target)):
        idx = rng.permutation(np.flatnonzero(pool.y == c))
        if has_test:
            test_idx = rng.permutation(np.flatnonzero(pool.test_y == c))
        else:
            hold = max(1, int(round(test_fraction * len(idx))))
            test_idx, idx = idx[:hold], idx[hold:]
        if n_test is not None:
            test_idx = test_idx[:n_test]
        if len(test_idx) == 0:
            raise PtbenchError(f"class {pool.classes[c]!r} has no test images; it needs at least one")
        start = 0
        if c in target:
            if len(idx) < n_target + (1 if c in source else 0):
                raise PtbenchError(
                    f"class {pool.classes[c]!r} has {len(idx)} training images, too few for n_target={n_target}"
                    + (" and a source share" if c in source else "")
                    + "; lower n_target"
                )
            out["target"][0].append(idx[:n_target])
            out["target"][1].append(test_idx)
            start = n_target
        if c in source:
            rest = idx[start:]
            out["source"][0].append(rest if n_source is None else rest[:n_source])
            out["source"][1].append(test_idx)
    return {role: (np.concatenate(tr) if tr else np.zeros(0, np.int64), np.concatenate(te) if te else np.zeros(0, np.int64))
            for role, (tr, te) in out.items()}


def noisy_labels(y: np.ndarray, k: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """Each label replaced, with probability `share`, by a uniformly drawn *other* class."""
    if share <= 0 or k < 2:
        return y
    flip = rng.random(len(y)) < share
    shifted = (y + rng.integers(1, k, size=len(y))) % k
    return np.where(flip, shifted, y)


def side_data(
    pool: ImagePool,
    classes: list[int],
    train_idx: np.ndarray,
    test_idx: np.ndarray,
    stats: tuple[np.ndarray, np.ndarray],
    label_noise: float = 0.0,
    noise_rng: np.random.Generator | None = None,
) -> TaskData:
    """Tensors of one side: images normalised by `stats`, labels remapped to 0..k-1."""
    remap = np.full(len(pool.classes), -1, dtype=np.int64)
    remap[classes] = np.arange(len(classes))
    test_x, test_y = (pool.test_x, pool.test_y) if pool.test_x is not None else (pool.x, pool.y)
    mean, std = stats

    def tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        xf = (as_float(x) - mean[None, :, None, None]) / std[None, :, None, None]
        return torch.from_numpy(np.ascontiguousarray(xf, dtype=np.float32)), torch.from_numpy(remap[y])

    train_y = pool.y[train_idx]
    if label_noise > 0 and noise_rng is not None:
        train_y = np.asarray(classes)[noisy_labels(remap[train_y], len(classes), label_noise, noise_rng)]
    train = Split(*tensors(pool.x[train_idx], train_y))
    test = Split(*tensors(test_x[test_idx], test_y[test_idx]))
    return TaskData(train, test, extras={"classes": [pool.classes[c] for c in classes]})


class ImageTask(Task):
    """What every image task shares: the checks of the common parameters, the model the
    `arch`, `width` and `depth` parameters name, and a minibatch budget that is the same for
    every strategy (the source and target sides differ only in their number of steps)."""

    def validate(self) -> None:
        for key in ("n_target", "width", "depth", "source_steps", "target_steps", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        for key in ("n_source", "n_test"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{key} must be a positive integer or none, got {value!r}")
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if not 0 <= self.source_label_noise < 1:
            raise ValueError(f"source_label_noise must be in [0, 1), got {self.source_label_noise}")
        if self.arch not in MODELS:
            raise ValueError(f"arch must be one of {', '.join(MODELS)}, got {self.arch!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def build_model(self, generator: torch.Generator, shape: tuple[int, int, int], n_classes: int, inherit_head: bool) -> TransferModel:
        channels, size, _ = shape
        return build_image_model(self.arch, channels, size, n_classes, generator, self.width, self.depth, inherit_head)

    def budget(self, role: str) -> TrainBudget:
        steps = self.source_steps if role == "source" else self.target_steps
        momentum = 0.9 if self.optimizer == "sgd" else 0.0
        return TrainBudget(
            steps=steps, lr=self.lr, optimizer=self.optimizer, loss="cross_entropy", batch_size=self.batch_size, momentum=momentum
        )

    def batched_engine(self):
        """The vmapped engine (`ptbench.run.vmapped.VmapEngine`): every run of a variant with
        the small CNN (seeds x strategies) trains as one program per architecture. ResNet-18
        has BatchNorm buffers, which the engine refuses, so its variants get no engine at
        all: their runs take the per-run loop, one group per unit of work."""
        if self.arch == "resnet18":
            return None
        from ptbench.run.vmapped import VmapEngine

        return VmapEngine()


class ClassSplitTask(ImageTask):
    """Source and target: two class subsets of one image pool; see the module docstring.

    Subclasses set `name`, `params = split_params(...)` and implement `load_pool()`; they may
    give `known_classes()` so that class sets are checked when the task is created.
    """

    def load_pool(self) -> ImagePool:  # pragma: no cover - abstract
        raise NotImplementedError

    def known_classes(self) -> list[str] | None:
        """Class names known without reading the data (checked at creation), or None."""
        return None

    # -- checks ---------------------------------------------------------------------------
    def validate(self) -> None:
        super().validate()
        names = self.known_classes()
        if names is not None:
            self.class_sets(names)

    def class_sets(self, names: list[str]) -> tuple[list[int], list[int]]:
        """(source classes, target classes) as indices; ValueError when unusable."""
        source = parse_classes(self.source_classes, names, "source_classes")
        target = parse_classes(self.target_classes, names, "target_classes")
        if len(source) < 2 or len(target) < 2:
            raise ValueError("source_classes and target_classes need at least 2 classes each")
        return source, target

    # -- data -----------------------------------------------------------------------------
    def pool(self) -> ImagePool:
        """The pool, loaded once per task object (every seed of a sweep reuses it)."""
        cached = self.__dict__.get("_pool")
        if cached is None:
            cached = self.load_pool()
            self.__dict__["_pool"] = cached
            self.__dict__["_stats"] = channel_stats(cached.x)
        return cached

    def __getstate__(self) -> dict:
        # Worker processes reload the pool rather than receive it through a pipe.
        return {k: v for k, v in self.__dict__.items() if k not in ("_pool", "_stats")}

    def sides(self) -> tuple[list[int], list[int]]:
        try:
            return self.class_sets(self.pool().classes)
        except ValueError as err:
            raise PtbenchError(f"{self.instance_name}: {err}") from None

    def data(self, role: str, streams: RandomStreams) -> TaskData:
        pool = self.pool()
        source, target = self.sides()
        split = draw_split(
            pool, source, target, self.n_source, self.n_target, self.n_test, self.test_fraction, streams.numpy("split")
        )
        train_idx, test_idx = split[role]
        classes = source if role == "source" else target
        noise = self.source_label_noise if role == "source" else 0.0
        return side_data(pool, classes, train_idx, test_idx, self.__dict__["_stats"], noise, streams.numpy("source-label-noise"))

    # -- model --------------------------------------------------------------------------
    def model(self, role: str, generator: torch.Generator) -> TransferModel:
        source, target = self.sides()
        classes = source if role == "source" else target
        return self.build_model(generator, self.pool().shape, len(classes), source == target)
