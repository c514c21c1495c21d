"""The request body store: bytes in memory up to a threshold, then spooled to a temp file.

The whole body is read before the app runs (so a slow sender never holds an app thread),
which also means `wsgi.input` is a plain seekable file: reads are bounded by the body
itself and the app can never block on the network.
"""

from __future__ import annotations

import io
import logging
import tempfile
from typing import IO

from brick.errors import HTTPError

log = logging.getLogger("brick.error")


class BodyBuffer:
    __slots__ = ("_file", "_mem", "length", "threshold", "tmpdir")

    def __init__(self, threshold: int, tmpdir: str | None = None) -> None:
        self.threshold = threshold
        self.tmpdir = tmpdir
        self._mem = bytearray()
        self._file: IO[bytes] | None = None
        self.length = 0

    def write(self, data: bytes) -> None:
        self.length += len(data)
        try:
            if self._file is not None:
                self._file.write(data)
                return
            self._mem += data
            if len(self._mem) > self.threshold:
                self._file = tempfile.TemporaryFile(prefix="brick-body-", dir=self.tmpdir)  # noqa: SIM115
                self._file.write(self._mem)
                self._mem = bytearray()
        except OSError as exc:
            log.error("cannot spool a request body to disk: %s", exc)
            self.close()
            raise HTTPError("cannot store the request body", status=503) from exc

    def open(self) -> IO[bytes]:
        """The body as a file positioned at its start, for `wsgi.input`."""
        if self._file is not None:
            try:
                self._file.flush()
            except OSError as exc:
                log.error("cannot spool a request body to disk: %s", exc)
                self.close()
                raise HTTPError("cannot store the request body", status=503) from exc
            self._file.seek(0)
            return self._file
        return io.BytesIO(self._mem)

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        self._mem = bytearray()
