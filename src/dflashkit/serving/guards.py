"""What a request must pass before it reaches the engine: the API key and the body size limit.

Plus the response counter, an ASGI wrapper so every status (errors included) is counted once.
"""

from __future__ import annotations

import hmac

from starlette.requests import ClientDisconnect, Request

from .errors import APIError
from .metrics import Metrics

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")


def check_api_key(request: Request, api_key: str | None) -> None:
    if api_key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise APIError(401, "Invalid or missing API key: send the header 'Authorization: Bearer <key>'",
                       code="invalid_api_key")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes (header or stream)."""
    too_large = APIError(413, f"request body exceeds {limit} bytes (server flag --max-body-bytes)",
                         code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:  # gone mid-upload: escaped as a 500 with a traceback in the server's log
        raise APIError(499, "the client closed the connection before sending the whole body",
                       code="client_closed_request") from None
    return b"".join(chunks)


class CountResponses:
    """ASGI middleware: `dflashkit_requests_total{endpoint, status}` for every HTTP response."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [500]  # if the app dies before answering
        ended = [False]  # the last body part went out

        async def watch(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                ended[0] = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except ClientDisconnect:
            status[0] = 499
            raise
        finally:
            # a stream whose client left midway had sent its 200 already: it was counted as a whole answer
            if status[0] == 200 and not ended[0]:
                status[0] = 499
            endpoint = scope["path"] if scope["path"] in ENDPOINTS else "other"
            self.metrics.record(lambda m: m.requests.inc(endpoint=endpoint, status=str(status[0])))
