"""BodyBuffer: a request body in memory up to a threshold, spooled to a temp file beyond it."""

from __future__ import annotations

import io
import logging
import os
import sys
from pathlib import Path

import pytest
from brick.body import BodyBuffer
from brick.errors import HTTPError

pytestmark = pytest.mark.unit


def test_small_body_stays_in_memory() -> None:
    body = BodyBuffer(threshold=10)
    body.write(b"hello")
    body.write(b"world")  # exactly the threshold: still in memory
    assert not body.spooled
    assert body.length == 10
    stream = body.open()
    assert isinstance(stream, io.BytesIO)
    assert stream.read() == b"helloworld"


def test_one_piece_is_not_copied() -> None:
    # The usual small body arrives in one piece; BytesIO then shares that bytes object
    # (CPython keeps a reference to it instead of copying until the stream is written).
    data = b"x" * 1000
    body = BodyBuffer(threshold=4096)
    body.write(data)
    before = sys.getrefcount(data)
    stream = body.open()
    assert sys.getrefcount(data) == before + 1
    assert stream.read() == data


def test_large_body_spools_to_a_temp_file_in_tmpdir(tmp_path: Path) -> None:
    body = BodyBuffer(threshold=8, tmpdir=str(tmp_path))
    body.write(b"12345")
    assert not body.spooled
    body.write(b"6789")  # crosses the threshold: what is in memory moves to the file
    assert body.spooled
    body.write(b"abc")
    assert body.length == 12
    stream = body.open()
    assert os.fstat(stream.fileno()).st_size == 12
    assert stream.read() == b"123456789abc"
    assert list(tmp_path.iterdir()) == []  # anonymous: nothing left on disk even now
    body.close()
    assert stream.closed


def test_open_rewinds_every_time() -> None:
    for threshold in (0, 1 << 20):
        body = BodyBuffer(threshold=threshold)
        body.write(b"abc")
        assert body.open().read() == b"abc"
        assert body.open().read() == b"abc"
        body.close()


def test_empty_body() -> None:
    body = BodyBuffer(threshold=0)
    assert body.open().read() == b"" and body.length == 0 and not body.spooled


def test_close_releases_the_memory_and_is_idempotent() -> None:
    body = BodyBuffer(threshold=1 << 20)
    body.write(b"abc")
    body.close()
    body.close()
    assert body.open().read() == b""


def test_spool_failure_refuses_with_503(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging.getLogger("brick"), "propagate", True)
    caplog.set_level(logging.ERROR, logger="brick")
    body = BodyBuffer(threshold=4, tmpdir=str(tmp_path / "missing"))
    body.write(b"1234")
    with pytest.raises(HTTPError) as info:
        body.write(b"5")
    assert info.value.status == 503
    assert not body.spooled
    assert any("cannot spool" in r.getMessage() for r in caplog.records)
