"""The paper's data model: signal-noise pairs for the two-layer ReLU CNN.

Each example has `patches` patches in R^d. The clean label y is +1 or -1 with equal
probability; one patch, at a random position, is y * (u + v_k); every other patch is noise
xi ~ N(0, sigma_k^2 (I - P_k)), P_k the projector onto span{u, v_k}; the training label is y
flipped with probability `label_flip` (test labels stay clean, so the best possible test
accuracy is 100%). u (the shared, "universal" signal), v_1 (source-specific) and v_2
(target-specific) are orthonormal directions drawn once per seed and scaled by `shared`,
`specific` and `target_specific`.

Two parameters serve experiments that move the source while the target stays put (both off
by default, and then the task draws exactly what it drew before they existed):

* `target_signal`: the target's signal norm |mu_2| = sqrt(|u|^2 + |v_2|^2) held at this
  value, so that changing |u| rotates the target's signal inside span{u, v_2} instead of
  making the target easier: |v_2| = sqrt(target_signal^2 - |u|^2) (an error when |u| is
  larger; `target_specific` must then be left unset). Since v_2 is a uniformly random
  direction orthogonal to u, target tasks with equal `target_signal`, noise and size are
  equal in law whatever |u| is, and scratch accuracy is too.
* `overlap`: the cosine between v_1 and v_2, in [0, 1): v_2 = overlap v_1 + sqrt(1 -
  overlap^2) v_2', v_2' the third orthonormal direction, so the target's specific signal
  shares part of the source's. 0 (the default) is the orthogonal draw.

Why the quick suite's variants land where they do (see suites/quick.toml, and the
numbers in leaderboard/README.md):

* `positive`: |u| = 2 dominates the signal (|v| = 0.5), the source has 400 clean-ish
  examples at noise 0.5, so the source model learns u well: n_1 |mu|^4 is far above
  sigma_1^4 d (benign). The target has only 20 examples at noise 1.0: n_2 |mu|^4 is below
  sigma_2^4 d, so from scratch the target model memorises noise and generalises poorly,
  while inherited filters already point along u and carry the target.
* `negative`: |u| = 0.2 is tiny, and the source is told apart by a strong specific signal
  (|v_1| = 3) learned from 400 examples at noise 0.5 (benign: the source model is perfect on
  its own task). Its filters are therefore large and point along v_1. The target's noise
  is orthogonal to u and v_2 but *not* to v_1, so on target data an inherited filter
  w ~ c v_1 fires ReLU(c <v_1, xi>): large responses to pure noise that compete with the
  weaker target signal (|v_2| = 1.5, 100 examples). Fine-tuning has to unlearn them first
  and, within the same budget, ends below scratch (which starts at sigma0 = 0.01); frozen
  inherited filters never unlearn them. This is the paper's mechanism for negative transfer:
  with a weak shared signal, inherited filters amplify what the tasks do not share.
"""

from __future__ import annotations

from typing import Any

import torch

from ptbench.api import Task, TaskData, TrainBudget, TransferPlan
from ptbench.rng import RandomStreams

from .data import DeferredPatchSplit, PatchSplit
from .diagnostics import signal_noise_diagnostics
from .engine import TwoLayerCNNEngine
from .model import TwoLayerReLUCNN


