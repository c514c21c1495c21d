"""HTTP/1.1 request parsing, with no I/O (RFC 9112).

Theory of operation
-------------------
The parser owns a byte buffer. The connection `feed`s it whatever the socket gave and
pulls events with `next_event`:

    Request      the head of a request is complete and valid; body framing is decided
    bytes        a piece of the request body (already de-chunked)
    END          the request's message is complete (trailers read and discarded)
    NEED_DATA    nothing more can be parsed until more bytes are fed

Any violation raises an `HTTPError` carrying the status to answer with. After that the
parser is dead: no byte after a rejected request is ever parsed as another request
(request smuggling lives in exactly that gap).

Speed: a head that arrives whole is located with one `find(b"\\r\\n\\r\\n")`, checked for
forbidden bytes with one `translate` call, then split into lines. Header names seen before
are looked up in a cache instead of being re-validated (DESIGN.md §4).

One answer however the bytes arrive: a head that arrives in pieces is checked line by line
as the lines complete, so a hopeless head (TLS bytes, a NUL, an endless line) is refused
without waiting for a blank line that may never come. Every rule is tied to the byte that
breaks it, and when a whole head breaks several, `_check_lines` replays the same per-line
rules in stream order to name the first, so a request fed whole, split at every byte or in
random chunks gets the same status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

from brick.errors import (
    BadRequest,
    ContentTooLarge,
    HeaderFieldsTooLarge,
    HTTPError,
    NotImplementedCoding,
    URITooLong,
    VersionNotSupported,
)

# Defaults match gunicorn's, so a gunicorn deployment sees the same limits.
DEFAULT_MAX_REQUEST_LINE: Final = 4094  # gunicorn --limit-request-line
DEFAULT_MAX_HEADER_COUNT: Final = 100  # gunicorn --limit-request-fields
DEFAULT_MAX_FIELD_SIZE: Final = 8190  # gunicorn --limit-request-field_size
DEFAULT_MAX_BODY: Final = 1 << 30  # 1 GiB; bodies above the spool threshold go to disk
MAX_CHUNK_LINE: Final = 4096  # a chunk-size line with extensions; more is abuse
MAX_CHUNK_SIZE_DIGITS: Final = 16  # 16 hex digits already exceed any real body
# RFC 9112 §2.2 asks servers to ignore "at least one" empty line before a request line
# (old clients sent CRLF after a POST body). A few are tolerated; an endless stream of
# them would otherwise hold a connection open without ever sending a request.
MAX_BLANK_LINES: Final = 8


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA: Final = _Marker("NEED_DATA")
END: Final = _Marker("END")


@dataclass(slots=True, frozen=True)
class Limits:
    """Per-parser limits; the connection builds one from the Config."""

    max_request_line: int = DEFAULT_MAX_REQUEST_LINE
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT
    max_field_size: int = DEFAULT_MAX_FIELD_SIZE
    max_body: int = DEFAULT_MAX_BODY

    @property
    def max_head(self) -> int:
        """The largest head the per-line limits allow (request line, fields, CRLFs)."""
        return self.max_request_line + 2 + self.max_header_count * (self.max_field_size + 2) + 2


@dataclass(slots=True)
class Request:
    """A parsed request head. Strings are latin-1 decodings of the bytes on the wire."""

    method: str
    target: str  # as sent, undecoded (RAW_URI)
    path: str  # the path part of the target, undecoded
    query: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    host: str | None = None
    content_length: int | None = None  # body length when framed by Content-Length
    chunked: bool = False
    keep_alive: bool = True
    expect_continue: bool = False
    scheme: str | None = None  # from an absolute-form target
    # Kept in the head cache: this same object comes back whenever the head does.
    cached: bool = field(default=False, compare=False, repr=False)

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


# RFC 9110 §5.6.2: token characters.
_TCHAR: Final = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Bytes allowed inside a head line: visible ASCII, SP, HTAB and obs-text (RFC 9110 §5.5).
# NUL, the other controls and DEL are refused; CR and LF only ever end a line, as a pair.
_LINE_BYTES: Final = bytes(range(0x20, 0x7F)) + b"\t" + bytes(range(0x80, 0x100))
_LINE_SET: Final = frozenset(_LINE_BYTES)
_HEAD_BYTES: Final = _LINE_BYTES + b"\r\n"
# Request-target bytes: visible ASCII only (RFC 3986 characters, leniently).
_TARGET_BYTES: Final = bytes(range(0x21, 0x7F))
# RFC 3986 §3.2.2-3.2.3: host (reg-name, IP literal, IPv4) and port, percent-encoding allowed.
# No "@" (userinfo), "/", "?", "#", "\" or spaces: a Host is never part of a path.
_HOST_BYTES: Final = (
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:[]%"
)
_VERSION_RE: Final = re.compile(rb"HTTP/[0-9]\.[0-9]")
_TOKEN_RE: Final = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED_RE: Final = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
# RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
_CHUNK_EXT_RE: Final = re.compile(
    rb"(?:[ \t]*;[ \t]*"
    + _TOKEN_RE
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN_RE
    + rb"|"
    + _QUOTED_RE
    + rb"))?)*"
)
_HEX: Final = b"0123456789abcdefABCDEF"
_KNOWN_CODINGS: Final = frozenset({b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress"})

# What the parser does with a header field, by lower-cased name. Anything else is _PLAIN.
_PLAIN, _DROP, _HOST, _CONTENT_LENGTH, _TRANSFER_ENCODING, _CONNECTION, _EXPECT = range(7)
_FRAMING: Final = {
    b"host": _HOST,
    b"content-length": _CONTENT_LENGTH,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"connection": _CONNECTION,
    b"expect": _EXPECT,
}
# Header name (as sent) -> what to do with it, for names already checked to be tokens.
_NAME_CACHE: dict[bytes, int] = {}
_NAME_CACHE_MAX: Final = 512
# Request line -> its parsed parts. Parsing a line is a pure function of its bytes, and
# most traffic repeats a few lines (health checks, hot endpoints), so they are parsed once.
_LINE_CACHE: dict[bytes, tuple[str, str, str, str, str, bool, str | None, str | None]] = {}
_LINE_CACHE_MAX: Final = 256
# A whole head (through its blank line) -> its Request, for heads that announce no body.
# Clients and proxies repeat heads byte for byte (health checks, load balancers, polling
# clients, one browser's subresource requests), and a head's meaning is a pure function of
# its bytes and the limits, so a head seen before is served without parsing it again. The
# Request is shared between hits: nothing changes a Request once the parser returns it.
# One cache per set of head limits: other limits may judge the same bytes differently.
_HEAD_CACHES: dict[tuple[int, int, int], dict[bytes, Request]] = {}
_last_cache: tuple[Any, Any] = (None, None)  # the Limits asked for last, and its cache
_HEAD_CACHE_MAX: Final = 256
_HEAD_CACHE_KEY_MAX: Final = 2048  # bigger heads (cookies) rarely repeat: not worth keeping
_METHODS: set[bytes] = {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"}

_HEAD, _LENGTH_BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _END_PENDING, _DEAD = range(8)


def _head_cache(limits: Limits) -> dict[bytes, Request]:
    key = (limits.max_request_line, limits.max_header_count, limits.max_field_size)
    cache = _HEAD_CACHES.get(key)
    if cache is None:
        cache = _HEAD_CACHES[key] = {}
    global _last_cache
    _last_cache = (limits, cache)
    return cache


def _is_token(value: bytes) -> bool:
    return bool(value) and not value.translate(None, _TCHAR)


def _first_bad_byte(seg: bytes, complete: bool) -> int:
    """Where a line first breaks the byte rules: the offset at which it becomes certain.

    A forbidden byte is certain where it stands; a CR only once the byte after it is
    known not to be its LF (or, in a complete line, anywhere: the line's own CRLF is not
    part of `seg`). Returns -1 if the line is clean so far.
    """
    last = len(seg) - 1
    for offset, byte in enumerate(seg):
        if byte == 0x0D:
            if offset < last or complete:
                return offset + 1
        elif byte not in _LINE_SET:
            return offset
    return -1


class RequestParser:
    """Turns a stream of bytes into requests and body pieces. One per connection."""

    __slots__ = (
        "_blank",
        "_cache",
        "_chunk_left",
        "_left",
        "_lines",
        "_scan",
        "_state",
        "_total",
        "buf",
        "limits",
    )

    def __init__(self, limits: Limits | None = None) -> None:
        if limits is None:
            limits = Limits()
        self.limits = limits
        # One parser per connection, nearly always with the worker's one Limits (frozen):
        # the cache found for it last time is still its cache.
        last = _last_cache
        self._cache = last[1] if last[0] is limits else _head_cache(limits)
        # Bytes received but not parsed yet (e.g. a pipelined next request). Others read
        # it (its length is `buffered`) but only `feed` adds to it.
        self.buf = bytearray()
        self._state = _HEAD
        # Set when a body begins, never read before (most connections never see one):
        # _left, body bytes still expected (Content-Length); _total, de-chunked body bytes
        # so far; _chunk_left, bytes left in the current chunk.
        self._scan = 0  # bytes of an incomplete head or trailer section already checked
        self._lines = 0  # complete lines in those bytes (the request line is line 0)
        self._blank = 0  # empty lines skipped before the current request line

    # -- input -------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._state != _DEAD:  # a dead parser keeps nothing
            self.buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not parsed yet (e.g. a pipelined next request)."""
        return len(self.buf)

    @property
    def at_message_start(self) -> bool:
        """True between messages: a new request head is what comes next."""
        return self._state == _HEAD

    def cached_head(self, data: bytes) -> Request | None:
        """`data` is exactly a body-less head parsed before, arriving between messages:
        its Request, the message complete, with no parsing. None otherwise (feed the bytes)."""
        if self.buf or self._state != _HEAD:
            return None
        return self._cache.get(data)

    def take_cached_head(self) -> Request | None:
        """What is buffered is exactly one body-less head parsed before (the next keep-alive
        request, read ahead while an app thread ran): its Request, taken from the buffer as
        `cached_head` would take it. None otherwise (the buffer is left as it is)."""
        buf = self.buf
        if self._state != _HEAD or not buf or len(buf) >= _HEAD_CACHE_KEY_MAX:
            return None
        request = self._cache.get(bytes(buf))
        if request is not None:
            buf.clear()
        return request

    # -- events ------------------------------------------------------------------------

    def next_event(self) -> Request | bytes | _Marker:
        try:
            state = self._state
            if state == _HEAD:
                return self._parse_head()
            if state == _LENGTH_BODY:
                return self._length_body()
            if state == _END_PENDING:
                self._state = _HEAD
                return END
            if state == _DEAD:
                raise BadRequest("connection unusable after an earlier error")
            return self._chunked_body()
        except HTTPError:
            self._state = _DEAD
            self.buf.clear()
            raise

    # -- the head (RFC 9112 §2-§5) -------------------------------------------------------

    def _parse_head(self) -> Request | _Marker:
        buf = self.buf
        if not buf:
            return NEED_DATA  # the common case between keep-alive requests
        if buf[:2] == b"\r\n":
            self._skip_blank_lines()
        scan = self._scan
        end = buf.find(b"\r\n\r\n", scan - 2 if scan else 0)
        if end < 0:
            self._check_partial()
            return NEED_DATA
        keep = end < _HEAD_CACHE_KEY_MAX  # only heads this small are ever kept
        # The head's bytes; for a head that may be kept, with its blank line (the cache key).
        raw = bytes(buf[: end + 4] if keep else buf[:end])
        del buf[: end + 4]
        self._scan = self._lines = self._blank = 0
        cache = self._cache
        if keep:
            request = cache.get(raw)
            if request is not None:
                # Seen before, read ahead or pipelined behind another request (the usual
                # keep-alive one goes through `cached_head`): only body-less heads are kept.
                self._state = _END_PENDING
                return request
        head = raw[:-4] if keep else raw
        try:
            request = self._parse_whole_head(head)
        except HTTPError:
            # Several rules may be broken: name the first in stream order, as a head fed
            # piece by piece would have (module docstring).
            self._check_lines(head.split(b"\r\n"), 0)
            raise
        if self._state == _END_PENDING and keep:
            if len(cache) >= _HEAD_CACHE_MAX:
                cache.clear()
            if cache.setdefault(raw, request) is request:
                request.cached = True
        return request

    def _skip_blank_lines(self) -> None:
        # RFC 9112 §2.2: ignore empty lines received before the request-line.
        buf = self.buf
        while buf[:2] == b"\r\n":
            del buf[:2]
            self._blank += 1
            if self._blank > MAX_BLANK_LINES:
                raise BadRequest("too many empty lines before the request line")

    def _parse_whole_head(self, head: bytes) -> Request:
        """The fast path: a complete head, checked with whole-buffer operations."""
        if head.translate(None, _HEAD_BYTES):
            raise BadRequest("forbidden control character in request head")
        crlf = head.count(b"\r\n")
        if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
            raise BadRequest("bare CR or LF in request head")
        lines = head.split(b"\r\n")
        request = self._parse_request_line(lines[0])
        if len(lines) - 1 > self.limits.max_header_count:
            raise HeaderFieldsTooLarge("too many header fields")
        self._state = _END_PENDING  # unless the fields announce a body
        try:
            self._parse_fields(request, lines)
        except HTTPError as exc:
            exc.method = request.method  # a refused HEAD must get no body
            raise
        return request

    def _check_partial(self) -> None:
        """Check the lines of an incomplete head or trailer section as they complete."""
        buf = self.buf
        pos = self._scan
        eol = buf.find(b"\r\n", pos)
        while eol >= 0:
            self._check_line(bytes(buf[pos:eol]), self._lines, True)
            self._lines += 1
            pos = eol + 2
            eol = buf.find(b"\r\n", pos)
        self._scan = pos
        if pos < len(buf):
            self._check_line(bytes(buf[pos:]), self._lines, False)

    def _check_lines(self, lines: list[bytes], first: int) -> None:
        for index, line in enumerate(lines, first):
            self._check_line(line, index, True)

    def _check_line(self, seg: bytes, index: int, complete: bool) -> None:
        """The per-line rules, in the order their breaking bytes arrive.

        `seg` is line `index` of a head (0 is the request line) or trailer section,
        without its CRLF; if not `complete`, only the line's first bytes.
        """
        limits = self.limits
        content = seg[:-1] if not complete and seg[-1:] == b"\r" else seg
        bad = _first_bad_byte(seg, complete) if content.translate(None, _LINE_BYTES) else -1
        limit = limits.max_request_line if index == 0 else limits.max_field_size
        if bad >= 0 and (bad <= limit or len(content) <= limit):
            raise BadRequest("forbidden character, or bare CR or LF, in request head")
        if len(content) > limit:
            if index == 0:
                raise URITooLong("request line too long")
            raise HeaderFieldsTooLarge("header field too large")
        if not complete:
            return
        if index == 0:
            self._parse_request_line(seg)
            return
        if index > limits.max_header_count:
            raise HeaderFieldsTooLarge("too many header fields")
        colon = seg.find(b":")
        if colon <= 0 or not _is_token(seg[:colon]):
            if seg[:1] in (b" ", b"\t"):
                raise BadRequest("obsolete line folding")
            raise BadRequest("invalid header field name")

    def _parse_request_line(self, line: bytes) -> Request:
        # RFC 9112 §3: request-line = method SP request-target SP HTTP-version
        if len(line) > self.limits.max_request_line:
            raise URITooLong("request line too long")
        cached = _LINE_CACHE.get(line)
        if cached is not None:
            method_s, target_s, path_s, query_s, version_s, keep, host_s, scheme_s = cached
            return Request(
                method=method_s,
                target=target_s,
                path=path_s,
                query=query_s,
                version=version_s,
                keep_alive=keep,
                host=host_s,
                scheme=scheme_s,
            )
        request = self._parse_new_request_line(line)
        if len(_LINE_CACHE) >= _LINE_CACHE_MAX:
            _LINE_CACHE.clear()
        _LINE_CACHE[line] = (
            request.method,
            request.target,
            request.path,
            request.query,
            request.version,
            request.keep_alive,
            request.host,
            request.scheme,
        )
        return request

    def _parse_new_request_line(self, line: bytes) -> Request:
        parts = line.split(b" ")
        if len(parts) != 3:
            raise BadRequest("malformed request line")
        method, target, version = parts
        if method not in _METHODS:
            if not _is_token(method):
                raise BadRequest("invalid method")
            if len(_METHODS) < 64:
                _METHODS.add(method)
        if version == b"HTTP/1.1":
            version_str = "HTTP/1.1"
            keep_alive = True
        elif version == b"HTTP/1.0":
            version_str = "HTTP/1.0"
            keep_alive = False
        elif _VERSION_RE.fullmatch(version) is None:
            raise BadRequest("malformed HTTP version")
        elif version[5] == 0x31:  # "1"
            # RFC 9110 §2.5: a higher minor version of a major version we implement is
            # processed as the highest minor version we know.
            version_str = "HTTP/1.1"
            keep_alive = True
        else:
            raise VersionNotSupported(f"unsupported version {version.decode('latin-1')}")
        if not target or target.translate(None, _TARGET_BYTES):
            raise BadRequest("invalid character in request target")

        method_str = method.decode("latin-1")
        scheme = None
        authority = None
        # RFC 9112 §3.2: the four forms of request-target.
        if target[0] == 0x2F:  # "/": origin-form
            raw = target
        elif target == b"*":
            if method != b"OPTIONS":
                raise BadRequest("asterisk-form is only for OPTIONS")
            raw = target
        elif method == b"CONNECT":
            raise NotImplementedCoding("CONNECT is not supported")
        else:
            scheme_end = target.find(b"://")
            scheme_b = target[:scheme_end].lower() if scheme_end > 0 else b""
            if scheme_b not in (b"http", b"https"):
                raise BadRequest("invalid request target")
            rest = target[scheme_end + 3 :]
            slash = rest.find(b"/")
            query_mark = rest.find(b"?")
            cut = min(i for i in (slash, query_mark, len(rest)) if i >= 0)
            authority = rest[:cut]
            if not authority or authority.translate(None, _HOST_BYTES):
                raise BadRequest("invalid authority in absolute-form target")
            raw = rest[cut:] or b"/"
            if raw[0] == 0x3F:  # "?" directly after the authority
                raw = b"/" + raw
            scheme = scheme_b.decode("latin-1")
        path, _, query = raw.partition(b"?")
        return Request(
            method=method_str,
            target=target.decode("latin-1"),
            path=path.decode("latin-1"),
            query=query.decode("latin-1"),
            version=version_str,
            keep_alive=keep_alive,
            host=authority.decode("latin-1") if authority is not None else None,
            scheme=scheme,
        )

    def _parse_fields(self, request: Request, lines: list[bytes]) -> None:
        max_field = self.limits.max_field_size
        headers = request.headers
        append = headers.append
        host: bytes | None = None
        content_length: bytes | None = None
        codings: list[bytes] | None = None
        connection: list[bytes] | None = None
        expect: bytes | None = None
        cache = _NAME_CACHE
        for i in range(1, len(lines)):
            line = lines[i]
            if len(line) > max_field:
                raise HeaderFieldsTooLarge("header field too large")
            colon = line.find(b":")
            name = line[:colon] if colon > 0 else b""
            kind = cache.get(name)
            if kind is None:
                kind = self._classify(line, name)
            if kind == _DROP:
                continue  # never let Foo_Bar pose as Foo-Bar in the environ
            value = line[colon + 1 :].strip(b" \t")
            append((name, value))
            if kind == _PLAIN:
                continue
            if kind == _HOST:
                if host is not None:
                    raise BadRequest("repeated Host header")
                host = value
            elif kind == _CONTENT_LENGTH:
                # Even an identical repeat is refused: one framing, stated once.
                if content_length is not None:
                    raise BadRequest("repeated Content-Length")
                content_length = value
            elif kind == _TRANSFER_ENCODING:
                codings = (codings or []) + value.split(b",")
            elif kind == _CONNECTION:
                connection = (connection or []) + value.lower().split(b",")
            else:
                expect = value.lower()

        version = request.version
        if host is not None:
            # RFC 9112 §3.2: a valid Host is required even when an absolute-form target
            # names the authority, which then wins (§3.2.2).
            if host.translate(None, _HOST_BYTES):
                raise BadRequest("invalid Host header")
            if request.host is None:
                request.host = host.decode("latin-1")
        elif version == "HTTP/1.1":
            raise BadRequest("missing Host header")

        if connection:
            tokens = {t.strip(b" \t") for t in connection}
            if b"close" in tokens:
                request.keep_alive = False
            elif b"keep-alive" in tokens and version == "HTTP/1.0":
                request.keep_alive = True

        # RFC 9112 §6.3: how long is the body?
        if codings:
            if version != "HTTP/1.1":
                raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
            if content_length is not None:
                raise BadRequest("both Transfer-Encoding and Content-Length")
            self._parse_codings(codings)
            request.chunked = True
            self._state = _CHUNK_SIZE
            self._total = 0
        elif content_length is not None:
            if not content_length.isdigit():
                raise BadRequest("invalid Content-Length")
            digits = content_length.lstrip(b"0")
            if len(digits) > 20:  # certainly over the limit, and int() need not see it
                raise ContentTooLarge("request body too large")
            length = int(digits or b"0")
            if length > self.limits.max_body:
                raise ContentTooLarge("request body too large")
            request.content_length = length
            if not length:
                return
            self._left = length
            self._state = _LENGTH_BODY
        else:
            return  # no body: END comes next

        # RFC 9110 §10.1.1: only a request with a body waits for 100 Continue, and an
        # HTTP/1.0 client never does.
        if expect is not None and version == "HTTP/1.1":
            if expect != b"100-continue":
                raise HTTPError("unsupported expectation", status=417)
            request.expect_continue = True

    @staticmethod
    def _classify(line: bytes, name: bytes) -> int:
        """Check a header name not seen before and say what to do with it."""
        # RFC 9112 §5.1: no whitespace between name and colon; obs-fold lines
        # (starting with SP/HTAB) fail here too (§5.2: reject).
        if not _is_token(name):
            if line[:1] in (b" ", b"\t"):
                raise BadRequest("obsolete line folding")
            raise BadRequest("invalid header field name")
        lname = name.lower()
        kind = _DROP if b"_" in lname else _FRAMING.get(lname, _PLAIN)
        if len(_NAME_CACHE) < _NAME_CACHE_MAX:
            _NAME_CACHE[name] = kind
        return kind

    @staticmethod
    def _parse_codings(codings: list[bytes]) -> None:
        # RFC 9112 §6.1, §6.3: chunked must be the final coding, applied once (else 400);
        # we decode no other (a coding we do not implement is 501, RFC 9112 §6.1).
        names = [c.strip(b" \t").lower() for c in codings]
        if any(not _is_token(n) for n in names):
            raise BadRequest("invalid Transfer-Encoding")
        if names[-1] != b"chunked":
            raise BadRequest("chunked is not the final transfer coding")
        if names.count(b"chunked") > 1:
            raise BadRequest("chunked applied more than once")
        if len(names) > 1:
            other = names[0]
            known = other in _KNOWN_CODINGS
            raise NotImplementedCoding(
                f"transfer coding {other.decode('latin-1')} "
                + ("is not supported" if known else "is unknown")
            )

    # -- the body (RFC 9112 §6, §7) ------------------------------------------------------

    def _take(self, limit: int) -> bytes:
        """Up to `limit` buffered body bytes (the buffer is not empty)."""
        buf = self.buf
        if len(buf) <= limit:
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:limit])
            del buf[:limit]
        return data

    def _length_body(self) -> bytes | _Marker:
        if not self.buf:
            return NEED_DATA
        data = self._take(self._left)
        self._left -= len(data)
        if not self._left:
            self._state = _END_PENDING
        return data

    def _chunked_body(self) -> bytes | _Marker:
        buf = self.buf
        state = self._state
        if state == _CHUNK_SIZE:
            eol = buf.find(b"\r\n")
            if eol < 0:
                self._check_partial_chunk_line()
                return NEED_DATA
            if eol > MAX_CHUNK_LINE:
                raise BadRequest("chunk size line too long")
            line = bytes(buf[:eol])
            del buf[: eol + 2]
            # RFC 9112 §7.1: chunk-size [ chunk-ext ] CRLF; BWS only before a ";".
            semi = line.find(b";")
            if semi < 0:
                size_part, ext = line, b""
            else:
                size_part, ext = line[:semi].rstrip(b" \t"), line[semi:]
            if (
                not size_part
                or len(size_part) > MAX_CHUNK_SIZE_DIGITS
                or size_part.translate(None, _HEX)
            ):
                raise BadRequest("invalid chunk size")
            if ext and not _CHUNK_EXT_RE.fullmatch(ext):
                raise BadRequest("invalid chunk extension")
            size = int(size_part, 16)
            if size == 0:
                self._state = _TRAILERS
                self._lines = 1  # trailer lines are field lines
                return self._chunked_body()
            self._total += size
            if self._total > self.limits.max_body:
                raise ContentTooLarge("request body too large")
            self._chunk_left = size
            self._state = _CHUNK_DATA
            return self._chunked_body()
        if state == _CHUNK_DATA:
            if not buf:
                return NEED_DATA
            data = self._take(self._chunk_left)
            self._chunk_left -= len(data)
            if not self._chunk_left:
                self._state = _CHUNK_END
            return data
        if state == _CHUNK_END:
            if len(buf) < 2:
                if buf and buf[0] != 0x0D:
                    raise BadRequest("invalid chunk terminator")
                return NEED_DATA
            if buf[:2] != b"\r\n":
                raise BadRequest("invalid chunk terminator")
            del buf[:2]
            self._state = _CHUNK_SIZE
            return self._chunked_body()
        return self._trailers()

    def _check_partial_chunk_line(self) -> None:
        """Refuse an incomplete chunk-size line as soon as no ending can make it valid."""
        part = bytes(self.buf)
        if part[-1:] == b"\r":
            part = part[:-1]  # may start the line's CRLF
        if len(part) > MAX_CHUNK_LINE:
            raise BadRequest("chunk size line too long")
        digits = len(part) - len(part.lstrip(_HEX))
        if digits > MAX_CHUNK_SIZE_DIGITS:
            raise BadRequest("invalid chunk size")
        if digits < len(part) and (
            not digits or part[digits] not in b" \t;" or b"\r" in part or b"\n" in part
        ):
            raise BadRequest("invalid chunk size line")

    def _trailers(self) -> _Marker:
        # RFC 9112 §7.1.2: trailer fields are read and discarded, never merged into the
        # head (a trailer cannot change framing, Host or anything the app sees).
        buf = self.buf
        if not self._scan and buf[:2] == b"\r\n":
            del buf[:2]
        else:
            scan = self._scan
            end = buf.find(b"\r\n\r\n", scan - 2 if scan else 0)
            if end < 0:
                self._check_partial()
                return NEED_DATA
            section = bytes(buf[:end])
            del buf[: end + 4]
            self._check_lines(section.split(b"\r\n"), 1)
        self._scan = self._lines = 0
        self._state = _HEAD
        return END


class IdleParser(RequestParser):
    """The parser a worker's connections start with, all the same one: it looks requests
    up in the head cache (`cached_head`) and keeps no bytes. Most connections never need
    more (every request a head seen before, or one request and a close); one that has
    bytes to keep (a new head, a body, a pipelined request) makes its own parser first.
    `feed` refuses, so that no bytes can land in the shared one."""

    __slots__ = ("cached_head",)

    def __init__(self, limits: Limits | None = None) -> None:
        super().__init__(limits)
        # Never fed, so always between messages with nothing buffered: `cached_head` is the
        # plain lookup, and as the head cache's own `get`, it runs no Python frame.
        # (The slot stands in for the method, which mypy takes for an error.)
        self.cached_head = self._cache.get  # type: ignore[method-assign,assignment]

    def feed(self, data: bytes) -> None:
        raise RuntimeError("the shared idle parser keeps no bytes: feed the connection's own")
