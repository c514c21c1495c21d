"""Coverage-guided fuzzing of brick's HTTP parser (atheris). Run by `make fuzz`.

The properties, checked on every input:

1. the parser either yields events or raises an `HTTPError` whose status is a 4xx or 5xx;
   any other exception is a bug (atheris reports it with the input that caused it);
2. the bytes fed whole, and fed in pieces (sizes chosen from the input itself, and one byte at
   a time for short inputs), give identical events: where a request ends must not depend on
   how the bytes arrived;
3. one feed never produces more events than the bytes it brought plus a small constant (no
   loop that spins without consuming input).

The attack corpus (tests/attack/corpus.py) seeds the fuzzer. Usage:

    python tests/stress/fuzz_parser.py [CORPUS_DIR] [-max_total_time=60] [libFuzzer options]
    python tests/stress/fuzz_parser.py --replay FILE...   # re-run saved crashing inputs
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/, for the attack corpus
sys.path.insert(0, str(HERE.parent.parent / "server" / "src"))

with atheris.instrument_imports():
    from brick.errors import HTTPError
    from brick.parser import END, NEED_DATA, Limits, Request, RequestParser

from attack.corpus import CASES  # noqa: E402


def limits() -> Limits:
    """Small limits, so the fuzzer reaches the limit checks with short inputs."""
    return Limits(max_request_line=200, max_header_count=8, max_field_size=100, max_body=4096)


def events(pieces: list[bytes]) -> list[object]:
    """Every event for `pieces` fed in turn; body bytes joined so split points do not show."""
    parser = RequestParser(limits())
    out: list[object] = []
    body = bytearray()
    try:
        for piece in pieces:
            parser.feed(piece)
            count = 0
            while True:
                event = parser.next_event()
                count += 1
                if count > len(piece) + 16:
                    raise AssertionError(f"{count} events from {len(piece)} bytes: it spins")
                if event is NEED_DATA:
                    break
                if type(event) is bytes:
                    if not event:
                        raise AssertionError("an empty body piece")
                    body += event
                    continue
                if body:
                    out.append(bytes(body))
                    body.clear()
                if type(event) is Request:
                    out.append(
                        (
                            event.method,
                            event.target,
                            tuple(event.headers),
                            event.content_length,
                            event.chunked,
                            event.keep_alive,
                        )
                    )
                elif event is END:
                    out.append("END")
                else:
                    raise AssertionError(f"unknown event {event!r}")
    except HTTPError as exc:
        if not 400 <= exc.status < 600:
            raise AssertionError(f"HTTPError with status {exc.status}") from exc
        if body:
            out.append(bytes(body))
        out.append(exc.status)
        return out
    if body:
        out.append(bytes(body))
    return out


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_one_input(data: bytes) -> None:
    whole = events([data])
    step = (data[0] % 13 + 1) if data else 1
    for pieces in (split(data, step), split(data, 1) if len(data) < 2048 else None):
        if pieces is None:
            continue
        got = events(pieces)
        if got != whole:
            raise AssertionError(
                f"fed in pieces of {len(pieces[0]) if pieces else 0}: {got!r}\nwhole: {whole!r}"
            )


def seed(path: Path) -> Path:
    """Put the attack corpus, one file per case, into `path` as starting inputs."""
    path.mkdir(parents=True, exist_ok=True)
    for case in CASES:
        (path / f"seed-{case.group}-{case.name}").write_bytes(case.raw[:8192])
    return path


def main(argv: list[str]) -> None:
    if len(argv) > 1 and argv[1] == "--replay":
        for name in argv[2:]:
            test_one_input(Path(name).read_bytes())
            print(f"{name}: ok")
        return
    args = list(argv)
    corpus = [a for a in args[1:] if not a.startswith("-")]
    if corpus:
        seed(Path(corpus[0]))  # libFuzzer adds what it finds to the first directory
    else:
        args.append(str(seed(Path(tempfile.mkdtemp(prefix="brick-fuzz-")))))
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
