"""`PatchSplit`: the signal-noise data type, a split stored as the factors it was drawn from.

The task draws every example as one signal patch (a multiple of a few shared vectors) and
noise patches; keeping those factors lets the batched engine (`engine.py`) work in the span
of the training patches without ever materialising redundant copies, while `x` gives every
other consumer (the per-run path, diagnostics) the plain dense tensor with the same values.
"""

from __future__ import annotations

import torch

from ptbench.api import Split


class PatchSplit(Split):
    """Inputs [n, P, d] as factors: `shared` vectors [S, d] that many patches are multiples
    of, and `own` vectors [n, Q, d], one per remaining patch of each example.

    index[i, p] says what patch p of example i is: k < S means coef[i, p] * shared[k];
    k >= S means own row k - S of own.reshape(n * Q, d), used by that patch only, with
    coef 1. `x` materialises the dense [n, P, d] tensor (once, on first use) for everything
    that wants plain inputs: the per-run path sees exactly the values the engine factors.
    """

    def __init__(self, shared: torch.Tensor, own: torch.Tensor, index: torch.Tensor, coef: torch.Tensor, y: torch.Tensor):
        n, patches = index.shape
        S, Q = shared.shape[0], own.shape[1]
        if own.shape[0] != n or coef.shape != index.shape or y.shape != (n,):
            raise ValueError("PatchSplit: own [n, Q, d], index and coef [n, P] and y [n] must agree on n")
        own_slots = index[index >= S] - S
        if own_slots.numel() != n * Q or not torch.equal(torch.sort(own_slots).values, torch.arange(n * Q, device=index.device)):
            raise ValueError("PatchSplit: every own vector must be used by exactly one patch")
        if own_slots.numel() and not bool((coef[index >= S] == 1).all()):
            raise ValueError("PatchSplit: patches that use an own vector must have coefficient 1")
        if bool(((index >= S) & ((index - S) // max(Q, 1) != torch.arange(n, device=index.device)[:, None])).any()):
            raise ValueError("PatchSplit: own vectors of example i must be used by example i")
        self.shared, self.own, self.index, self.coef, self.y = shared, own, index, coef, y
        self._dense: torch.Tensor | None = None

    @classmethod
    def from_dense(cls, split: Split) -> "PatchSplit":
        """The split's factors; for a plain split, every patch its own vector (no sharing,
        still the span trick). A PatchSplit whose `x` was changed after it was read (a task
        that edits its data in place) is factored from that `x`: what `x` says is the data."""
        if isinstance(split, PatchSplit):
            if split.consistent():
                return split
            split = Split(split.x, split.y)
        n, patches, d = split.x.shape
        index = torch.arange(n * patches, device=split.x.device).reshape(n, patches)
        coef = torch.ones(n, patches, dtype=split.x.dtype, device=split.x.device)
        return cls(split.x.new_zeros(0, d), split.x, index, coef, split.y)

    @property
    def x(self) -> torch.Tensor:  # type: ignore[override]
        if self._dense is None:
            self._dense = self._build()
        return self._dense

    def _build(self) -> torch.Tensor:
        return self.basis()[self.index] * self.coef[..., None]

    def transient(self) -> "PatchSplit":
        """The values for one pass (a `DeferredPatchSplit` draws them without keeping them)."""
        return self

    def consistent(self) -> bool:
        """Whether the factors still say what `x` says (nobody wrote into `x`)."""
        return self._dense is None or torch.equal(self._dense, self._build())

    def to(self, device: str | torch.device) -> "PatchSplit":
        moved = PatchSplit(*(t.to(device) for t in (self.shared, self.own, self.index, self.coef, self.y)))
        if self._dense is not None:
            moved._dense = self._dense.to(device)
        return moved

    def basis(self) -> torch.Tensor:
        """[S + n Q, d]: shared vectors, then own vectors in (example, slot) order."""
        return torch.cat([self.shared, self.own.reshape(-1, self.own.shape[-1])])

    def shared_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(pos, neg), each [n, S]: per example, the summed positive and negative
        coefficients of its patches along each shared vector."""
        n, S = len(self.y), self.shared.shape[0]
        pos = self.coef.new_zeros(n, S)
        neg = self.coef.new_zeros(n, S)
        is_shared = self.index < S
        rows = torch.arange(n, device=self.index.device)[:, None].expand_as(self.index)[is_shared]
        cols = self.index[is_shared]
        values = self.coef[is_shared]
        pos.index_put_((rows, cols), values.clamp(min=0), accumulate=True)
        neg.index_put_((rows, cols), (-values).clamp(min=0), accumulate=True)
        return pos, neg


class DeferredPatchSplit(PatchSplit):
    """A PatchSplit drawn when first read: its draw function gives its values, the same each
    time (it draws from a generator derived from (seed, role) afresh). Why: a sweep's worker
    prepares every seed's data before one program trains them all, and the test splits are
    read only afterwards, to measure accuracy; held from the start, 32 seeds' test noise is
    280 MB of memory touched for the first time, and on this project's machines a first
    touch costs about 10 us a page (0.7-1 s of a 64-seed sweep's 3 s per worker). Drawn at
    evaluation instead (`transient`) and freed after, one seed's buffers serve the next.

    Reading any factor (or `x`) draws the split and keeps it, as a PatchSplit would have it
    from the start: whoever reads or edits the values sees them stay, and a factor assigned
    before any read is kept when the others are drawn. Its length is known without a draw."""

    FACTORS = ("shared", "own", "index", "coef", "y")

    def __init__(self, n: int, draw):
        self._n, self._draw, self._dense = int(n), draw, None

    def __len__(self) -> int:
        return len(self.__dict__["y"]) if "y" in self.__dict__ else self._n

    def __getattr__(self, name: str):
        # only for attributes not set yet; anything but a factor is a plain AttributeError
        # (also while unpickling or copying, before __init__'s attributes exist)
        if name not in DeferredPatchSplit.FACTORS:
            raise AttributeError(name)
        drawn = self._drawn()
        for key in DeferredPatchSplit.FACTORS:
            if key not in self.__dict__:
                setattr(self, key, getattr(drawn, key))
        return self.__dict__[name]

    def _drawn(self) -> PatchSplit:
        try:
            split = self._draw()
        except AttributeError as err:  # would read as "no attribute 'own'" through __getattr__
            raise RuntimeError(f"drawing the test split failed: {type(err).__name__}: {err}") from err
        if len(split.y) != self._n:
            raise ValueError(f"DeferredPatchSplit: the draw gave {len(split.y)} examples, not the {self._n} announced")
        return split

    @property
    def drawn(self) -> bool:
        """Whether values are held (something read or set them)."""
        return any(key in self.__dict__ for key in DeferredPatchSplit.FACTORS)

    def transient(self) -> PatchSplit:
        """The values for one pass, not kept: a fresh draw unless something already read or
        set them (then those, edits included)."""
        return self if self.drawn else self._drawn()

    def to(self, device: str | torch.device) -> PatchSplit:
        if self.drawn:
            return super().to(device)
        if torch.device(device) == torch.device("cpu"):
            return self
        return DeferredPatchSplit(self._n, _Moved(self._draw, device))


class _Moved:
    """A draw, then a move to a device (picklable, unlike a lambda)."""

    def __init__(self, draw, device):
        self.draw, self.device = draw, device

    def __call__(self) -> PatchSplit:
        return self.draw().to(self.device)
