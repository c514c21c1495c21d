"""Fixture for the CLI tests: imports a module that does not exist."""

import cli_no_such_dependency  # noqa: F401
