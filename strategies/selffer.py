"""Yosinski et al.'s BnB control: inherit the first `layers` layers from a model trained on
the *target* task itself (another initialisation, same target data), then train again.

It separates the effect of *what* is inherited (source knowledge) from the effect of
inheriting trained weights at all (co-adaptation, a different starting scale).

It is literally `partial-layers` with another donor: the same parameters, validation and
plan (inherited from `PartialLayers`), only `donor = "target"`."""

from .partial_layers import PartialLayers


class Selffer(PartialLayers):
    """Copy the first k layers of a model trained on the target task."""

    name = "selffer"
    donor = "target"
