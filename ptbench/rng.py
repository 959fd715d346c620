"""Random streams derived from (seed, role).

Every random draw in ptbench comes from a generator named by the seed of the run and the role
the draw plays ("source-data", "target-init", ...). Two runs that share a seed therefore share
every draw whose role they share: that is what makes strategies comparable seed by seed
(pairing), and what makes the same command give the same numbers twice.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(seed: int, role: str) -> int:
    """A 63-bit integer from (seed, role); stable across processes and Python versions."""
    digest = hashlib.sha256(f"{int(seed)}/{role}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class RandomStreams:
    """The generators of one seed, one per role."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def torch(self, role: str, device: str | torch.device = "cpu") -> torch.Generator:
        generator = torch.Generator(device=device)
        generator.manual_seed(derive_seed(self.seed, role))
        return generator

    def numpy(self, role: str) -> np.random.Generator:
        return np.random.default_rng(derive_seed(self.seed, role))
