"""brick: a strict, fast pre-fork WSGI server written with the standard library only."""

__version__ = "0.1.0"
