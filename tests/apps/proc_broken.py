"""Fixture for the process-model tests: an app module that fails while it is imported."""

raise RuntimeError("proc_broken refuses to load")
