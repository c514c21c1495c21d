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

Speed: the whole head is located with one `find(b"\\r\\n\\r\\n")`, checked for forbidden
bytes with one `translate` call, then split into lines. Header names seen before are
looked up in a cache instead of being re-validated (DESIGN.md §4).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

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


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA: Final = _Marker("NEED_DATA")
END: Final = _Marker("END")


@dataclass(slots=True)
class Limits:
    """Per-parser limits; the connection builds one from the Config."""

    max_request_line: int = DEFAULT_MAX_REQUEST_LINE
    max_header_count: int = DEFAULT_MAX_HEADER_COUNT
    max_field_size: int = DEFAULT_MAX_FIELD_SIZE
    max_body: int = DEFAULT_MAX_BODY

    @property
    def max_head(self) -> int:
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

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)


# RFC 9110 §5.6.2: token characters.
_TCHAR: Final = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Bytes allowed anywhere in a head: visible ASCII, SP, HTAB, obs-text, and CR/LF as line
# ends (RFC 9110 §5.5). Everything else (NUL, other controls, DEL) is refused.
_HEAD_BYTES: Final = bytes(range(0x20, 0x7F)) + b"\t\r\n" + bytes(range(0x80, 0x100))
# Request-target bytes: visible ASCII only (RFC 3986 characters, leniently).
_TARGET_BYTES: Final = bytes(range(0x21, 0x7F))
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

