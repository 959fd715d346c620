"""A static HTML report of a set of runs: `write_site(runs, out_dir)` (needs ptbench[html])."""

from ptbench.results.html.site import write_site

__all__ = ["write_site"]
