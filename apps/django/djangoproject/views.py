"""The views of the app contract (DESIGN.md §5)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.core.exceptions import BadRequest, RequestDataTooBig
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBadRequest,
    JsonResponse,
    StreamingHttpResponse,
)
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST, require_safe

HELLO = "Hello world from Django!\n"
FILE = Path(__file__).resolve().parent.parent / "static" / "hello.txt"

# Bounds on what a request may ask for, so one request cannot hold a worker for long
# (gunicorn's default worker timeout is 30 s).
MAX_CHUNKS = 1000
MAX_DELAY = 1.0
MAX_STREAM_SECONDS = 10.0
MAX_SLEEP = 10.0
READ_SIZE = 64 * 1024


def number(
    request: HttpRequest, name: str, kind: type[int] | type[float], default: float, maximum: float
) -> float:
    """Query parameter `name` as `kind`, from 0 to `maximum`; 400 when it is anything else."""
    raw = request.GET.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    # NaN fails both comparisons, infinity fails the second.
    if value is None or not 0 <= value <= maximum:
        what = "an integer" if kind is int else "a number"
        raise BadRequest(f"{name} must be {what} from 0 to {maximum:g}")
    return value


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: say what was wrong with the query; other 400s (bad Host) stay terse."""
    message = str(exception) if type(exception) is BadRequest else "Bad Request"
    return HttpResponseBadRequest(f"{message}\n", content_type="text/plain")


def read_body(request: HttpRequest) -> bytes:
    """The request body, also for a chunked upload.

    Django reads CONTENT_LENGTH bytes, so a chunked upload (no Content-Length) looks empty.
    When the server promises that wsgi.input ends with the body (wsgi.input_terminated),
    read it to EOF ourselves, with the same bound as request.body.
    """
    if request.META.get("CONTENT_LENGTH") or not request.META.get("wsgi.input_terminated"):
        return request.body
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    stream = request.META["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        data = stream.read(READ_SIZE)
        if not data:
            return b"".join(parts)
        parts.append(data)
        size += len(data)
    raise RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")


@require_safe
def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(HELLO, content_type="text/plain")


@require_safe
def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok", content_type="text/plain")


@require_POST
def echo(request: HttpRequest) -> HttpResponse:
    content_type = request.META.get("CONTENT_TYPE") or "application/octet-stream"
    return HttpResponse(read_body(request), content_type=content_type)


@require_http_methods(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
def environ(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {key: value for key, value in request.META.items() if isinstance(value, str)}
    )


@require_safe
def stream(request: HttpRequest) -> StreamingHttpResponse:
    chunks = int(number(request, "chunks", int, 5, MAX_CHUNKS))
    delay = number(request, "delay", float, 0.0, MAX_DELAY)
    if chunks * delay > MAX_STREAM_SECONDS:
        raise BadRequest(f"chunks * delay must be at most {MAX_STREAM_SECONDS:g} s")

    def lines() -> Iterator[str]:
        for count in range(1, chunks + 1):
            if count > 1:
                time.sleep(delay)
            yield f"chunk {count} of {chunks}\n"

    return StreamingHttpResponse(lines(), content_type="text/plain")


@require_safe
def sleep(request: HttpRequest) -> HttpResponse:
    seconds = number(request, "seconds", float, 1.0, MAX_SLEEP)
    time.sleep(seconds)
    return HttpResponse(f"slept {seconds:g}\n", content_type="text/plain")


@require_safe
def file(request: HttpRequest) -> FileResponse:
    # Django's WSGI handler gives the open file to environ["wsgi.file_wrapper"] when the
    # server has one; FileResponse closes it.
    return FileResponse(FILE.open("rb"), content_type="text/plain")


@require_safe
def url(request: HttpRequest) -> HttpResponse:
    return HttpResponse(
        request.build_absolute_uri(reverse("hello")) + "\n", content_type="text/plain"
    )
