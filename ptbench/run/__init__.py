"""Running one group of runs: the planning protocol, group state, the per-run training loop,
batched engines and the donor cache. Nothing here knows a particular task or strategy."""
