"""Handwritten digits split by class: scikit-learn's bundled 8x8 digits (1797 images, no
download). The source model learns to tell apart `source_classes` (0-4 by default), the target
model `target_classes` (5-9) from only `n_target` images per class; 30% of each class's images
are held out for testing (a fresh draw per seed, never used for training on either side).

This is Yosinski et al.'s A/B split in miniature: both halves share the low-level features of
pen strokes, and what differs is which stroke combinations mean which class. A small CNN
(`width`, `depth`) trains on it in well under a second on a CPU, which is what lets layer-wise
and filter-wise sweeps run with many seeds. `source_label_noise` corrupts that share of the
source training labels, to see how a worse source model changes what transfers.
"""

from __future__ import annotations

from ptbench.tasks.images.datasets import ImagePool, load_digits_pool
from ptbench.tasks.images.base import ClassSplitTask, split_params


class DigitsSplit(ClassSplitTask):
    """scikit-learn's 8x8 digits, source classes vs target classes (default 0-4 -> 5-9)."""

    name = "digits-split"
    params = split_params()

    def known_classes(self) -> list[str]:
        return [str(i) for i in range(10)]

    def load_pool(self) -> ImagePool:
        return load_digits_pool()
