"""The hostile-request corpus: raw requests, each with the answer brick must give.

Every case is the exact bytes a client sends on one fresh connection, in one piece. Every
target is under the mount prefix `/wsgi` (`PREFIX`): through nginx that is the route to the
bare WSGI app on brick; run directly, brick is started with `--root-path /wsgi`. The bytes are
final: lengths inside them (Content-Length, chunk sizes) are right as written. Every app used
answers `/wsgi/echo` with the request body, exactly.

`expect` lists the final (non-1xx) statuses of the responses, in order. An entry may be a
tuple when the RFCs leave brick a choice (e.g. 400 or 501 for an unknown transfer coding).
The rules every runner applies:

- a 4xx/5xx from brick ends the connection: it is the last response, and the server closes;
- when every expected response was a 2xx, the connection stays open unless `closes` says the
  request itself asked for a close (HTTP/1.0, `Connection: close`);
- a request hidden inside another one's body is always `SMUGGLE`, whose body is `SMUGGLED`: a
  response whose body is exactly `SMUGGLED` means a smuggled request reached the app, which
  must never happen;
- `echo`, when given, is the body the first response must carry: where brick thinks the
  first request's body ends.

See README.md beside this file for how the runners use it.
"""

from __future__ import annotations

from dataclasses import dataclass

Status = int | tuple[int, ...]

PREFIX = b"/wsgi"
H = b"Host: t\r\n"
SMUGGLED = b"SMUGGLED"
# A complete request that must never be answered when it hides in another one's body.
SMUGGLE = b"POST /wsgi/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 8\r\n\r\n" + SMUGGLED
# A complete request that legitimately follows another one (pipelining).
NEXT = b"POST /wsgi/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nnext"
HELLO_CHUNKED = b"5\r\nhello\r\n0\r\n\r\n"
REJECT = (400,)


@dataclass(frozen=True)
class Case:
    group: str
    name: str
    raw: bytes
    expect: tuple[Status, ...]
    echo: bytes | None = None
    closes: bool = False
    why: str = ""

    @property
    def id(self) -> str:
        return f"{self.group}/{self.name}"


def get(headers: bytes = b"", target: bytes = b"/wsgi/echo", version: bytes = b"HTTP/1.1") -> bytes:
    """A GET with a Host header followed by `headers` (each ending in CRLF)."""
    return b"GET " + target + b" " + version + b"\r\n" + H + headers + b"\r\n"


def post(headers: bytes, body: bytes = b"", version: bytes = b"HTTP/1.1") -> bytes:
    """A POST to /wsgi/echo with a Host header, `headers` (each ending in CRLF), and `body`."""
    return b"POST /wsgi/echo " + version + b"\r\n" + H + headers + b"\r\n" + body


def chunked(headers: bytes, body: bytes) -> bytes:
    """A POST framed by `Transfer-Encoding: chunked` whose (raw) body is `body`."""
    return post(b"Transfer-Encoding: chunked\r\n" + headers, body)


def line(n: int) -> bytes:
    """A GET whose request line is exactly `n` bytes long (query padding)."""
    base = b"GET /wsgi/echo?p= HTTP/1.1"
    return b"GET /wsgi/echo?p=" + b"a" * (n - len(base)) + b" HTTP/1.1\r\n" + H + b"\r\n"


def field(n: int) -> bytes:
    """A GET with one extra header field exactly `n` bytes long."""
    return get(b"X-Pad: " + b"a" * (n - len(b"X-Pad: ")) + b"\r\n")


def fields(n: int) -> bytes:
    """A GET with exactly `n` header fields, Host included."""
    return get(b"".join(b"X-F%d: v\r\n" % i for i in range(n - 1)))


# A TLS ClientHello: record header, then a handshake whose 32 random bytes are 0x00..0x1f,
# so it holds a bare LF and a bare CR, as real ones often do.
TLS_HELLO = (
    bytes.fromhex("16030100 2d 01000029 0303")
    + bytes(range(32))
    + bytes.fromhex("00 0002002f 0100")
)
# The same with random bytes free of CR and LF: only its control bytes give it away.
TLS_HELLO_NO_LF = (
    bytes.fromhex("16030100 2d 01000029 0303") + b"\xaa" * 32 + bytes.fromhex("00 0002002f 0100")
)

