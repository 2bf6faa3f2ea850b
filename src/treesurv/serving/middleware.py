"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task and a copy per request).

`RequestTelemetry` (outermost) times every HTTP request and counts it by route template and
status, adds the request id and the security headers, and feeds the prediction log;
`BodyLimit` answers 413 to bodies above the limit, from the Content-Length header
when there is one, or while streaming otherwise, after reading the rest of the body
(up to a bound) so that every client gets to read the answer. A path may have its
own, larger limit (the web page's file upload).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from treesurv.core.errors import InputError
from treesurv.monitoring.service import HEADER as REQUEST_ID
from treesurv.monitoring.service import RequestIds, ServiceLog, hand_over
from treesurv.serving.metrics import UNMATCHED, Metrics


class BodyTooLarge(InputError):
    pass


# A refused body is read and dropped up to this many bytes before the 413 is sent:
# a client still sending when the server closes gets a connection reset instead of
# the answer (Python's `requests` and `urllib` do). Past it the body is cut off.
DRAIN_BYTES = 64 * 1024 * 1024


def mebibytes(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        drain_bytes: int = DRAIN_BYTES,
        file_limits: Mapping[str, int] | None = None,
    ) -> None:
        """`file_limits`: paths whose body is a file (the upload), with their own limit."""
        self.app = app
        self.max_bytes = max_bytes
        self.drain_bytes = drain_bytes
        self.file_limits = dict(file_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        file_limit = self.file_limits.get(path)
        max_bytes = self.max_bytes if file_limit is None else file_limit
        length = content_length(scope)
        if length is not None:
            if length > max_bytes:
                if length <= self.drain_bytes:
                    await drain(receive, self.drain_bytes)
                await self._refuse(send, length, max_bytes, file_limit is not None)
                return
            await self.app(scope, receive, send)  # the server enforces the declared length
            return

        received = 0
        more = True  # whether the client has more of the body to send
        started = False

        async def counting_receive() -> Message:
            nonlocal received, more
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more = bool(message.get("more_body", False))
                if received > max_bytes:
                    raise BodyTooLarge
            else:
                more = False
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                if more:  # once the body is all in, receive() waits for the disconnect
                    await drain(receive, self.drain_bytes, received)
                await self._refuse(send, None, max_bytes, file_limit is not None)

    async def _refuse(self, send: Send, length: int | None, limit: int, is_file: bool) -> None:
        # A file's sizes are also given in MiB (people size files so); an API body's
        # in bytes, with the advice that fits each.
        if is_file:
            field, what, advice = "file", "file too large", ": split the file"
            got = f"{length} bytes ({mebibytes(length)})" if length is not None else "larger"
            bound = f"{limit} bytes ({mebibytes(limit)})"
        else:
            field, what = "body", "request body too large"
            advice = " (send fewer instances per request)"
            got = f"{length} bytes" if length is not None else "more"
            bound = f"{limit} bytes"
        error = {
            "field": field,
            "value": length,
            "allowed": f"at most {bound}",
            "msg": f"{what}: {got}; the limit is {bound}{advice}",
            "type": f"{field}_too_large",
            "loc": ["body"],
        }
        await send_json(send, 413, {"detail": [error]}, [(b"connection", b"close")])


async def send_json(
    send: Send, status: int, payload: Any, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """A whole JSON answer from a middleware that answers before the app does."""
    body = orjson.dumps(payload)
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*start, *headers]})
    await send({"type": "http.response.body", "body": body})


def content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers", ())
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def drain(receive: Receive, limit: int = DRAIN_BYTES, received: int = 0) -> None:
    """Read and drop the rest of a refused request's body, up to `limit` bytes in all."""
    while received <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return  # the client went away
        received += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


# The page and the API load nothing from elsewhere; inline styles are allowed for the
# SVG charts. Swagger UI and ReDoc (/docs, /redoc) load their assets from jsdelivr and
# start with an inline script, so only those two pages get a wider policy.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
DOCS_CSP = (
    "default-src 'self'; img-src 'self' data: https://fastapi.tiangolo.com "
    "https://cdn.redoc.ly; style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net "
    "https://fonts.googleapis.com; font-src 'self' https://fonts.gstatic.com; "
    "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; worker-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})


def _headers(csp: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"content-security-policy", csp.encode()),
    ]


HEADERS = _headers(CSP)
DOCS_HEADERS = _headers(DOCS_CSP)


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    """Headers every answer carries (the docs pages with their own CSP)."""
    return DOCS_HEADERS if path in DOCS_PATHS else HEADERS


class RequestTelemetry:
    """The outermost layer, in one pass (each ASGI layer costs a few µs per request).

    Times and counts every HTTP answer by route template and status (413s and
    errors included); gives it a request id and `security_headers` (unless the app
    set a header itself); once the answer is sent, hands what a prediction route
    remembered to the prediction log.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics, log: ServiceLog) -> None:
        self.app = app
        self.metrics = metrics
        self.log = log
        self.request_id = RequestIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = self.request_id(scope)
        extra = security_headers(scope.get("path", ""))
        status = 500

        async def edge_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers += [(k, v) for k, v in extra if k not in present]
                headers.append((REQUEST_ID, rid))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, edge_send)
        finally:
            latency = time.perf_counter() - start
            # The router stores the matched route in the scope; its template
            # (not the raw path) keeps the label set small.
            route = scope.get("route")
            path = getattr(route, "path", None) or UNMATCHED
            self.metrics.observe_request(path, scope["method"], status, latency)
        hand_over(self.log, scope, rid, latency)
