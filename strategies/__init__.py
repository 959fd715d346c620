"""Built-in strategies: one file each, the examples a contributor copies. Installed as
`ptbench.strategies`."""