# Header name (as sent) -> lower-cased name, for names already checked to be tokens.
_NAME_CACHE: dict[bytes, bytes] = {}
_NAME_CACHE_MAX: Final = 512
_METHODS: set[bytes] = {b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"}

_HEAD, _LENGTH_BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _END_PENDING, _DEAD = range(8)


def _is_token(value: bytes) -> bool:
    return bool(value) and not value.translate(None, _TCHAR)


class RequestParser:
    """Turns a stream of bytes into requests and body pieces. One per connection."""

    __slots__ = ("_buf", "_chunk_left", "_left", "_state", "_total", "limits")

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._buf = bytearray()
        self._state = _HEAD
        self._left = 0  # body bytes still expected (Content-Length)
        self._chunk_left = 0  # bytes left in the current chunk
        self._total = 0  # de-chunked body bytes so far

    # -- input -------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not parsed yet (e.g. a pipelined next request)."""
        return len(self._buf)

    @property
    def at_message_start(self) -> bool:
        """True between messages: a new request head is what comes next."""
        return self._state == _HEAD

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
            self._buf.clear()
            raise

    # -- the head (RFC 9112 §2-§5) -------------------------------------------------------

    def _parse_head(self) -> Request | _Marker:
        buf = self._buf
        # RFC 9112 §2.2: ignore empty lines received before the request-line.
        while buf[:2] == b"\r\n":
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self._check_partial_head()
            return NEED_DATA
        head = bytes(buf[:end])
        del buf[: end + 4]

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
        self._parse_fields(request, lines)
        return request

    def _check_partial_head(self) -> None:
        """Refuse an incomplete head as soon as it is certain to be bad."""
        buf = self._buf
        limits = self.limits
        eol = buf.find(b"\r\n")
        line_len = eol if eol >= 0 else len(buf)
        if line_len > limits.max_request_line:
            raise URITooLong("request line too long")
        if buf.count(b"\n") != buf.count(b"\r\n"):
            raise BadRequest("bare LF in request head")
        if len(buf) > limits.max_head:
            raise HeaderFieldsTooLarge("request header section too large")

    def _parse_request_line(self, line: bytes) -> Request:
        # RFC 9112 §3: request-line = method SP request-target SP HTTP-version
        if len(line) > self.limits.max_request_line:
            raise URITooLong("request line too long")
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
        elif _VERSION_RE.fullmatch(version):
            raise VersionNotSupported(f"unsupported version {version.decode('latin-1')}")
        else:
            raise BadRequest("malformed HTTP version")
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
            if not authority or b"@" in authority:
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
        host: bytes | None = None
        host_seen = False
        content_length: bytes | None = None
        codings: list[bytes] = []
        connection: list[bytes] = []
        expect: bytes | None = None
        cache = _NAME_CACHE
        for i in range(1, len(lines)):
            line = lines[i]
            if len(line) > max_field:
                raise HeaderFieldsTooLarge("header field too large")
            colon = line.find(b":")
            name = line[:colon] if colon > 0 else b""
            lname = cache.get(name)
            if lname is None:
                # RFC 9112 §5.1: no whitespace between name and colon; obs-fold lines
                # (starting with SP/HTAB) fail here too (§5.2: reject).
                if not _is_token(name):
                    if line[:1] in (b" ", b"\t"):
                        raise BadRequest("obsolete line folding")
                    raise BadRequest("invalid header field name")
                lname = name.lower()
                if len(cache) < _NAME_CACHE_MAX:
                    cache[name] = lname
            value = line[colon + 1 :].strip(b" \t")
            if b"_" in lname:
                continue  # never let Foo_Bar pose as Foo-Bar in the environ
            headers.append((name, value))
            if lname == b"host":
                if host_seen:
                    raise BadRequest("repeated Host header")
                host_seen = True
                host = value
            elif lname == b"content-length":
                if content_length is not None:
                    raise BadRequest("repeated Content-Length")
                content_length = value
            elif lname == b"transfer-encoding":
                codings.extend(value.split(b","))
            elif lname == b"connection":
                connection.extend(value.lower().split(b","))
            elif lname == b"expect":
                expect = value.lower()

        if host_seen:
            if request.host is None:  # absolute-form authority wins (RFC 9112 §3.2.2)
                request.host = host.decode("latin-1") if host is not None else ""
        elif request.version == "HTTP/1.1":
            raise BadRequest("missing Host header")
        if host is not None and (b" " in host or b"\t" in host or b"@" in host):
            raise BadRequest("invalid Host header")

        if connection:
            tokens = {t.strip() for t in connection}
            if b"close" in tokens:
                request.keep_alive = False
            elif b"keep-alive" in tokens and request.version == "HTTP/1.0":
                request.keep_alive = True

        if codings:
            if request.version != "HTTP/1.1":
                raise BadRequest("Transfer-Encoding in an HTTP/1.0 request")
            if content_length is not None:
                raise BadRequest("both Transfer-Encoding and Content-Length")
            self._parse_codings(codings)
            request.chunked = True
            self._state = _CHUNK_SIZE
            self._total = 0
        elif content_length is not None:
            if not content_length.isdigit() or len(content_length) > 19:
                raise BadRequest("invalid Content-Length")
            length = int(content_length)
            if length > self.limits.max_body:
                raise ContentTooLarge("request body too large")
            request.content_length = length
            if not length:
                return
            self._left = length
            self._state = _LENGTH_BODY
        else:
            return  # no body: END comes next

        if expect is not None and request.version == "HTTP/1.1":
            if expect != b"100-continue":
                raise HTTPError("unsupported expectation", status=417)
            request.expect_continue = True

    @staticmethod
    def _parse_codings(codings: list[bytes]) -> None:
        # RFC 9112 §6.1: chunked must be the final coding, applied once. We decode no other.
        names = [c.strip(b" \t").lower() for c in codings]
        if any(not _is_token(n) for n in names):
            raise BadRequest("invalid Transfer-Encoding")
        if names[-1] != b"chunked":
            raise BadRequest("chunked is not the final transfer coding")
        if names.count(b"chunked") > 1:
            raise BadRequest("chunked applied more than once")
        if len(names) > 1:
            unknown = next(n for n in names[:-1])
            known = unknown in _KNOWN_CODINGS
            raise NotImplementedCoding(
                f"transfer coding {unknown.decode('latin-1')} "
                + ("is not supported" if known else "is unknown")
            )

    # -- the body (RFC 9112 §6, §7) ------------------------------------------------------

    def _length_body(self) -> bytes | _Marker:
        buf = self._buf
        if not buf:
            return NEED_DATA
        take = self._left
        if len(buf) <= take:
            data = bytes(buf)
            buf.clear()
        else:
            data = bytes(buf[:take])
            del buf[:take]
        self._left -= len(data)
        if not self._left:
            self._state = _END_PENDING
        return data

    def _chunked_body(self) -> bytes | _Marker:
        buf = self._buf
        state = self._state
        if state == _CHUNK_SIZE:
            eol = buf.find(b"\r\n")
            if eol < 0:
                if len(buf) > MAX_CHUNK_LINE or b"\n" in buf:
                    raise BadRequest("invalid chunk size line")
                return NEED_DATA
            line = bytes(buf[:eol])
            del buf[: eol + 2]
            semi = line.find(b";")
            size_part = line if semi < 0 else line[:semi]
            ext = b"" if semi < 0 else line[semi:]
            size_part = size_part.rstrip(b" \t") if semi >= 0 else size_part
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
            take = self._chunk_left
            if len(buf) <= take:
                data = bytes(buf)
                buf.clear()
            else:
                data = bytes(buf[:take])
                del buf[:take]
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
        # _TRAILERS (RFC 9112 §7.1.2): read and discard; never merged into the head.
        if buf[:2] == b"\r\n":
            del buf[:2]
            self._state = _HEAD
            return END
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > self.limits.max_head or buf.count(b"\n") != buf.count(b"\r\n"):
                raise BadRequest("invalid or oversized trailer section")
            if len(buf) == 1 and buf[0] != 0x0D:
                raise BadRequest("invalid trailer section")
            return NEED_DATA
        trailers = bytes(buf[:end])
        del buf[: end + 4]
        if trailers.translate(None, _HEAD_BYTES):
            raise BadRequest("forbidden control character in trailers")
        crlf = trailers.count(b"\r\n")
        if trailers.count(b"\r") != crlf or trailers.count(b"\n") != crlf:
            raise BadRequest("bare CR or LF in trailers")
        for line in trailers.split(b"\r\n"):
            colon = line.find(b":")
            if colon <= 0 or not _is_token(line[:colon]):
                raise BadRequest("invalid trailer field")
        self._state = _HEAD
        return END