class SignalNoise(Task):
    """Source signal u + v_1, target signal u + v_2, Gaussian noise orthogonal to both."""

    name = "signal-noise"
    params = {
        "d": [1000],
        "patches": [2],
        "shared": [1.0],
        "specific": [1.0],
        "target_specific": [None],  # None: the same norm as `specific`
        "source_noise": [1.0],
        "target_noise": [1.0],
        "n_source": [200],
        "n_target": [50],
        "n_test": [2000],
        "label_flip": [0.1],
        "m": [20],
        "sigma0": [0.01],
        "lr": [1.0],
        "steps": [1000],
        "trace": [0],  # > 0: record the diagnostics every `trace` steps (trajectory plots)
        "target_signal": [None],  # None: |v_2| is target_specific; a number: |mu_2| held there
        "overlap": [0.0],  # cos(v_1, v_2); 0: orthogonal
    }

    param_types = {"target_specific": float, "target_signal": float}

    def validate(self) -> None:
        if self.d < 4:
            raise ValueError("d must be at least 4 (u, v_1, v_2 and room for noise)")
        if self.patches < 1:
            raise ValueError("patches must be at least 1")
        for key in ("shared", "specific", "source_noise", "target_noise", "sigma0"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be non-negative, got {getattr(self, key)}")
        if self.target_specific is not None and (
            # its default is None, so the grid fixes no type: check it here
            not isinstance(self.target_specific, (int, float))
            or isinstance(self.target_specific, bool)
            or self.target_specific < 0
        ):
            raise ValueError(f"target_specific must be none or a non-negative number, got {self.target_specific!r}")
        if self.target_signal is not None:
            if not isinstance(self.target_signal, (int, float)) or isinstance(self.target_signal, bool) or not self.target_signal >= 0:
                raise ValueError(f"target_signal must be none or a non-negative number, got {self.target_signal!r}")
            if self.target_specific is not None:
                raise ValueError("give target_signal (the target's |mu_2|) or target_specific (its |v_2|), not both")
            if self.shared > self.target_signal:
                raise ValueError(
                    f"target_signal {self.target_signal:g} is smaller than shared {self.shared:g}: |mu_2|^2 = |u|^2 + |v_2|^2 "
                    "cannot be below |u|^2; raise target_signal or lower shared"
                )
        if not 0 <= self.overlap < 1:  # also refuses nan
            raise ValueError(f"overlap (the cosine between v_1 and v_2) must be in [0, 1), got {self.overlap}")
        for key in ("n_source", "n_target", "n_test", "m", "steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be at least 1, got {getattr(self, key)}")
        if not 0 <= self.label_flip < 0.5:
            raise ValueError(f"label_flip must be in [0, 0.5), got {self.label_flip}")
        if not self.lr > 0:  # also refuses nan
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.trace < 0:
            raise ValueError(f"trace must be 0 (off) or a number of steps, got {self.trace}")

    # -- data -----------------------------------------------------------------------------
    def directions(self, streams: RandomStreams) -> torch.Tensor:
        """Unit u, v_1, v_2 as the rows of a [3, d] tensor (shared by both roles): orthonormal,
        except that <v_1, v_2> = `overlap` when that is set."""
        g = torch.randn(self.d, 3, generator=streams.torch("directions"))
        q, _ = torch.linalg.qr(g)
        dirs = q.T.contiguous()
        if self.overlap:  # v_2 tilted towards v_1; still a unit vector orthogonal to u
            dirs[2] = self.overlap * dirs[1] + (1.0 - self.overlap**2) ** 0.5 * dirs[2]
        return dirs

    def side(self, role: str) -> dict[str, Any]:
        """The numbers that differ between source and target."""
        if role == "source":
            return {"v": 1, "specific": self.specific, "noise": self.source_noise, "n": self.n_source}
        if role == "target":
            specific = self.specific if self.target_specific is None else self.target_specific
            if self.target_signal is not None:
                specific = max(self.target_signal**2 - self.shared**2, 0.0) ** 0.5
            return {"v": 2, "specific": specific, "noise": self.target_noise, "n": self.n_target}
        raise ValueError(f"unknown role {role!r}")

    def sample(self, n: int, role: str, dirs: torch.Tensor, generator: torch.Generator, flip: float) -> tuple[PatchSplit, torch.Tensor]:
        """n examples, kept as the factors they are drawn from (a PatchSplit: its `x` is the
        dense [n, patches, d] tensor). The signal patch is y * signal, one shared vector times
        +-1, and noise is drawn only for the other patches (patches - 1 per example): nothing
        random is drawn to be overwritten, and the batched engine sees the structure. The
        per-run path reads `x` and so trains on exactly the same numbers."""
        side = self.side(role)
        u, v = dirs[0], dirs[side["v"]]
        signal = self.shared * u + side["specific"] * v
        y = torch.where(torch.rand(n, generator=generator) < 0.5, 1.0, -1.0)
        position = torch.randint(self.patches, (n,), generator=generator)
        noise = torch.randn(n, self.patches - 1, self.d, generator=generator)
        basis = torch.stack([u, v])  # orthonormal rows: P = basis^T basis
        noise = noise.sub_((noise @ basis.T) @ basis).mul_(side["noise"])
        # patch p of example i: the signal (shared vector 0, coefficient y_i) at its position,
        # else the example's next noise vector (own vector i * (patches - 1) + slot)
        p = torch.arange(self.patches)[None, :]
        slot = p - (p > position[:, None]).long()
        at_signal = p == position[:, None]
        index = torch.where(at_signal, 0, 1 + torch.arange(n)[:, None] * (self.patches - 1) + slot)
        coef = torch.where(at_signal, y[:, None], 1.0)
        observed = y.clone()
        if flip > 0:
            flipped = torch.rand(n, generator=generator) < flip
            observed[flipped] = -observed[flipped]
        return PatchSplit(signal[None], noise, index, coef, observed), position

    def data(self, role: str, streams: RandomStreams) -> TaskData:
        dirs = self.directions(streams)
        side = self.side(role)
        train, position = self.sample(side["n"], role, dirs, streams.torch(f"{role}-train"), self.label_flip)
        test = DeferredPatchSplit(self.n_test, _TestDraw(self, role, dirs, streams))
        return TaskData(train, test, extras={"directions": dirs, "signal_position": position, "v_index": side["v"]})

    # -- model and budget -----------------------------------------------------------------
    def model(self, role: str, generator: torch.Generator) -> TwoLayerReLUCNN:
        return TwoLayerReLUCNN(self.d, self.m, self.sigma0, generator)

    def budget(self, role: str) -> TrainBudget:
        return TrainBudget(steps=self.steps, lr=self.lr, optimizer="gd", loss="logistic")

    def batched_engine(self) -> "EngineChain":
        """All runs of a variant (seeds x strategies) train as one tensor program: the span
        engine (`engine.py`) takes every run it can express, batch regularisers that declare
        `batchable_regularizer` included (DELTA, BSS: their features rebuilt from the
        program's pre-activations; on the quick suite 2x less CPU than on the vmapped engine,
        the rest being BSS's own SVDs, with the same accuracies); the vmapped engine
        (`ptbench.run.vmapped`) any other run the span engine refuses (learning-rate scales
        that differ within a filter, say), so it too runs as one program per variant instead
        of one by one."""
        from ptbench.run.engines import EngineChain
        from ptbench.run.vmapped import VmapEngine

        return EngineChain([TwoLayerCNNEngine(), VmapEngine()])

    # -- the theory's diagnostics ---------------------------------------------------------
    def diagnostics(self, model: torch.nn.Module, data: TaskData, plan: TransferPlan | None) -> dict[str, Any]:
        """Signal learning along u, v_1 and v_2 and noise memorisation, split into inherited
        and fresh filters: the quantities the theory tracks (see signal_noise_diagnostics)."""
        norms = (self.shared, self.side("source")["specific"], self.side("target")["specific"])
        return signal_noise_diagnostics(model.W.detach(), data, plan, norms)

    def trace_every(self) -> int:
        """`trace` > 0 records the diagnostics every `trace` steps, for trajectory plots."""
        return self.trace


class _TestDraw:
    """The test split of `role`, drawn when it is first needed (`DeferredPatchSplit`): from the
    generator of (seed, f"{role}-test"), so the same numbers whenever it is drawn. It keeps
    its own copy of the directions (3 x d numbers): the data's extras hand the same tensor to
    strategies and diagnostics, and an edit there must not reach a test set drawn later."""

    def __init__(self, task: SignalNoise, role: str, dirs: torch.Tensor, streams: RandomStreams):
        self.task, self.role, self.dirs, self.streams = task, role, dirs.clone(), streams

    def __call__(self) -> PatchSplit:
        return self.task.sample(self.task.n_test, self.role, self.dirs, self.streams.torch(f"{self.role}-test"), 0.0)[0]
