"""The WSGI glue (PEP 3333): request -> environ, the app call, and the app's answer -> output.

Theory of operation
-------------------
`EnvironBuilder` turns a parsed `Request` plus a fully buffered body into the environ
dict. It starts from a prepared base dict (the keys that never change for a listener)
and caches header name -> `HTTP_*` key, so the per-request work is a dict copy and a
loop over the headers.

`run_app` runs one request/response cycle against an `Output` (anything with `write`,
`writev` and `sendfile`; the connection's socket writer, or a memory buffer in tests).
It implements `start_response` with `exc_info` semantics, the `write()` callable, the
choice of body framing, `wsgi.file_wrapper` via `sendfile`, and always calls `close()`
on the app's iterable. It never lets an app error escape: before the head is sent an
error becomes a generic 500; after, the connection is marked to close.

`start_response` checks the app's status and headers and builds the header block in one
pass, before any byte is sent, so a bad app can never produce a malformed response (and
a header list changed afterwards cannot reach the wire). Checked header lines are cached,
so the usual response costs a dict lookup per header. A small response (a list body) is
one `writev` of head and body; a body known in advance gets a Content-Length, others are
chunked on HTTP/1.1 and close-delimited on HTTP/1.0 (RFC 9112 §6.3).
"""

from __future__ import annotations

import io
import ipaddress
import logging
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from types import GeneratorType
from typing import IO, Any, Final, Literal, Protocol, overload
from urllib.parse import unquote_to_bytes

from brick import __version__
from brick.errors import AppError
from brick.parser import Request
from brick.response import (
    CHUNK_END,
    NO_BODY_STATUSES,
    SERVER_HEADER,
    KeptHeads,
    build_head,
    chunk,
    date_header,
    error_response,
    usual_head,
)

log = logging.getLogger("brick.error")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
ExcInfo = tuple[type[BaseException], BaseException, Any]

SERVER_SOFTWARE: Final = f"brick/{__version__}"
# RFC 9112 §4 and RFC 9110 §5.5: a reason phrase and a field value are HTAB, SP, visible
# ASCII and obs-text; nothing else can be written as latin-1 without breaking the message.
_STATUS_RE: Final = re.compile(r"[1-9][0-9]{2} [\t\x20-\x7e\x80-\xff]*")
_FIELD_NAME_RE: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE_BAD: Final = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
# Hop-by-hop headers are the server's business (PEP 3333 §"Other HTTP Features").
_HOP_BY_HOP: Final = frozenset(
    {"keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers"}
    | {"transfer-encoding", "upgrade"}
)


_JOIN_LIMIT: Final = 16384  # bodies up to this size are copied behind the head, not scattered


class ClientDisconnected(ConnectionError):
    """The client went away while we were writing the response."""


class Output(Protocol):
    """Where a response goes. The connection implements it over a socket.

    `paused` is only read by `run_app(..., suspendable=True)`. `last` marks the final bytes
    of a response after which the connection closes: nothing but the close follows them.
    `whole` marks a whole response (its head and all its body), after which the connection
    is meant to stay open (it closes all the same if the app then fails): the connection
    may send it a little later, with others (see connection.py).
    """

    paused: bool

    def write(self, data: bytes, last: bool = False, whole: bool = False) -> None: ...

    def writev(self, parts: list[bytes]) -> None: ...

    def sendfile(self, fd: int, offset: int, count: int) -> int: ...


