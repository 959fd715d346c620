"""`python -m ptbench`: the command line, ended without the interpreter's teardown (`exit_now`)."""

from .cli import console

console()
