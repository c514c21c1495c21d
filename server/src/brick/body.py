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
    """One request's body, written piece by piece as it arrives, read once as `wsgi.input`.

    In memory the pieces are kept as they came and joined once when the body is opened
    (a body that arrived in one piece is not copied at all). Past `threshold` bytes they
    go to an anonymous temp file in `tmpdir`; a failure there refuses the request (503).
    """

    __slots__ = ("_file", "_parts", "length", "threshold", "tmpdir")

    def __init__(self, threshold: int, tmpdir: str | None = None) -> None:
        self.threshold = threshold
        self.tmpdir = tmpdir
        self._parts: list[bytes] = []
        self._file: IO[bytes] | None = None
        self.length = 0

    @property
    def spooled(self) -> bool:
        """True once the body went to a temp file."""
        return self._file is not None

    def write(self, data: bytes) -> None:
        self.length += len(data)
        try:
            if self._file is not None:
                self._file.write(data)
                return
            self._parts.append(data)
            if self.length > self.threshold:
                self._file = tempfile.TemporaryFile(prefix="brick-body-", dir=self.tmpdir)  # noqa: SIM115
                self._file.writelines(self._parts)
                self._parts = []
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
        # b"".join of one bytes object returns that object, and BytesIO shares its buffer.
        return io.BytesIO(b"".join(self._parts))

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        self._parts = []
