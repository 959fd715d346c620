"""Class splits of image datasets a user already has on disk (nothing is downloaded).

Point `--data-dir DIR` (or PTBENCH_DATA) at the folder that holds them:

    DIR/mnist/            train-images-idx3-ubyte, train-labels-idx1-ubyte,
                          t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (plain or .gz)
    DIR/fashion-mnist/    the same four names
    DIR/cifar-10-batches-py/   data_batch_1..5, test_batch, batches.meta
    DIR/cifar-100-python/      train, test, meta
    DIR/images/CLASS/*.png     image-folder (another folder: root=NAME or an absolute path)

A missing or malformed file stops the run with one line naming the file expected.

Each dataset has a default source/target class split that `source_classes` and
`target_classes` change (see ptbench.tasks.images.base for the grammar): MNIST digits 0-4 -> 5-9;
Fashion-MNIST clothes -> shoes and bags; CIFAR-10 vehicles -> animals; CIFAR-100 the first
50 fine classes -> the last 50 (alphabetical, so close to Yosinski's random halves);
image folders the first half of the sorted class folders -> the second half. Test images are
the official test sets (image folders hold out `test_fraction` of each class). The CIFAR
tasks default to the ResNet-18 (meant for a GPU; `arch=cnn` runs on a CPU).
"""

from __future__ import annotations

from ptbench.tasks.images.datasets import (
    FASHION_CLASSES,
    MNIST_CLASSES,
    ImagePool,
    load_cifar,
    load_idx_dataset,
    load_image_folder,
)
from ptbench.tasks.images.base import ClassSplitTask, parse_classes, split_params

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

_MNIST_BUDGET = dict(n_target=[10], width=[16], depth=[4], source_steps=[1000], target_steps=[300], batch_size=[64], lr=[0.001])
_CIFAR_BUDGET = dict(
    n_target=[50], arch=["resnet18"], width=[64], source_steps=[3000], target_steps=[500], batch_size=[128], lr=[0.001]
)


class Mnist(ClassSplitTask):
    """MNIST from its IDX files under --data-dir (default split: digits 0-4 -> 5-9)."""

    name = "mnist"
    params = split_params(**_MNIST_BUDGET)

    def known_classes(self) -> list[str]:
        return MNIST_CLASSES

    def load_pool(self) -> ImagePool:
        return load_idx_dataset("mnist")


class FashionMnist(ClassSplitTask):
    """Fashion-MNIST from its IDX files under --data-dir (default: clothes -> shoes and bags)."""

    name = "fashion-mnist"
    params = split_params(
        source_classes=["t-shirt+trouser+pullover+dress+coat+shirt"],
        target_classes=["sandal+sneaker+bag+ankle-boot"],
        **_MNIST_BUDGET,
    )

    def known_classes(self) -> list[str]:
        return FASHION_CLASSES

    def load_pool(self) -> ImagePool:
        return load_idx_dataset("fashion-mnist")


class Cifar10(ClassSplitTask):
    """CIFAR-10's python batches under --data-dir (default: vehicles -> animals)."""

    name = "cifar10"
    params = split_params(
        source_classes=["airplane+automobile+ship+truck"],
        target_classes=["bird+cat+deer+dog+frog+horse"],
        **_CIFAR_BUDGET,
    )

    def known_classes(self) -> list[str]:
        return CIFAR10_CLASSES

    def load_pool(self) -> ImagePool:
        return load_cifar("cifar10")


class Cifar100(ClassSplitTask):
    """CIFAR-100's python batches under --data-dir (default: fine classes 0-49 -> 50-99)."""

    name = "cifar100"
    params = split_params(source_classes=["0-49"], target_classes=["50-99"], **{**_CIFAR_BUDGET, "n_target": [20]})

    def load_pool(self) -> ImagePool:
        return load_cifar("cifar100")


class ImageFolder(ClassSplitTask):
    """One sub-folder of images per class under --data-dir/ROOT (default: first half -> second half)."""

    name = "image-folder"
    params = split_params(
        root=["images"],  # relative to --data-dir, or an absolute path
        size=[32],  # images are resized to size x size
        channels=[3],  # 1: grey, 3: RGB
        source_classes=["first-half"],
        target_classes=["second-half"],
        **_MNIST_BUDGET,
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

    def load_pool(self) -> ImagePool:
        return load_image_folder(self.root, self.size, self.channels)
