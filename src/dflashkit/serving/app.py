"""The FastAPI app: OpenAI routes over one EngineLoop. HTTP concerns only; the engine does the work.

`create_app` takes a ready Generator (its engine runs on a thread of this process: tests, embedders) or an
`EngineProcess` (the engine in a process of its own: `dflashkit serve`); no model loads here.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .engine_loop import EngineLoop, EngineProcess, EngineThread, Handle
from .errors import APIError, server_error
from .guards import CountResponses, check_api_key, read_body
from .metrics import Metrics
from .protocol import chat_request, completion_request, parse_json
from .responses import Reply
from .sse import EngineStream, stream_events


@dataclass
class ServerConfig:
    served_model_name: str
    model_aliases: tuple[str, ...] = ()  # other names accepted in `model` (the model id it was loaded from)
    api_key: str | None = None
    max_queue: int = 256
    max_body_bytes: int = 4 << 20


def create_app(gen, config: ServerConfig) -> FastAPI:
    """`gen`: a Generator, or an EngineProcess (launched or not)."""
    metrics = Metrics(running=lambda: engine.running, queued=lambda: engine.queued)
    core = gen if isinstance(gen, EngineProcess) else EngineThread(gen)
    engine = EngineLoop(core, max_queue=config.max_queue, metrics=metrics)
    names = {config.served_model_name, *config.model_aliases}
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        await engine.aclose()

    # redirect_slashes off: `POST /v1/chat/completions/` got an empty 307 to a URL built from the Host header
    # (curl without -L printed nothing; behind a proxy it names the inner address); now a JSON 404 with a hint
    app = FastAPI(title="dflashkit", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                  redirect_slashes=False)
    app.state.engine, app.state.metrics, app.state.config = engine, metrics, config
    app.add_middleware(CountResponses, metrics=metrics)
    _add_error_handlers(app)

    # GET routes answer HEAD too (HTTP requires it; load balancers probe with it): FastAPI, unlike Starlette,
    # does not add it, and `HEAD /health` was a 405
    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> JSONResponse:
        ok = engine.alive
        return JSONResponse({"status": "ok" if ok else "unavailable", "running": engine.running,
                             "queued": engine.queued}, status_code=200 if ok else 503)

    @app.api_route("/metrics", methods=["GET", "HEAD"])
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    def card() -> dict:
        return {"id": config.served_model_name, "object": "model", "created": created, "owned_by": "dflashkit",
                "max_model_len": engine.max_length}

    @app.api_route("/v1/models", methods=["GET", "HEAD"])
    async def models(request: Request) -> JSONResponse:
        check_api_key(request, config.api_key)
        return JSONResponse({"object": "list", "data": [card()]})

    # openai's `client.models.retrieve(name)`; :path as names hold '/'
    @app.api_route("/v1/models/{model:path}", methods=["GET", "HEAD"])
    async def model(request: Request, model: str) -> JSONResponse:
        check_api_key(request, config.api_key)
        if model == "":  # `/v1/models/`: the list, as without the slash
            return JSONResponse({"object": "list", "data": [card()]})
        if model not in names:
            raise _unknown_model(model, config.served_model_name)
        return JSONResponse(card())

    async def generate(request: Request, chat: bool) -> Response:
        check_api_key(request, config.api_key)
        body = parse_json(await read_body(request, config.max_body_bytes))
        req, engine_request = (chat_request if chat else completion_request)(body)
        if req.model is not None and req.model not in names:
            raise _unknown_model(req.model, config.served_model_name)
        handle = engine.submit(engine_request)
        try:
            first = await handle.next()  # accepted, or a 400 found while tokenising (e.g. context length)
        except asyncio.CancelledError:
            handle.cancel()
            raise
        if first.kind == "error":
            raise first.error
        reply = Reply(model=config.served_model_name, chat=chat)
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return EngineStream(handle, stream_events(handle, reply, include_usage), media_type="text/event-stream",
                                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await _collect(request, handle, reply)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, chat=False)

    return app


def _unknown_model(name: str, served: str) -> APIError:
    return APIError(404, f"The model '{name}' does not exist; this server serves '{served}'", param="model",
                    code="model_not_found")


async def _collect(request: Request, handle: Handle, reply: Reply) -> Response:
    """Wait for the whole answer, aborting the sequence if the client hangs up first."""

    async def answer() -> dict:
        while True:
            event = await handle.next()
            if event.kind == "done":
                return reply.complete(event.result)
            if event.kind == "error":
                raise event.error

    work = asyncio.ensure_future(answer())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():
            work.cancel()
            handle.cancel()
    if not work.done() or work.cancelled():  # `cancel()` only asks: the task ends at its next await, not here
        return Response(status_code=499)  # client closed the request (nginx's code); nobody reads this
    return JSONResponse(work.result())


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


_ROUTES = ("/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions")


def _add_error_handlers(app: FastAPI) -> None:
    def reply(error: APIError, headers: dict | None = None) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=headers)

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return reply(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(APIError(400, f"invalid request: {exc.errors()[:1]}", code="invalid_request"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        path = request.url.path
        hint = f" (routes have no trailing slash: {path.rstrip('/')})" if exc.status_code == 404 and \
            path.endswith("/") and path.rstrip("/") in _ROUTES else ""
        error = APIError(exc.status_code, f"{request.method} {path}: {exc.detail}{hint}", code=code)
        return reply(error, exc.headers)  # a 405 names the methods allowed (`Allow`), as HTTP requires

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        return reply(server_error(f"internal error: {type(exc).__name__}: {exc}"))
