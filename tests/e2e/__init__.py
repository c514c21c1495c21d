"""End-to-end tests of the compose stack (a package, so its conftest stays its own)."""