CASES: list[Case] = []


def add(
    group: str,
    name: str,
    raw: bytes,
    expect: tuple[Status, ...],
    echo: bytes | None = None,
    closes: bool = False,
    why: str = "",
) -> None:
    CASES.append(Case(group, name, raw, expect, echo, closes, why))


# -- baseline: well-formed requests that must be served, so the runner can see success ------
add("baseline", "get", get(), (200,), b"")
add("baseline", "post-length", post(b"Content-Length: 5\r\n", b"hello"), (200,), b"hello")
add("baseline", "post-chunked", chunked(b"", HELLO_CHUNKED), (200,), b"hello")
add(
    "baseline",
    "chunk-upper-hex",
    chunked(b"", b"A\r\n0123456789\r\n0\r\n\r\n"),
    (200,),
    b"0123456789",
)
add(
    "baseline",
    "chunk-leading-zeros",
    chunked(b"", b"005\r\nhello\r\n000\r\n\r\n"),
    (200,),
    b"hello",
)
add(
    "baseline",
    "chunk-ext-token",
    chunked(b"", b"5;name=value\r\nhello\r\n0\r\n\r\n"),
    (200,),
    b"hello",
)
add(
    "baseline",
    "chunk-ext-quoted",
    chunked(b"", b'5;n="a;b \\" c"\r\nhello\r\n0\r\n\r\n'),
    (200,),
    b"hello",
    why="a quoted chunk-ext value may hold ';' and an escaped quote",
)
add(
    "baseline",
    "chunk-ext-bws",
    chunked(b"", b"5 ;n\r\nhello\r\n0 ;n=v\r\n\r\n"),
    (200,),
    b"hello",
    why="RFC 9112 7.1.1: BWS before ';'",
)
add(
    "baseline",
    "chunk-trailers",
    chunked(b"", b"5\r\nhello\r\n0\r\nX-T: v\r\n\r\n"),
    (200,),
    b"hello",
)
add(
    "baseline",
    "trailer-content-length",
    chunked(b"", b"5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n") + NEXT,
    (200, 200),
    b"hello",
    why="a Content-Length trailer must not reframe anything: the next request is answered",
)
add("baseline", "pipelined-two", get() + NEXT, (200, 200), b"")
add("baseline", "pipelined-after-chunked", chunked(b"", HELLO_CHUNKED) + NEXT, (200, 200), b"hello")
add("baseline", "pipelined-twenty", get() * 20, (200,) * 20, b"")
add(
    "baseline",
    "leading-empty-lines",
    b"\r\n\r\n" + get(),
    (200,),
    b"",
    why="RFC 9112 2.2: empty lines before a request-line are ignored",
)
add("baseline", "http10-no-host", b"GET /wsgi/echo HTTP/1.0\r\n\r\n", (200,), b"", closes=True)
add(
    "baseline",
    "http10-keep-alive",
    b"GET /wsgi/echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    (200,),
    b"",
)
add("baseline", "connection-close", get(b"Connection: close\r\n"), (200,), b"", closes=True)
add("baseline", "absolute-form", get(target=b"http://t/wsgi/echo"), (200,), b"")
add("baseline", "absolute-form-upper-scheme", get(target=b"HTTP://t/wsgi/echo"), (200,), b"")
add(
    "baseline",
    "host-empty",
    b"GET /wsgi/echo HTTP/1.1\r\nHost:\r\n\r\n",
    (200,),
    b"",
    why="RFC 9112 3.2: an empty Host is how a client says the authority is empty",
)
add("baseline", "obs-text-value", get(b"X-Name: caf\xe9\r\n"), (200,), b"")
add(
    "baseline",
    "te-mixed-case",
    post(b"Transfer-Encoding: ChUnKeD\r\n", HELLO_CHUNKED),
    (200,),
    b"hello",
    why="transfer-coding names are case-insensitive",
)
add(
    "baseline",
    "te-trailing-space",
    post(b"Transfer-Encoding: chunked \r\n", HELLO_CHUNKED),
    (200,),
    b"hello",
    why="OWS after a field value is not part of it",
)
add(
    "baseline",
    "te-trailing-tab",
    post(b"Transfer-Encoding: chunked\t\r\n", HELLO_CHUNKED),
    (200,),
    b"hello",
)
add(
    "baseline",
    "te-leading-spaces",
    post(b"Transfer-Encoding:    chunked\r\n", HELLO_CHUNKED),
    (200,),
    b"hello",
)
add("baseline", "cl-leading-zeros", post(b"Content-Length: 005\r\n", b"hello"), (200,), b"hello")
add("baseline", "cl-ows", post(b"Content-Length: \t5 \r\n", b"hello"), (200,), b"hello")
add(
    "baseline",
    "get-body-holds-request",
    get(b"Content-Length: %d\r\n" % len(SMUGGLE)) + SMUGGLE,
    (200,),
    SMUGGLE,
    why="a body that looks like a request is only a body",
)
add(
    "baseline",
    "underscore-cl-beside-cl",
    post(b"Content_Length: 20\r\nContent-Length: 5\r\n", b"hello"),
    (200,),
    b"hello",
    why="a name with '_' never poses as its '-' twin",
)
add(
    "baseline",
    "underscore-te-beside-cl",
    post(b"Transfer_Encoding: chunked\r\nContent-Length: 5\r\n", b"hello"),
    (200,),
    b"hello",
)
add(
    "baseline",
    "underscore-cl-alone",
    post(b"Content_Length: 4\r\n") + NEXT,
    (200, 200),
    b"",
    why="Content_Length frames nothing, so what follows is the next request",
)
add("baseline", "unknown-method", b"BREW /wsgi/echo HTTP/1.1\r\n" + H + b"\r\n", (200,), b"")
add(
    "baseline",
    "expect-continue",
    post(b"Expect: 100-continue\r\nContent-Length: 5\r\n", b"hello"),
    (200,),
    b"hello",
)
add(
    "baseline",
    "h2c-upgrade-ignored",
    get(
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
    ),
    (200,),
    b"",
    why="brick speaks HTTP/1.1 only: the upgrade is declined by answering normally",
)
add("baseline", "request-line-at-limit", line(4094), (200,), b"")
add("baseline", "field-at-limit", field(8190), (200,), b"")
add("baseline", "fields-at-limit", fields(100), (200,), b"")

