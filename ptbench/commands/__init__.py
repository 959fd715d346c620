"""One module per subcommand of `python -m ptbench`.

Each module defines NAME, HELP, DESCRIPTION, `configure(parser)` and `main(args) -> int`;
`ptbench.cli` finds them here, so adding a command never edits a shared file.
"""
