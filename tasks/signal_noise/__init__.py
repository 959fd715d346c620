"""The signal-noise family: the paper's data model for the two-layer ReLU CNN.

`task.py` (the Task), `model.py` (the CNN), `data.py` (`PatchSplit`, the factored split),
`engine.py` (the batched Gram-span engine) and `diagnostics.py` (signal learning against
noise memorisation). Everything this family needs lives here; the harness knows none of it.
"""

from .task import SignalNoise

__all__ = ["SignalNoise"]
