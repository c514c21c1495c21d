"""The one exception hierarchy of brick.

Every error a client can cause carries the HTTP status it should produce, so one place
(the connection) turns any of them into a response. Errors in brick's own setup
(configuration, loading the app) carry the exit code the command should end with.
"""

from __future__ import annotations


class BrickError(Exception):
    """Base class of every error brick raises on purpose."""


class HTTPError(BrickError):
    """A request brick refuses. `status` is the response code; the connection then closes."""

    status = 400
    reason = "Bad Request"
    method: str | None = None  # the refused request's method, when its request line was read

    def __init__(self, detail: str = "", status: int | None = None) -> None:
        super().__init__(detail or self.reason)
        if status is not None:
            self.status = status
            self.reason = REASONS.get(status, "Error")
        self.detail = detail or self.reason


class BadRequest(HTTPError):
    status = 400
    reason = "Bad Request"


class RequestTimeout(HTTPError):
    status = 408
    reason = "Request Timeout"


class ContentTooLarge(HTTPError):
    status = 413
    reason = "Content Too Large"


class URITooLong(HTTPError):
    status = 414
    reason = "URI Too Long"


class HeaderFieldsTooLarge(HTTPError):
    status = 431
    reason = "Request Header Fields Too Large"


class NotImplementedCoding(HTTPError):
    status = 501
    reason = "Not Implemented"


class VersionNotSupported(HTTPError):
    status = 505
    reason = "HTTP Version Not Supported"


class AppError(BrickError):
    """The application broke the WSGI contract (bad status, bad header, non-bytes body)."""


class ConfigError(BrickError):
    """An option has an invalid value. The CLI prints one line and exits 2."""

    exit_code = 2


class AppImportError(BrickError):
    """The application could not be loaded. The CLI prints one line and exits 1."""

    exit_code = 1


# Reason phrases for the statuses brick writes itself or commonly sees (RFC 9110 §15).
REASONS: dict[int, str] = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    408: "Request Timeout",
    413: "Content Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
