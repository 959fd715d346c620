"""Cross-domain transfer between scikit-image's bundled pictures and handwritten digits.

A *patch domain* is a classification problem made of bundled pictures: a patch of `patch` x
`patch` pixels, area-averaged down to 8 x 8 grey values, is labelled with the picture it
comes from. `textures` uses scikit-image's three texture photographs (brick, grass,
gravel), `photos` five natural photographs (camera, astronaut, coffee, chelsea, rocket).
Training patches come from the left part of each picture and test patches from the
right part (`test_fraction` of the width), so no test pixel was ever trained on. `digits`
is scikit-learn's 8x8 digits, classes `digits`. Nothing is downloaded.

Why transfer may well hurt here (the default: textures -> digits): the source problem is
solved by local texture statistics (grain size, orientation, contrast) and rewards filters
tuned to fine, repetitive detail, while digits are told apart by the layout of a few smooth
strokes across the whole 8 x 8 frame. The tasks share little beyond generic edge detectors
in the first layer, so deeper inherited layers bring source-specific features that a
target model trained on 10 images per class must first unlearn, and frozen, cannot.
`leaderboard/images/ANALYSIS.md` reports what the runs show.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from ptbench.api import TaskData, TransferModel
from ptbench.tasks.images.datasets import ImagePool, load_digits_pool
from ptbench.errors import PtbenchError
from ptbench.tasks.images.base import ImageTask, channel_stats, draw_split, parse_classes, side_data, split_params
from ptbench.rng import RandomStreams

PICTURES = {
    "textures": ("brick", "grass", "gravel"),
    "photos": ("camera", "astronaut", "coffee", "chelsea", "rocket"),
}
DOMAINS = (*PICTURES, "digits")


@lru_cache(maxsize=None)
def picture(name: str) -> np.ndarray:
    """A bundled scikit-image picture as grey values in [0, 1] (read once per process)."""
    try:
        import skimage.data
        from skimage.color import rgb2gray
    except ImportError:  # pragma: no cover
        raise PtbenchError("the cross-domain task needs scikit-image: pip install 'ptbench[images]'") from None
    image = getattr(skimage.data, name)()
    if image.ndim == 3:
        return rgb2gray(image[..., :3]).astype(np.float32)
    return (image / 255.0).astype(np.float32)


def patch_pool(domain: str, patch: int, n_train: int, n_test: int, test_fraction: float, rng: np.random.Generator) -> ImagePool:
    """`n_train` training and `n_test` test patches per picture, at positions drawn by `rng`,
    training patches left of the split column and test patches right of it."""
    xs, ys, txs, tys = [], [], [], []
    for label, name in enumerate(PICTURES[domain]):
        img = picture(name)
        h, w = img.shape
        cut = int(round(w * (1 - test_fraction)))
        for count, (lo, hi), out_x, out_y in ((n_train, (0, cut), xs, ys), (n_test, (cut, w), txs, tys)):
            if hi - lo < patch or h < patch:
                raise PtbenchError(f"patch={patch} does not fit in picture {name!r} ({h}x{w}); use a smaller patch")
            top = rng.integers(0, h - patch + 1, size=count)
            left = rng.integers(lo, hi - patch + 1, size=count)
            patches = np.stack([img[t : t + patch, l : l + patch] for t, l in zip(top, left)])
            out_x.append(downsample(patches, 8))
            out_y.append(np.full(count, label, dtype=np.int64))
    return ImagePool(
        x=np.concatenate(xs)[:, None], y=np.concatenate(ys), classes=list(PICTURES[domain]),
        test_x=np.concatenate(txs)[:, None], test_y=np.concatenate(tys),
    )


def downsample(patches: np.ndarray, size: int) -> np.ndarray:
    """[N, p, p] -> [N, size, size] by area averaging (p a multiple of size)."""
    n, p, _ = patches.shape
    f = p // size
    return patches.reshape(n, size, f, size, f).mean(axis=(2, 4)).astype(np.float32)


class CrossDomain(ImageTask):
    """Source and target from different picture domains (default: textures -> digits)."""

    name = "cross-domain"
    params = {
        "source": ["textures"],
        "target": ["digits"],
        "digits": ["0-9"],  # the digit classes, when a side is digits
        "patch": [16],  # patch side in pixels before averaging down to 8x8
        "pool": [600],  # training patches drawn per picture (per seed)
        **{k: v for k, v in split_params(n_test=[200]).items() if k not in ("source_classes", "target_classes")},
    }

    def validate(self) -> None:
        super().validate()
        for side in ("source", "target"):
            if getattr(self, side) not in DOMAINS:
                raise ValueError(f"{side} must be one of {', '.join(DOMAINS)}, got {getattr(self, side)!r}")
        if self.source == self.target:
            raise ValueError("source and target are the same domain; for digits against digits use digits-split")
        if self.patch < 8 or self.patch % 8:
            raise ValueError(f"patch must be a multiple of 8, got {self.patch}")
        if self.pool < 2:
            raise ValueError(f"pool must be at least 2, got {self.pool}")
        self.digit_classes()

    def digit_classes(self) -> list[int]:
        classes = parse_classes(self.digits, [str(i) for i in range(10)], "digits")
        if len(classes) < 2:
            raise ValueError("digits needs at least 2 classes")
        return classes

    def side(self, role: str, streams: RandomStreams) -> tuple[ImagePool, list[int]]:
        """The pool of `role`'s domain and the classes used from it."""
        domain = self.source if role == "source" else self.target
        if domain == "digits":
            return load_digits_pool(), self.digit_classes()
        pool = patch_pool(domain, self.patch, self.pool, self.n_test or 200, self.test_fraction, streams.numpy(f"patches-{domain}"))
        return pool, list(range(len(pool.classes)))

    def data(self, role: str, streams: RandomStreams) -> TaskData:
        pool, classes = self.side(role, streams)
        source, target = (classes, []) if role == "source" else ([], classes)
        split = draw_split(
            pool, source, target, self.n_source, self.n_target, self.n_test, self.test_fraction, streams.numpy(f"split-{role}")
        )
        train_idx, test_idx = split[role]
        noise = self.source_label_noise if role == "source" else 0.0
        # Each domain is normalised by its own training statistics: a source model meets
        # target images on the scale it was trained on, whatever their brightness.
        return side_data(pool, classes, train_idx, test_idx, channel_stats(pool.x), noise, streams.numpy("source-label-noise"))

    def model(self, role: str, generator: torch.Generator) -> TransferModel:
        domain = self.source if role == "source" else self.target
        n_classes = len(self.digit_classes()) if domain == "digits" else len(PICTURES[domain])
        return self.build_model(generator, (1, 8, 8), n_classes, inherit_head=False)
