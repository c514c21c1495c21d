"""The Flask demo app: the app contract (DESIGN.md §5) as plain Flask views.

Run it from this folder: `brick flaskapp:app` or `gunicorn flaskapp:app`. Mounted under a
prefix, the server puts the prefix in SCRIPT_NAME and `url_for` builds URLs that carry it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

from flask import Flask, Response, abort, jsonify, request, send_file, url_for
from werkzeug.exceptions import HTTPException

HELLO = "Hello world from Flask!\n"
FILE = Path(__file__).resolve().parent / "static" / "hello.txt"

# Bounds on what a request may ask for, so one request cannot hold a worker for long
# (gunicorn's default worker timeout is 30 s) or make us buffer an unbounded body.
MAX_BODY = 10 * 1024 * 1024
MAX_CHUNKS = 1000
MAX_DELAY = 1.0
MAX_STREAM_SECONDS = 10.0
MAX_SLEEP = 10.0

app = Flask(__name__)
# Werkzeug enforces this for Content-Length and for chunked (wsgi.input_terminated) bodies.
app.config["MAX_CONTENT_LENGTH"] = MAX_BODY


def number(name: str, kind: type[int] | type[float], default: float, maximum: float) -> float:
    """Query parameter `name` as `kind`, from 0 to `maximum`; 400 when it is anything else."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    # NaN fails both comparisons, infinity fails the second.
    if value is None or not 0 <= value <= maximum:
        what = "an integer" if kind is int else "a number"
        abort(400, f"{name} must be {what} from 0 to {maximum:g}")
    return value


@app.errorhandler(HTTPException)
def plain_error(error: HTTPException) -> Response:
    """Errors as one line of plain text instead of Werkzeug's HTML page."""
    response = error.get_response()
    response.set_data(f"{error.description}\n")
    response.mimetype = "text/plain"
    return response


@app.get("/hello")
def hello() -> Response:
    return Response(HELLO, mimetype="text/plain")


@app.get("/healthz")
def healthz() -> Response:
    return Response("ok", mimetype="text/plain")


@app.post("/echo")
def echo() -> Response:
    body = request.get_data(cache=False)
    return Response(body, content_type=request.content_type or "application/octet-stream")


@app.route("/environ", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def environ() -> Response:
    return jsonify({key: value for key, value in request.environ.items() if isinstance(value, str)})


@app.get("/stream")
def stream() -> Response:
    chunks = int(number("chunks", int, 5, MAX_CHUNKS))
    delay = number("delay", float, 0.0, MAX_DELAY)
    if chunks * delay > MAX_STREAM_SECONDS:
        abort(400, f"chunks * delay must be at most {MAX_STREAM_SECONDS:g} s")

    def lines() -> Iterator[str]:
        for count in range(1, chunks + 1):
            if count > 1:
                time.sleep(delay)
            yield f"chunk {count} of {chunks}\n"

    # A generator body is sent as it is produced ("Streaming Contents" in the Flask docs).
    return Response(lines(), mimetype="text/plain")


@app.get("/sleep")
def sleep() -> Response:
    seconds = number("seconds", float, 1.0, MAX_SLEEP)
    time.sleep(seconds)
    return Response(f"slept {seconds:g}\n", mimetype="text/plain")


@app.get("/file")
def file() -> Response:
    # send_file hands the open file to environ["wsgi.file_wrapper"] when the server has one.
    return send_file(FILE, mimetype="text/plain")


@app.get("/url")
def url() -> Response:
    return Response(url_for("hello", _external=True) + "\n", mimetype="text/plain")
