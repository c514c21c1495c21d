"""The attack corpus (tests/attack) through nginx to the bare WSGI app on brick (/wsgi/).

nginx parses each request itself and sends brick its own re-framed copy (request buffering
on, HTTP/1.1 keep-alive upstream), so nginx and brick may well judge a request differently:
nginx is lenient where brick is strict (bare LF, chunk extensions) and the other way round.
What must never happen is that they disagree on where a request ends. For every case:

- each response is nginx's own refusal (`Server: nginx`, 4xx/5xx) or brick's answer
  (`Server: brick/...`), never a 502/504 (brick broke or stalled the upstream exchange);
- no more responses come back than the case holds request heads;
- probes on new connections right after it, which nginx may send over the same upstream
  keep-alive connection as the case, each get exactly their own echo (no desync);

and over the whole corpus, brick's access log lists no request nginx did not forward:
a smuggled request would be one brick served but nginx never sent.
"""

from __future__ import annotations

import itertools
import re
import secrets
import socket
import time
from collections import Counter

import pytest
from attack.corpus import CASES, PREFIX, Case
from attack.wire import Closed, Reader, Response, Silent, echo_request

from .conftest import Stack

pytestmark = pytest.mark.e2e

TIMEOUT = 10.0
SETTLE = 0.3  # after the expected responses, how long to wait for an unexpected extra one
PROBES = 2
_ids = itertools.count()
# (case, what happened) where nginx and brick judged validity differently; printed at the end.
DIFFERENCES: list[str] = []
# Statuses brick answers a request it refuses with (the bare WSGI app never sends these).
REFUSALS = (400, 413, 414, 417, 431, 501, 505)


def send_case(address: tuple[str, int], case: Case) -> tuple[list[Response], bytes]:
    """The responses nginx gives to `case` on a fresh connection, and any stray bytes."""
    responses: list[Response] = []
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        try:
            sock.sendall(case.raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reader = Reader(sock)
        while True:
            wait = TIMEOUT if len(responses) < len(case.expect) else SETTLE
            try:
                responses.append(reader.response(wait))
            except Closed as exc:
                return responses, exc.partial
            except Silent:
                return responses, bytes(reader.buf)


def probe(address: tuple[str, int]) -> None:
    marker = b"nginx-probe-%d-%s" % (next(_ids), secrets.token_hex(4).encode())
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(echo_request(PREFIX, marker))
        resp = Reader(sock).response(TIMEOUT)
    assert (resp.status, resp.body) == (200, marker), (
        f"a probe after the case got {resp!r}: nginx and brick lost track of a request end"
    )


def request_heads(raw: bytes) -> int:
    """An upper bound on the requests in `raw`: every HTTP-version token may end a request
    line, and HTTP/0.9 requests have none (one more)."""
    return len(re.findall(rb"HTTP/\d", raw)) + 1


def is_http09(raw: bytes) -> bool:
    """An HTTP/0.9 request: a request line with no version."""
    first = raw.lstrip(b"\r\n").split(b"\r\n", 1)[0]
    return b" HTTP/" not in first and first.count(b" ") == 1


def origin(resp: Response) -> str:
    server = resp.header("Server") or ""
    if server.startswith("brick/"):
        return "brick"
    if server.startswith("nginx"):
        return "nginx"
    return f"unknown ({server!r})"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_through_nginx(stack: Stack, case: Case) -> None:
    address = ("127.0.0.1", stack.port)
    responses, stray = send_case(address, case)
    where = [f"{r.status} {origin(r)}" for r in responses]
    if stray and not responses and is_http09(case.raw):
        # nginx serves HTTP/0.9: the answer is a bare body, with no status line to check.
        DIFFERENCES.append(f"{case.id}: nginx answered as HTTP/0.9 with {stray[:40]!r}")
    else:
        assert not stray, f"bytes that are no response after {where}: {stray[:200]!r}"
    for resp in responses:
        assert resp.status not in (502, 504), f"{where}: brick broke the upstream exchange"
        assert origin(resp) in ("brick", "nginx"), where
        if origin(resp) == "nginx":
            assert resp.status >= 400, where
    assert len(responses) <= request_heads(case.raw), f"more answers than requests: {where}"
    for _ in range(PROBES):
        probe(address)

    direct = case.expect[0] if isinstance(case.expect[0], tuple) else (case.expect[0],)
    if responses and origin(responses[0]) == "brick":
        first = responses[0].status
        if first in REFUSALS:
            DIFFERENCES.append(f"{case.id}: nginx forwarded it, brick refused: {where}")
        elif first not in REFUSALS and min(direct) >= 400:
            DIFFERENCES.append(f"{case.id}: nginx accepted (brick alone: {direct}): {where}")


def _access_lines(stack: Stack, service: str, begin: str, end: str) -> list[str]:
    """The access-log lines of `service` between the begin and end marker requests."""
    deadline = time.monotonic() + 60
    while True:
        text = stack.compose("logs", "--no-color", "--no-log-prefix", service).stdout
        lines = text.splitlines()
        starts = [i for i, line in enumerate(lines) if begin in line]
        ends = [i for i, line in enumerate(lines) if end in line]
        if starts and ends:
            return lines[starts[-1] + 1 : ends[-1]]
        if time.monotonic() > deadline:
            pytest.fail(f"markers not found in the {service} log", pytrace=False)
        time.sleep(1.0)


@pytest.mark.timeout(600)  # the whole corpus again, with a settle wait after many cases
def test_brick_served_only_what_nginx_forwarded(stack: Stack) -> None:
    """Replay the corpus between two marker requests, then compare the two access logs."""
    address = ("127.0.0.1", stack.port)
    token = secrets.token_hex(6)
    begin, end = f"attack-begin-{token}", f"attack-end-{token}"
    stack.get(f"/wsgi/hello?{begin}")
    answered = Counter[str]()
    refused_by_brick = 0
    for case in CASES:
        responses, _ = send_case(address, case)
        answered.update(origin(r) for r in responses)
        refused_by_brick += sum(
            1 for r in responses if origin(r) == "brick" and r.status in REFUSALS
        )
        probe(address)
    stack.get(f"/wsgi/hello?{end}")

    nginx = _access_lines(stack, "nginx", begin, end)
    brick = _access_lines(stack, "wsgi", begin, end)
    # nginx's format ends with upstream=ADDR upstream_status=CODE ...; "-" when not forwarded.
    forwarded = [ln for ln in nginx if re.search(r"upstream_status=\d", ln)]
    forwarded_ok = [ln for ln in forwarded if re.search(r"upstream_status=[123]\d\d", ln)]
    served = [ln for ln in brick if re.search(r'"[A-Za-z]+ \S+ HTTP/1\.[01]" \d{3} ', ln)]
    served = [ln for ln in served if "/healthz" not in ln]  # the container's health check
    print(
        f"\ncorpus through nginx: {dict(answered)} responses; nginx forwarded {len(forwarded)}"
        f" ({len(forwarded_ok)} answered by the app), brick logged {len(served)} and refused"
        f" {refused_by_brick}"
    )
    for line in DIFFERENCES:
        print("  judged differently:", line)
    # A request brick refuses while parsing its head never reaches its access log; every other
    # one nginx forwarded is there exactly once. More would be a request nginx never sent.
    assert len(served) <= len(forwarded), "brick served requests nginx never sent (smuggling)"
    assert len(served) + refused_by_brick == len(forwarded), (
        f"nginx forwarded {len(forwarded)} requests, brick logged {len(served)} and refused"
        f" {refused_by_brick}"
    )
