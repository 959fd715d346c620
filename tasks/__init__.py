"""Built-in tasks: one file per task family. Installed as `ptbench.tasks`; suites live in
`suites/*.toml` beside them."""
