"""The built-in suites: one TOML file per suite (installed as ptbench.sweep.plan). Each names its
tasks, strategies, seeds, and optionally a report generator from `ptbench.reports`."""
