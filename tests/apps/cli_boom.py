"""Fixture for the CLI tests: a module that raises while it is imported."""

raise RuntimeError("cli_boom fails on import")