class FileWrapper:
    """`wsgi.file_wrapper`: iterates a file in blocks; `run_app` sends it with sendfile."""

    def __init__(self, filelike: IO[bytes], blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize
        close = getattr(filelike, "close", None)
        if close is not None:
            self.close = close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        size = self.blksize
        while data := read(size):
            yield data


class Outcome:
    """What happened, for the access log and for keep-alive.

    `run_app` returns the response's own state (a `_Cycle` is an Outcome), not a copy made
    for each request.
    """

    __slots__ = ("body_bytes", "headers", "keep_alive", "status")

    def __init__(
        self,
        status: str = "",
        headers: list[tuple[str, str]] | None = None,
        body_bytes: int = 0,
        keep_alive: bool = True,
    ) -> None:
        self.status = status
        self.headers = [] if headers is None else headers
        self.body_bytes = body_bytes
        self.keep_alive = keep_alive

    def __repr__(self) -> str:
        return (
            f"Outcome(status={self.status!r}, headers={self.headers!r},"
            f" body_bytes={self.body_bytes!r}, keep_alive={self.keep_alive!r})"
        )


# -- environ ------------------------------------------------------------------------------

# Header name (as sent) -> environ key; "" for a header that never becomes a key.
_KEY_CACHE: dict[bytes, str] = {}
_KEY_CACHE_MAX: Final = 512
# The only X-Forwarded-* fields brick acts on (when the peer is trusted).
_FORWARDED_KEYS: Final = frozenset(
    {"HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_PROTO", "HTTP_X_FORWARDED_PREFIX"}
)


def _environ_key(name: bytes) -> str:
    """The environ key for a header name (PEP 3333 / CGI), cached; "" to leave it out."""
    upper = name.decode("latin-1").upper().replace("-", "_")
    if upper == "CONTENT_TYPE":
        key = "CONTENT_TYPE"
    elif upper == "CONTENT_LENGTH":
        key = ""  # set from the parsed framing, never from the raw header
    else:
        key = "HTTP_" + upper
    if len(_KEY_CACHE) < _KEY_CACHE_MAX:
        _KEY_CACHE[name] = key
    return key


def decode_path(raw: str) -> str:
    """PATH_INFO: the percent-decoded path, as latin-1 characters (PEP 3333 §Unicode)."""
    if "%" not in raw:
        return raw
    return unquote_to_bytes(raw).decode("latin-1")


_HOST_CACHE: dict[str, tuple[str, str]] = {}  # a server sees few distinct Host values
_HOST_CACHE_MAX: Final = 256
_ENVIRON_CACHE_MAX: Final = 256  # per builder and trust; as many as the parser's head cache
_PEER_TRUST_MAX: Final = 1024  # peer addresses whose trust a builder keeps
_GOOD_STATUSES: set[str] = set()  # statuses already checked: apps repeat a handful


def _split_host(host: str) -> tuple[str, str]:
    """The name and port of a Host value (RFC 9110 §7.2); the port is "" when none is given.

    An IPv6 literal keeps its brackets, as in a URL. A port that is not digits is ignored.
    """
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, ""
        name, rest = host[: end + 1], host[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, sep, port = host.rpartition(":")
        if not sep or ":" in name:
            return host, ""
    return name, port if port.isdigit() and port.isascii() else ""


class EnvironBuilder:
    """Builds environ dicts for one listener. Create one per listening socket and worker."""

    def __init__(
        self,
        *,
        server_name: str,
        server_port: str,
        root_path: str = "",
        multithread: bool = False,
        multiprocess: bool = False,
        errors: IO[str] | None = None,
        forwarded_trusted_ips: frozenset[str] = frozenset(),
        forwarded_trust_all: bool = False,
    ) -> None:
        self.root_path = root_path.rstrip("/")
        self.server_name = server_name
        self.server_port = server_port
        # Addresses match exactly (in canonical form); entries with a "/" are networks.
        self.trusted_ips = frozenset(ip for ip in forwarded_trusted_ips if "/" not in ip)
        self.trusted_networks = tuple(
            ipaddress.ip_network(net, strict=False) for net in forwarded_trusted_ips if "/" in net
        )
        self.trust_all = forwarded_trust_all or "*" in forwarded_trusted_ips
        self.base: dict[str, Any] = {
            "SERVER_SOFTWARE": SERVER_SOFTWARE,
            "SERVER_NAME": server_name,
            "SERVER_PORT": server_port,
            "SCRIPT_NAME": self.root_path,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.errors": errors if errors is not None else sys.stderr,
            "wsgi.multithread": multithread,
            "wsgi.multiprocess": multiprocess,
            "wsgi.run_once": False,
            "wsgi.input_terminated": True,
            "wsgi.file_wrapper": FileWrapper,
        }
        # id(request) -> (request, its environ without the peer and the input). The request
        # is kept alive by its entry, so its id cannot be reused meanwhile.
        self._cache: dict[int, tuple[Request, dict[str, Any]]] = {}
        self._trusted_cache: dict[int, tuple[Request, dict[str, Any]]] = {}
        # Peer address -> is_trusted's answer: a worker's clients come from a few addresses
        # (its proxies, or the same clients again), so a connection looks its peer up here.
        self.peer_trust: dict[str, bool] = {}

    def set_multiprocess(self, multiprocess: bool) -> None:
        """The worker count changed (TTIN, TTOU): environs from now on say so."""
        if self.base["wsgi.multiprocess"] != multiprocess:
            self.base["wsgi.multiprocess"] = multiprocess
            self._cache.clear()  # the kept templates were copied from the old base
            self._trusted_cache.clear()

    def is_trusted(self, peer_ip: str) -> bool:
        """May this peer set X-Forwarded-*? Unix-socket peers (no address) are trusted.
        The answer is kept in `peer_trust`."""
        trusted = self.trust_all or not peer_ip or self._is_trusted_proxy(peer_ip)
        if len(self.peer_trust) >= _PEER_TRUST_MAX:
            self.peer_trust.clear()
        self.peer_trust[peer_ip] = trusted
        return trusted

    def _is_trusted_proxy(self, ip: str) -> bool:
        """Is `ip` one of the trusted addresses, or inside one of the trusted networks?"""
        if ip in self.trusted_ips:
            return True
        if not self.trusted_networks and not ip.startswith("::ffff:"):
            return False  # the usual case: no parsing
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False  # not an address at all (an XFF hop like "unknown")
        mapped = addr.ipv4_mapped if isinstance(addr, ipaddress.IPv6Address) else None
        if mapped is not None:
            addr = mapped  # ::ffff:10.0.0.1 on a dual-stack socket is 10.0.0.1
            if addr.compressed in self.trusted_ips:
                return True
        return any(addr in net for net in self.trusted_networks)

    def build(
        self,
        request: Request,
        body: IO[bytes],
        body_length: int,
        peer: tuple[str, str],
        trusted: bool,
    ) -> dict[str, Any]:
        """The environ for `request`, whose body is `body` (`body_length` bytes in all).

        A request the parser keeps in its head cache (it has no body) is the same object
        each time it repeats, and so is its environ but for the peer and the input:
        that part is kept (per request and trust) and copied, not built again.
        """
        if not request.cached or body_length:
            return self._build(request, body, body_length, peer, trusted)
        cache = self._trusted_cache if trusted else self._cache
        hit = cache.get(id(request))
        if hit is None or hit[0] is not request:
            template = self._build(request, body, 0, ("", ""), trusted)
            del template["wsgi.input"], template["REMOTE_PORT"]
            if not template["REMOTE_ADDR"]:
                del template["REMOTE_ADDR"]  # else a trusted proxy named the client (XFF)
            if len(cache) >= _ENVIRON_CACHE_MAX:
                cache.clear()
            hit = cache[id(request)] = (request, template)
        environ = hit[1].copy()
        environ.setdefault("REMOTE_ADDR", peer[0])
        environ["REMOTE_PORT"] = peer[1]
        environ["wsgi.input"] = body
        return environ

    def _build(
        self,
        request: Request,
        body: IO[bytes],
        body_length: int,
        peer: tuple[str, str],
        trusted: bool,
    ) -> dict[str, Any]:
        environ = self.base.copy()
        environ["REQUEST_METHOD"] = request.method
        environ["QUERY_STRING"] = request.query
        environ["RAW_URI"] = environ["REQUEST_URI"] = request.target
        environ["SERVER_PROTOCOL"] = request.version
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = peer
        environ["wsgi.input"] = body
        if request.content_length is not None or request.chunked:
            # The body is fully buffered, so even a chunked upload has a known length:
            # frameworks that only trust CONTENT_LENGTH (Django) still see the body.
            environ["CONTENT_LENGTH"] = str(body_length)

        forwarded: dict[str, str] | None = None
        cache = _KEY_CACHE
        for name, value in request.headers:
            key = cache.get(name)
            if key is None:
                key = _environ_key(name)
            if not key:
                continue
            text = value.decode("latin-1")
            if key in environ and key != "CONTENT_TYPE":
                environ[key] += ", " + text  # RFC 9110 §5.3: repeated fields join with ","
            else:
                environ[key] = text
            if trusted and key in _FORWARDED_KEYS:
                if forwarded is None:
                    forwarded = {}
                forwarded[key] = environ[key]

        port: str | None = None  # from the Host; None: keep the listener's
        if request.host:
            split = _HOST_CACHE.get(request.host)
            if split is None:
                split = _split_host(request.host)
                if len(_HOST_CACHE) >= _HOST_CACHE_MAX:
                    _HOST_CACHE.clear()
                _HOST_CACHE[request.host] = split
            host_name, port = split
            if host_name:
                environ["SERVER_NAME"] = host_name
            if request.scheme is not None and "HTTP_HOST" not in environ:
                environ["HTTP_HOST"] = request.host
        if request.scheme is not None:
            environ["wsgi.url_scheme"] = request.scheme

        path = decode_path(request.path) if request.path != "*" else ""
        script_name = self.root_path
        if forwarded is not None:
            script_name = self._apply_forwarded(environ, forwarded, script_name)
            environ["SCRIPT_NAME"] = script_name
        if script_name and (path == script_name or path.startswith(script_name + "/")):
            path = path[len(script_name) :]
        environ["PATH_INFO"] = path
        if port is not None:
            # A Host without a port names the scheme's default port (RFC 9110 §4.2).
            environ["SERVER_PORT"] = port or (
                "443" if environ["wsgi.url_scheme"] == "https" else "80"
            )
        return environ

    def _apply_forwarded(
        self, environ: dict[str, Any], forwarded: dict[str, str], script_name: str
    ) -> str:
        xff = forwarded.get("HTTP_X_FORWARDED_FOR")
        if xff:
            hops = [h.strip() for h in xff.split(",") if h.strip()]
            if hops:
                # The right-most hop is what our trusted proxy saw; step left only past
                # proxies we explicitly trust. Anything further left is client-supplied.
                i = len(hops) - 1
                while i > 0 and not self.trust_all and self._is_trusted_proxy(hops[i]):
                    i -= 1
                environ["REMOTE_ADDR"] = hops[i]
        proto = forwarded.get("HTTP_X_FORWARDED_PROTO")
        if proto:
            proto = proto.split(",")[-1].strip().lower()
            if proto in ("http", "https"):
                environ["wsgi.url_scheme"] = proto
        prefix = forwarded.get("HTTP_X_FORWARDED_PREFIX")
        if prefix is not None:
            prefix = decode_path(prefix.split(",")[0].strip()).rstrip("/")
            if prefix == "" or prefix.startswith("/"):
                return prefix
        return script_name


def empty_input() -> IO[bytes]:
    return io.BytesIO(b"")


# -- the app call -------------------------------------------------------------------------

# Header names already checked to be tokens -> their lower-case form (most apps send the
# same few names on every response, so the regex runs once per name, not per response).
_NAME_CACHE: dict[str, str] = {}
_NAME_CACHE_MAX: Final = 512
# A (name, value) item already checked -> its header line, for the fields most responses
# repeat verbatim (Content-Type, Cache-Control, ...). Only names with no framing meaning.
_LINE_CACHE: dict[tuple[str, str], str] = {}
_LINE_CACHE_MAX: Final = 1024
# (status, *headers) of a response already checked -> what start_response made of it.
# Apps answer most requests with a few status and header lists that repeat exactly.
# What _check_response found.
_Checked = tuple[int, str, int | None, bool, bool, bool, KeptHeads | None]
_HEADERS_CACHE: dict[tuple[Any, ...], _Checked] = {}
_HEADERS_CACHE_MAX: Final = 512
_HEADERS_CACHE_ITEMS: Final = 16  # longer lists (cookies, CORS sets) are checked each time
# Names start_response looks at; every other name is copied through as it is.
_FRAMING_NAMES: Final = frozenset({"content-length", "connection", "date", "server"}) | _HOP_BY_HOP


def _as_bytes(data: object) -> bytes:
    """Body data that is not exactly `bytes`: a bytes-like object is copied, anything else
    (a `str` above all) breaks the contract."""
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise AppError(f"body data must be bytes, not {type(data).__name__}")


def _check_response(status: str, headers: list[tuple[str, str]]) -> _Checked:
    """Check what an app gave start_response; raise AppError for anything that could not
    be written as a well-formed head. Returns the status code, the header block, the
    app's Content-Length, whether it set Date, set Server, and asked to close, and, when it
    did none of these three, the heads kept for it (`KeptHeads`)."""
    if type(status) is not str or status not in _GOOD_STATUSES:
        if type(status) is not str or not _STATUS_RE.fullmatch(status):
            raise AppError(f"invalid status {status!r}")
        if len(_GOOD_STATUSES) < 256:
            _GOOD_STATUSES.add(status)
    if type(headers) is not list:
        raise AppError("response headers must be a list")
    content_length: int | None = None
    has_date = has_server = app_close = False
    lines = []
    line_cache = _LINE_CACHE
    for item in headers:
        try:
            line = line_cache.get(item)
        except TypeError:  # unhashable: certainly not a (str, str) tuple
            line = None
        if line is not None:
            lines.append(line)
            continue
        if type(item) is not tuple or len(item) != 2:
            raise AppError(f"invalid header item {item!r}")
        name, value = item
        if type(name) is not str or type(value) is not str:
            raise AppError(f"header names and values must be str: {item!r}")
        lname = _NAME_CACHE.get(name)
        if lname is None:
            if not _FIELD_NAME_RE.fullmatch(name):
                raise AppError(f"invalid header name {name!r}")
            lname = name.lower()
            if len(_NAME_CACHE) < _NAME_CACHE_MAX:
                _NAME_CACHE[name] = lname
        if _FIELD_VALUE_BAD.search(value):
            raise AppError(f"invalid value for header {name!r}: {value!r}")
        if lname in _FRAMING_NAMES:
            if lname == "content-length":
                if not value.isdigit() or not value.isascii():
                    raise AppError(f"invalid Content-Length {value!r}")
                if content_length is not None:
                    if int(value) != content_length:
                        raise AppError("conflicting Content-Length headers")
                    continue  # an identical repeat: send it once
                content_length = int(value)
            elif lname == "connection":
                app_close = app_close or "close" in value.lower()
                continue  # the server writes its own
            elif lname == "date":
                has_date = True
            elif lname == "server":
                has_server = True
            else:
                raise AppError(f"hop-by-hop header {name!r} is the server's business")
            lines.append(f"{name}: {value}\r\n")
            continue
        line = f"{name}: {value}\r\n"
        if len(line_cache) >= _LINE_CACHE_MAX:
            line_cache.clear()  # high-cardinality values (cookies, ETags) churn it
        line_cache[item] = line
        lines.append(line)
    code = int(status[:3])
    if code < 200:
        raise AppError(f"informational status {status!r} cannot end a WSGI response")
    block = "".join(lines)
    kept = None if has_date or has_server or app_close else KeptHeads(status, block)
    return code, block, content_length, has_date, has_server, app_close, kept


class _Cycle(Outcome):
    """State of one response while the app produces it; once done, its Outcome.

    `status` stays empty until start_response. What start_response sets (the checked
    head, `no_body`) is not set before it: every path that needs it goes through `_head`,
    which refuses a response without a status first.
    """

    __slots__ = (
        "app_close",
        "chunked",
        "content_length",
        "has_date",
        "has_server",
        "head_sent",
        "header_block",
        "no_body",
        "out",
        "request",
        "sent",
        "status_code",
        "streamed",
        "usual",
    )

    def __init__(self, request: Request, out: Output, keep_alive: bool) -> None:
        self.request = request
        self.out = out
        self.status = ""
        self.keep_alive = keep_alive
        self.head_sent = False
        self.chunked = False
        self.sent = 0
        # The body comes from a generator the app returned, or from the write() callable:
        # the app may go on working after the last piece ("send the response, then clean
        # up"), so every piece goes out as it comes, never held back for the app's end.
        self.streamed = False
        self.usual: KeptHeads | None = None  # set by start_response

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.head_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # break the traceback cycle (PEP 3333)
        elif self.status:
            raise AppError("start_response called a second time without exc_info")
        # Everything is checked, and the header block built, now: what the app does with
        # its list afterwards cannot reach the wire unchecked.
        key: tuple[Any, ...] | None = None
        checked = None
        if type(headers) is list and len(headers) <= _HEADERS_CACHE_ITEMS:
            try:
                key = (status, *headers)
                checked = _HEADERS_CACHE.get(key)
            except TypeError:  # something unhashable: _check_response names it
                key = None
        if checked is None:
            checked = _check_response(status, headers)
            if key is not None:
                if len(_HEADERS_CACHE) >= _HEADERS_CACHE_MAX:
                    _HEADERS_CACHE.clear()
                _HEADERS_CACHE[key] = checked
        (
            code,
            self.header_block,
            self.content_length,
            self.has_date,
            self.has_server,
            self.app_close,
            kept,
        ) = checked
        self.status = status
        self.status_code = code
        self.headers = headers
        request = self.request
        if code in NO_BODY_STATUSES or request.method == "HEAD":
            self.no_body = True
            self.usual = None
        else:
            self.no_body = False
            # `send_whole` may then take the head from these (see there).
            self.usual = kept if request.version == "HTTP/1.1" else None
        return self.write

    # -- sending -----------------------------------------------------------------------

    def _head(self, known_length: int | None) -> bytes:
        """Decide framing and build the head. `known_length`: the whole body's size if known."""
        if not self.status:
            raise AppError("the app returned without calling start_response")
        block = self.header_block
        if self.content_length is None and self.status_code not in NO_BODY_STATUSES:
            if known_length is not None:
                self.content_length = known_length
                if not (self.no_body and known_length == 0):
                    block += f"Content-Length: {known_length}\r\n"
            elif self.no_body:
                pass  # HEAD of an unknown length: no framing header at all
            elif self.request.version == "HTTP/1.1":
                self.chunked = True
                block += "Transfer-Encoding: chunked\r\n"
            else:
                self.keep_alive = False  # close-delimited (RFC 9112 §6.3 rule 8)
        if self.app_close:
            self.keep_alive = False
        self.head_sent = True
        if not self.has_date and not self.has_server and self.request.version == "HTTP/1.1":
            # Kept for the second: no building.
            return usual_head(self.status, block, not self.keep_alive)
        if not self.has_date:
            block += date_header()
        if not self.has_server:
            block += SERVER_HEADER
        if not self.keep_alive:
            block += "Connection: close\r\n"
        elif self.request.version == "HTTP/1.0":
            block += "Connection: keep-alive\r\n"
        return build_head(self.status, block)

    def write(self, data: bytes) -> None:
        """The `write()` callable. Sends the head at once, even for an empty string."""
        self.streamed = True
        if not self.head_sent and not data and type(data) is bytes:
            self.out.write(self._head(None))
        else:
            self.send(data)

    def send(self, data: bytes) -> None:
        """Send one piece of the body; the head goes with the first non-empty piece."""
        if type(data) is not bytes:
            data = _as_bytes(data)
        if not data:
            return  # never an empty chunk: in chunked coding that is the terminator
        if not self.head_sent:
            usual = self.usual
            size = len(data)
            if usual is not None and size == self.content_length and size <= _JOIN_LIMIT:
                # The whole body in the first piece: the usual answer, as in `send_whole`.
                # Nothing after it can reach the client (`_fit`), so the response is whole.
                self.head_sent = True
                self.sent = size
                close = not self.keep_alive
                wait = not self.streamed  # may wait for the app's end (see __init__)
                head = usual.head(close)
                self.out.write(head + data, last=close and wait, whole=wait and not close)
                return
            head = self._head(None)
            data = self._fit(data)
            if not data:
                self.out.write(head)
            elif self.chunked:
                self.out.writev([head, *chunk(data)])
            elif (
                self.keep_alive
                or self.streamed
                or self.sent != self.content_length
                or len(data) > _JOIN_LIMIT
            ):
                self.out.writev([head, data])
            else:
                self.out.write(head + data, last=True)  # the whole body in one piece
            return
        data = self._fit(data)
        if not data:
            return
        if self.chunked:
            self.out.writev(chunk(data))
        elif self.keep_alive or self.streamed or self.sent != self.content_length:
            self.out.write(data)
        else:
            self.out.write(data, last=True)

    def _fit(self, data: bytes) -> bytes:
        """Count the body; never send past the Content-Length, nor any body for HEAD/304."""
        if self.no_body:
            self.sent += len(data)
            return b""
        limit = self.content_length
        if limit is not None and self.sent + len(data) > limit:
            log.error(
                "app sent more than its Content-Length (%d) for %s %s; excess dropped",
                limit,
                self.request.method,
                self.request.target,
            )
            data = data[: max(0, limit - self.sent)]
        self.sent += len(data)
        return data

    def _short(self, size: int) -> None:
        """The body ends before its Content-Length: the client can only see it by a close."""
        log.error(
            "app sent %d of its %d-byte Content-Length for %s %s; closing the connection",
            size,
            self.content_length,
            self.request.method,
            self.request.target,
        )
        self.keep_alive = False

    def outcome(self) -> Outcome:
        """The response is done: this cycle, as its Outcome."""
        self.body_bytes = 0 if self.no_body else self.sent
        return self

    def finish(self) -> None:
        """The app's iterable is exhausted: end the body (or send a head with no body)."""
        if not self.status:
            raise AppError("the app returned without calling start_response")
        if not self.head_sent:
            if self.content_length and not self.no_body:
                self._short(0)
            head = self._head(0)
            self.out.write(head, last=not self.keep_alive)
        elif self.chunked:
            self.out.write(CHUNK_END, last=not self.keep_alive)
        elif (
            self.content_length is not None and not self.no_body and self.sent < self.content_length
        ):
            self._short(self.sent)

    def send_whole(self, parts: list[bytes] | tuple[bytes, ...]) -> None:
        """A body the app gave as a list: one vectored write with a Content-Length."""
        if not self.status:
            raise AppError("the app returned without calling start_response")
        if len(parts) == 1:
            body = parts[0]
            if type(body) is not bytes:
                body = _as_bytes(body)
        else:
            body = b"".join([p if type(p) is bytes else _as_bytes(p) for p in parts])
        size = len(body)
        usual = self.usual
        if usual is not None and size == self.content_length and size <= _JOIN_LIMIT:
            # The usual answer, taken first: the body the app announced, on HTTP/1.1, with
            # our Date and Server. What `_head` would decide is known, and so is the head:
            # it is one of those kept for this status and header block.
            self.head_sent = True
            self.sent = size
            if self.keep_alive:
                self.out.write(usual.head(False) + body, whole=True)
            else:
                self.out.write(usual.head(True) + body, last=True)
            return
        declared = self.content_length
        if declared is None:
            head = self._head(size)
        elif size == declared:
            head = self._head(None)  # the usual case: the body is what the app announced
        else:
            if size < declared and not self.no_body:
                self._short(size)  # known before the head: it can say Connection: close
            head = self._head(None)
            body = self._fit(body)
            size = len(body)
        self.sent = size
        if self.no_body or not body:
            body = b""
        elif size > _JOIN_LIMIT:
            self.out.writev([head, body])
            return
        if self.keep_alive:
            self.out.write(head + body, whole=True)  # one plain send, not an iovec
        else:
            self.out.write(head + body, last=True)

    def send_file(self, wrapper: FileWrapper) -> bool:
        """Send a `wsgi.file_wrapper` with sendfile. False if the file does not allow it."""
        filelike = wrapper.filelike
        try:
            fd = filelike.fileno()
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return False
            offset = filelike.tell()  # PEP 3333: send from the current position
        except (AttributeError, OSError, ValueError):
            return False
        available = max(0, st.st_size - offset)
        if self.content_length is None:
            count = available
            head = self._head(available)
        else:
            count = min(self.content_length, available)
            if count < self.content_length and not self.no_body:
                self._short(count)
            head = self._head(None)
        self.out.write(head)
        if self.no_body or not count:
            self.sent = count
            return True
        sent = self.out.sendfile(fd, offset, count)
        self.sent = sent
        if sent < count:
            log.error("file shrank while it was sent; closing the connection")
            self.keep_alive = False
        return True


class Suspended:
    """A response whose body iteration is paused until the client catches up.

    `run_app(..., suspendable=True)` returns one when `out.paused` is True after a piece of
    an iterated body: the caller flushes what is pending and calls `resume()`, which goes on
    iterating until the output pauses again (None) or the response is done (its Outcome).
    The app's iterable stays open meanwhile; `abort()` closes it when the client is gone.
    """

    __slots__ = ("cycle", "environ", "iterator", "result")

    def __init__(
        self,
        cycle: _Cycle,
        result: Iterable[bytes],
        iterator: Iterator[bytes],
        environ: dict[str, Any],
    ) -> None:
        self.cycle = cycle
        self.result = result
        self.iterator = iterator
        self.environ = environ

    def resume(self) -> Outcome | None:
        """Go on. Raises `ClientDisconnected` like `run_app` (the iterable is then closed)."""
        cycle = self.cycle
        done = True
        try:
            try:
                if not _iterate(cycle, self.iterator):
                    done = False
                    return None
            except ClientDisconnected:
                cycle.keep_alive = False
                raise
            except (Exception, SystemExit) as exc:
                _app_failed(cycle, self.environ, exc)
        finally:
            if done:
                _close_iterable(self.result, self.environ)
        return cycle.outcome()

    def abort(self) -> None:
        _close_iterable(self.result, self.environ)


def _iterate(cycle: _Cycle, iterator: Iterator[bytes]) -> bool:
    """Send the body pieces; False when the output paused before the end."""
    send = cycle.send
    out = cycle.out
    for data in iterator:
        send(data)
        if out.paused:
            return False
    cycle.finish()
    return True


@overload
def run_app(
    app: WSGIApp,
    environ: dict[str, Any],
    request: Request,
    out: Output,
    keep_alive: bool = True,
    *,
    suspendable: Literal[False] = False,
) -> Outcome: ...


@overload
def run_app(
    app: WSGIApp,
    environ: dict[str, Any],
    request: Request,
    out: Output,
    keep_alive: bool = True,
    *,
    suspendable: bool,
) -> Outcome | Suspended: ...


def run_app(
    app: WSGIApp,
    environ: dict[str, Any],
    request: Request,
    out: Output,
    keep_alive: bool = True,
    *,
    suspendable: bool = False,
) -> Outcome | Suspended:
    """Run one request/response cycle. Never raises, except `ClientDisconnected`.

    The app's iterable is closed whatever happens (PEP 3333), a client disconnect included.
    With `suspendable`, an iterated body may pause (see `Suspended`).
    """
    cycle = _Cycle(request, out, keep_alive)
    result: Iterable[bytes] | None = None
    done = True
    try:
        try:
            result = app(environ, cycle.start_response)
            if (type(result) is list or type(result) is tuple) and not cycle.head_sent:
                if result:
                    cycle.send_whole(result)
                else:
                    cycle.finish()
            elif (
                type(result) is FileWrapper
                and cycle.status
                and not cycle.head_sent
                and cycle.send_file(result)
            ):
                pass
            else:
                if type(result) is GeneratorType:
                    cycle.streamed = True  # see _Cycle.__init__
                if suspendable:
                    iterator = iter(result)
                    if not _iterate(cycle, iterator):
                        done = False
                        return Suspended(cycle, result, iterator, environ)
                else:
                    send = cycle.send
                    for data in result:
                        send(data)
                    cycle.finish()
        except ClientDisconnected:
            cycle.keep_alive = False
            raise
        except (Exception, SystemExit) as exc:  # sys.exit() in an app is the app's bug
            _app_failed(cycle, environ, exc)
    finally:
        if done and result is not None and type(result) is not list:  # a list has no close()
            _close_iterable(result, environ)
    return cycle.outcome()


def _app_failed(cycle: _Cycle, environ: dict[str, Any], exc: BaseException) -> None:
    where = f"{environ.get('REQUEST_METHOD')} {environ.get('RAW_URI')}"
    if isinstance(exc, AppError):
        log.error("WSGI contract violation in %s: %s", where, exc)
    else:
        log.error("error handling %s", where, exc_info=exc)
    cycle.keep_alive = False
    if cycle.head_sent:
        return  # the response is half-sent: the only honest thing left is closing
    cycle.status = "500 Internal Server Error"
    cycle.headers = []
    cycle.head_sent = True
    head_only = cycle.request.method == "HEAD"
    response = error_response(500, head_only=head_only)
    cycle.no_body = head_only
    cycle.sent = 0 if head_only else len(response) - response.index(b"\r\n\r\n") - 4
    cycle.out.write(response, last=True)


def _close_iterable(result: object, environ: dict[str, Any]) -> None:
    close = getattr(result, "close", None)
    if close is None:
        return
    try:
        close()
    except Exception:
        log.exception(
            "error closing the app iterator for %s %s",
            environ.get("REQUEST_METHOD"),
            environ.get("RAW_URI"),
        )