# -- CL.TE and TE.CL: both framings in one request (RFC 9112 6.3: 400 and close) ------------
add(
    "desync",
    "cl-te",
    post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLE),
    REJECT,
)
add(
    "desync",
    "te-cl",
    post(
        b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        b"%x\r\n" % len(SMUGGLE) + SMUGGLE + b"\r\n0\r\n\r\n",
    ),
    REJECT,
)
add(
    "desync",
    "te-cl-short",
    post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"8\r\nSMUGGLED\r\n0\r\n\r\n"),
    REJECT,
)
add(
    "desync",
    "cl-zero-te",
    post(b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLE),
    REJECT,
)
add(
    "desync",
    "te-http10",
    post(b"Transfer-Encoding: chunked\r\n", HELLO_CHUNKED + SMUGGLE, b"HTTP/1.0"),
    REJECT,
    why="RFC 9112 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing",
)
add(
    "desync",
    "te-cl-http10",
    post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"hello" + SMUGGLE, b"HTTP/1.0"),
    REJECT,
)
add(
    "desync",
    "cl-te-after-get",
    get() + post(b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLE),
    (200, 400),
    b"",
    why="a desync attempt in the second request of a pipeline",
)

# -- Transfer-Encoding obfuscation -----------------------------------------------------------
add(
    "te",
    "space-before-colon-with-cl",
    post(b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLE),
    REJECT,
    why="RFC 9112 5.1: whitespace before the colon must be rejected with 400",
)
add(
    "te",
    "space-before-colon",
    post(b"Transfer-Encoding : chunked\r\n", HELLO_CHUNKED + SMUGGLE),
    REJECT,
)
add("te", "tab-before-colon", post(b"Transfer-Encoding\t: chunked\r\n", HELLO_CHUNKED), REJECT)
add(
    "te",
    "trailing-space-with-cl",
    post(b"Transfer-Encoding: chunked \r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLE),
    REJECT,
)
add(
    "te",
    "trailing-tab-with-cl",
    post(b"Transfer-Encoding: chunked\t\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLE),
    REJECT,
)
add(
    "te",
    "mixed-case-with-cl",
    post(b"Transfer-Encoding: CHUNKED\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLE),
    REJECT,
)
add(
    "te",
    "xchunked",
    post(b"Transfer-Encoding: xchunked\r\n", HELLO_CHUNKED + SMUGGLE),
    ((400, 501),),
)
add(
    "te",
    "xchunked-with-cl",
    post(b"Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n", b"hello" + SMUGGLE),
    ((400, 501),),
)
add(
    "te",
    "chunked-identity",
    post(b"Transfer-Encoding: chunked, identity\r\n", HELLO_CHUNKED + SMUGGLE),
    REJECT,
    why="RFC 9112 6.3: chunked not last in a request: 400",
)
add(
    "te",
    "identity-chunked",
    post(b"Transfer-Encoding: identity, chunked\r\n", HELLO_CHUNKED),
    ((400, 501),),
)
add(
    "te",
    "gzip-chunked",
    post(b"Transfer-Encoding: gzip, chunked\r\n", HELLO_CHUNKED),
    ((400, 501),),
    why="a coding brick does not decode: 501",
)
add(
    "te",
    "chunked-comma-empty",
    post(b"Transfer-Encoding: chunked,\r\n", HELLO_CHUNKED),
    ((200, 400, 501),),
    why="an empty list element; accepting it as chunked is also right",
)
add(
    "te",
    "double-quoted",
    post(b'Transfer-Encoding: "chunked"\r\n', HELLO_CHUNKED + SMUGGLE),
    ((400, 501),),
)
add(
    "te",
    "single-quoted",
    post(b"Transfer-Encoding: 'chunked'\r\n", HELLO_CHUNKED + SMUGGLE),
    ((400, 501),),
    why="'chunked' is a valid token naming an unknown coding",
)
add(
    "te",
    "vertical-tab-before",
    post(b"Transfer-Encoding:\x0bchunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLE),
    REJECT,
)
add(
    "te",
    "vertical-tab-after",
    post(b"Transfer-Encoding: chunked\x0b\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLE),
    REJECT,
)
add("te", "form-feed", post(b"Transfer-Encoding:\x0cchunked\r\n", HELLO_CHUNKED), REJECT)
add("te", "nul-after", post(b"Transfer-Encoding: chunked\x00\r\n", HELLO_CHUNKED), REJECT)
add(
    "te",
    "duplicate-chunked",
    post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", HELLO_CHUNKED),
    REJECT,
    why="chunked applied twice",
)
add(
    "te",
    "duplicate-chunked-identity",
    post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", HELLO_CHUNKED + SMUGGLE),
    REJECT,
)
add(
    "te",
    "duplicate-identity-chunked-with-cl",
    post(
        b"Transfer-Encoding: identity\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"0\r\n\r\n" + SMUGGLE,
    ),
    REJECT,
)
add(
    "te",
    "list-chunked-chunked",
    post(b"Transfer-Encoding: chunked, chunked\r\n", HELLO_CHUNKED),
    REJECT,
)
add(
    "te",
    "empty-value",
    post(b"Transfer-Encoding:\r\nContent-Length: 5\r\n", b"hello"),
    ((400, 501),),
)
add("te", "obs-fold", post(b"Transfer-Encoding:\r\n chunked\r\n", HELLO_CHUNKED), REJECT)
add(
    "te",
    "obs-fold-hidden",
    post(
        b"X-Foo: bar\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"0\r\n\r\n" + SMUGGLE,
    ),
    REJECT,
)
add(
    "te",
    "bare-cr-before-name",
    post(
        b"X-Foo: bar\rTransfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLE
    ),
    REJECT,
)
add(
    "te",
    "underscore-only",
    post(b"Transfer_Encoding: chunked\r\n", HELLO_CHUNKED),
    (200, 400),
    b"",
    why="Transfer_Encoding frames nothing: the request has no body, and the chunked bytes"
    " that follow are a malformed next request",
)
add("te", "non-ascii", post(b"Transfer-Encoding: chunk\xc3\xa9d\r\n", HELLO_CHUNKED), ((400, 501),))
add("te", "parameter", post(b"Transfer-Encoding: chunked;q=1\r\n", HELLO_CHUNKED), ((400, 501),))
add(
    "te",
    "name-with-nul",
    post(b"Transfer-Encoding\x00: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLE),
    REJECT,
)

# -- Content-Length: exactly 1*DIGIT, once (RFC 9112 6.3, RFC 9110 8.6) ---------------------
add(
    "cl",
    "duplicate-same",
    post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
    ((200, 400),),
    why="identical duplicates may be accepted or refused",
)
add(
    "cl",
    "duplicate-different",
    post(b"Content-Length: 5\r\nContent-Length: 13\r\n", b"hello" + SMUGGLE),
    REJECT,
)
add("cl", "list-same", post(b"Content-Length: 5, 5\r\n", b"hello"), ((200, 400),))
add("cl", "list-different", post(b"Content-Length: 5, 13\r\n", b"hello" + SMUGGLE), REJECT)
add("cl", "plus", post(b"Content-Length: +5\r\n", b"hello"), REJECT)
add("cl", "minus", post(b"Content-Length: -1\r\n", b"hello"), REJECT)
add("cl", "minus-zero", post(b"Content-Length: -0\r\n", b""), REJECT)
add("cl", "hex", post(b"Content-Length: 0x5\r\n", b"hello"), REJECT)
add("cl", "two-numbers", post(b"Content-Length: 5 5\r\n", b"hello"), REJECT)
add("cl", "empty", post(b"Content-Length:\r\n", b"hello"), REJECT)
add("cl", "decimal", post(b"Content-Length: 5.0\r\n", b"hello"), REJECT)
add("cl", "exponent", post(b"Content-Length: 5e0\r\n", b"hello"), REJECT)
add(
    "cl",
    "huge",
    post(b"Content-Length: 99999999999999999999\r\n", b"hello"),
    ((400, 413),),
    why="20 digits overflow 64 bits",
)
add(
    "cl",
    "over-limit",
    post(b"Content-Length: 1099511627776\r\n", b"hello"),
    (413,),
    why="1 TiB, above the 1 GiB default --limit-request-body",
)
add("cl", "unicode-digit", post(b"Content-Length: \xd9\xa5\r\n", b"hello"), REJECT)
add("cl", "space-before-colon", post(b"Content-Length : 5\r\n", b"hello"), REJECT)
add("cl", "nul-after", post(b"Content-Length: 5\x00\r\n", b"hello"), REJECT)
add("cl", "vertical-tab", post(b"Content-Length:\x0b5\r\n", b"hello"), REJECT)
add("cl", "obs-fold", post(b"Content-Length:\r\n 5\r\n", b"hello"), REJECT)

# -- chunk-size and chunk-ext tricks (RFC 9112 7.1) ----------------------------------------
add("chunk", "0x-prefix", chunked(b"", b"0x5\r\nhello\r\n0\r\n\r\n"), REJECT)
add("chunk", "leading-space", chunked(b"", b" 5\r\nhello\r\n0\r\n\r\n"), REJECT)
add(
    "chunk",
    "trailing-space",
    chunked(b"", b"5 \r\nhello\r\n0\r\n\r\n"),
    REJECT,
    why="BWS is allowed only before a ';'",
)
add("chunk", "huge-hex", chunked(b"", b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"), ((400, 413),))
add(
    "chunk",
    "wraps-to-five",
    chunked(b"", b"10000000000000005\r\nhello\r\n0\r\n\r\n"),
    ((400, 413),),
    why="17 digits: a parser keeping 64 bits would read 5",
)
add("chunk", "over-limit", chunked(b"", b"40000001\r\nhello\r\n0\r\n\r\n"), ((400, 413),))
add("chunk", "negative", chunked(b"", b"-5\r\nhello\r\n0\r\n\r\n"), REJECT)
add("chunk", "plus", chunked(b"", b"+5\r\nhello\r\n0\r\n\r\n"), REJECT)
add("chunk", "underscore", chunked(b"", b"0_5\r\nhello\r\n0\r\n\r\n"), REJECT)
add("chunk", "empty-size", chunked(b"", b"\r\nhello\r\n0\r\n\r\n"), REJECT)
add("chunk", "bare-semicolon", chunked(b"", b"5;\r\nhello\r\n0\r\n\r\n"), REJECT)
add("chunk", "ext-no-name", chunked(b"", b"5;=x\r\nhello\r\n0\r\n\r\n"), REJECT)
add("chunk", "ext-empty-value", chunked(b"", b"5;a=\r\nhello\r\n0\r\n\r\n"), REJECT)
add("chunk", "ext-open-quote", chunked(b"", b'5;a="x\r\nhello\r\n0\r\n\r\n'), REJECT)
add("chunk", "ext-bare-lf", chunked(b"", b"5;a\nb\r\nhello\r\n0\r\n\r\n"), REJECT)
add("chunk", "ext-bare-cr", chunked(b"", b"5;a\rb\r\nhello\r\n0\r\n\r\n"), REJECT)
add("chunk", "ext-nul", chunked(b"", b"5;a\x00\r\nhello\r\n0\r\n\r\n"), REJECT)
add("chunk", "ext-oversized", chunked(b"", b"5;" + b"a" * 5000 + b"\r\nhello\r\n0\r\n\r\n"), REJECT)
add("chunk", "no-crlf-after-data", chunked(b"", b"5\r\nhelloXX0\r\n\r\n"), REJECT)
add("chunk", "data-longer-than-size", chunked(b"", b"3\r\nhello\r\n0\r\n\r\n"), REJECT)
add("chunk", "lf-only", chunked(b"", b"5\nhello\n0\n\n"), REJECT)
add("chunk", "lf-after-data", chunked(b"", b"5\r\nhello\n0\r\n\r\n"), REJECT)
add("chunk", "cr-after-size", chunked(b"", b"5\rhello\r\n0\r\n\r\n"), REJECT)
add(
    "chunk",
    "last-chunk-then-request",
    chunked(b"", b"5\r\nhello\r\n0\r\n" + SMUGGLE),
    REJECT,
    why="without the empty line, the request after the last chunk is a (bad) trailer section",
)
add(
    "chunk",
    "last-chunk-ext-then-next",
    chunked(b"", b"5\r\nhello\r\n0;e\r\n\r\n") + NEXT,
    (200, 200),
    b"hello",
)
add("chunk", "trailer-obs-fold", chunked(b"", b"5\r\nhello\r\n0\r\nX: a\r\n b\r\n\r\n"), REJECT)
add("chunk", "trailer-nul", chunked(b"", b"5\r\nhello\r\n0\r\nX: a\x00\r\n\r\n"), REJECT)
add("chunk", "trailer-bare-lf", chunked(b"", b"5\r\nhello\r\n0\r\nX: a\n\r\n"), REJECT)
add("chunk", "trailer-no-colon", chunked(b"", b"5\r\nhello\r\n0\r\nXYZ\r\n\r\n"), REJECT)

# -- bare CR and LF, NUL and other control bytes in the head ------------------------------
add(
    "ctl",
    "lf-only-head",
    b"GET /wsgi/echo HTTP/1.1\nHost: t\n\n",
    REJECT,
    why="brick reads only CRLF line ends (RFC 9112 2.2 allows refusing bare LF)",
)
add("ctl", "lf-in-fields", get(b"X-A: a\nX-B: b\r\n"), REJECT)
add("ctl", "lf-before-request", b"\n" + get(), REJECT)
add("ctl", "cr-in-value", get(b"X-A: a\rb\r\n"), REJECT, why="RFC 9112 2.2: bare CR: reject")
add("ctl", "cr-in-request-line", b"GET /wsgi/echo\r HTTP/1.1\r\n" + H + b"\r\n", REJECT)
add("ctl", "cr-line-end", b"GET /wsgi/echo HTTP/1.1\rHost: t\r\r", REJECT)
add("ctl", "nul-in-value", get(b"X-A: a\x00b\r\n"), REJECT)
add("ctl", "nul-in-name", get(b"X-\x00A: b\r\n"), REJECT)
add("ctl", "nul-in-target", get(target=b"/wsgi/echo\x00x"), REJECT)
add("ctl", "nul-in-method", b"GE\x00T /wsgi/echo HTTP/1.1\r\n" + H + b"\r\n", REJECT)
add("ctl", "del-in-value", get(b"X-A: a\x7fb\r\n"), REJECT)
add("ctl", "soh-in-value", get(b"X-A: a\x01b\r\n"), REJECT)
add("ctl", "escape-in-value", get(b"X-A: \x1b[31mred\r\n"), REJECT)
add("ctl", "high-byte-in-target", get(target=b"/wsgi/echo\xff"), REJECT)
add("ctl", "high-byte-in-name", get(b"X-\xe9: v\r\n"), REJECT)

# -- obs-fold and whitespace at line starts (RFC 9112 5.2, 2.2) ----------------------------
add("fold", "space", get(b"X-A: a\r\n b\r\n"), REJECT)
add("fold", "tab", get(b"X-A: a\r\n\tb\r\n"), REJECT)
add("fold", "first-field-indented", b"GET /wsgi/echo HTTP/1.1\r\n Host: t\r\n\r\n", REJECT)
add("fold", "host-folded", b"GET /wsgi/echo HTTP/1.1\r\nHost:\r\n t\r\n\r\n", REJECT)

# -- field names ----------------------------------------------------------------------------
add("name", "host-space-before-colon", b"GET /wsgi/echo HTTP/1.1\r\nHost : t\r\n\r\n", REJECT)
add("name", "empty", get(b": v\r\n"), REJECT)
add("name", "no-colon", get(b"Foo\r\n"), REJECT)
add("name", "slash", get(b"X/Y: v\r\n"), REJECT)
add("name", "space-inside", get(b"X Y: v\r\n"), REJECT)
add("name", "quoted", get(b'"X": v\r\n'), REJECT)

# -- size limits (defaults: gunicorn's) -------------------------------------------------------
add("limit", "request-line-over", line(4095), (414,))
add("limit", "request-line-huge", line(70000), (414,))
add("limit", "field-over", field(8191), (431,))
add("limit", "fields-over", fields(101), (431,))
add(
    "limit",
    "head-huge",
    get(b"".join(b"X-F%d: %s\r\n" % (i, b"a" * 8000) for i in range(200))),
    (431,),
)

# -- request line and target ---------------------------------------------------------------
add("line", "http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", ((400, 505),))
add("line", "tls-client-hello", TLS_HELLO, REJECT, why="TLS spoken to the plain port")
add("line", "tls-client-hello-no-lf", TLS_HELLO_NO_LF, REJECT)
add(
    "line",
    "http09",
    b"GET /wsgi/echo\r\n",
    REJECT,
    why="an HTTP/0.9 request never ends its head: refuse it at the first line, not at a timeout",
)
add("line", "http09-blank-line", b"GET /wsgi/echo\r\n\r\n", REJECT)
add("line", "ssh-banner", b"SSH-2.0-OpenSSH_9.6\r\n", REJECT)
add("line", "proxy-protocol-v1", b"PROXY TCP4 192.0.2.1 192.0.2.2 4000 80\r\n" + get(), REJECT)
add("line", "binary-garbage", bytes(range(0x80, 0x100)) + b"\r\n\r\n", REJECT)
add("line", "version-lowercase", get(version=b"http/1.1"), REJECT)
add(
    "line",
    "version-1.2",
    get(version=b"HTTP/1.2"),
    ((200, 505),),
    why="a higher minor version may be served as 1.1",
)
add("line", "version-2.0", get(version=b"HTTP/2.0"), (505,))
add("line", "version-0.9", get(version=b"HTTP/0.9"), ((400, 505),))
add("line", "version-1.10", get(version=b"HTTP/1.10"), REJECT)
add("line", "version-leading-zero", get(version=b"HTTP/01.1"), REJECT)
add("line", "version-missing-minor", get(version=b"HTTP/1"), REJECT)
add("line", "double-space", b"GET  /wsgi/echo HTTP/1.1\r\n" + H + b"\r\n", REJECT)
add("line", "trailing-space", b"GET /wsgi/echo HTTP/1.1 \r\n" + H + b"\r\n", REJECT)
add("line", "leading-space", b" GET /wsgi/echo HTTP/1.1\r\n" + H + b"\r\n", REJECT)
add("line", "tab-separator", b"GET\t/wsgi/echo HTTP/1.1\r\n" + H + b"\r\n", REJECT)
add("line", "space-in-target", get(target=b"/wsgi/echo a"), REJECT)
add("line", "tab-in-target", get(target=b"/wsgi/echo\ta"), REJECT)
add("line", "method-bad-char", b"G@T /wsgi/echo HTTP/1.1\r\n" + H + b"\r\n", REJECT)
add("line", "method-empty", b" /wsgi/echo HTTP/1.1\r\n" + H + b"\r\n", REJECT)
add("target", "relative", get(target=b"echo"), REJECT)
add("target", "asterisk-get", get(target=b"*"), REJECT)
add("target", "connect", b"CONNECT t:443 HTTP/1.1\r\nHost: t:443\r\n\r\n", ((400, 405, 501),))
add("target", "absolute-ftp", get(target=b"ftp://t/wsgi/echo"), REJECT)
add("target", "absolute-file", get(target=b"file:///etc/passwd"), REJECT)
add("target", "absolute-gopher", get(target=b"gopher://t/wsgi/echo"), REJECT)
add("target", "absolute-javascript", get(target=b"javascript:alert(1)"), REJECT)
add(
    "target",
    "absolute-userinfo",
    get(target=b"http://u:p@t/wsgi/echo"),
    REJECT,
    why="RFC 9110 4.2.4: userinfo in an http URI is an error",
)
add("target", "absolute-no-authority", get(target=b"http:///echo"), REJECT)
add("target", "host-userinfo", b"GET /wsgi/echo HTTP/1.1\r\nHost: u@t\r\n\r\n", REJECT)
add("target", "host-space", b"GET /wsgi/echo HTTP/1.1\r\nHost: t t\r\n\r\n", REJECT)
add("target", "host-duplicate", get(b"Host: u\r\n"), REJECT)
add("target", "host-missing", b"GET /wsgi/echo HTTP/1.1\r\n\r\n", REJECT)

# -- what follows a refusal is never read as a request --------------------------------------
add("pipeline", "bad-then-smuggle", get(b"X-A: \x00\r\n") + SMUGGLE, REJECT)
add("pipeline", "good-bad-smuggle", get() + get(b"X-A: \x00\r\n") + SMUGGLE, (200, 400), b"")
add(
    "pipeline",
    "expect-unknown",
    post(b"Expect: teapot\r\nContent-Length: 5\r\n", b"hello") + SMUGGLE,
    (417,),
    why="RFC 9110 10.1.1: an expectation the server cannot meet: 417",
)
add(
    "pipeline",
    "over-limit-then-smuggle",
    post(b"Content-Length: 1099511627776\r\n", SMUGGLE),
    (413,),
)
add("pipeline", "huge-field-then-smuggle", field(9000) + SMUGGLE, (431,))


def by_name() -> dict[str, Case]:
    return {f"{c.group}/{c.name}": c for c in CASES}
