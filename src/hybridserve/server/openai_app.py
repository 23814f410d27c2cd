"""``create_generative_app``: a generative cascade behind OpenAI-compatible routes.

Routes: ``POST /v1/completions`` (OpenAI's legacy completions, streamed or not),
``POST /v1/chat/completions`` (for a family with a chat template, ``server/openai_chat.py``;
400 for the others), ``GET /v1/models``,
``GET /v1/models/{model}``, and, as on the classifier server, ``/v2/health/live``,
``/v2/health/ready`` and ``/metrics``. The same ``FrontDoor`` guards them (bearer token, body
limits, load shedding), with errors in OpenAI's body shape (``openai_schemas.openai_error``):
400 bad request, 401 token, 404 unknown model or route, 413/415/408 body, 503 overloaded or not
ready (Retry-After), 504 deadline, 500 a model failed on the prompt.

A streamed completion sends one ``data: {...}`` chunk per prompt once a chain position has
accepted its answer (the cascade cannot know earlier which model's tokens will stand), then
``data: [DONE]``. An error before the first chunk is an ordinary error response; one after it
is an ``data: {"error": ...}`` event before ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import hybridserve
from hybridserve.errors import HybridServeError
from hybridserve.runtime.errors import (
    BatchFailedError,
    DeadlineExceededError,
    EngineClosedError,
    InvalidInputError,
    QueueFullError,
    ServingError,
)
from hybridserve.runtime.genengine import Completion, GenerativeEngine
from hybridserve.server.frontdoor import FrontDoor
from hybridserve.server.genmetrics import GenerativeMetrics
from hybridserve.server.openai_chat import (
    ChatCompletionRequest,
    chat_body,
    chat_choice,
    chat_chunk,
    new_chat_id,
)
from hybridserve.server.openai_schemas import (
    CompletionRequest,
    choice,
    chunk_body,
    completion_body,
    new_id,
    openai_error,
)
from hybridserve.server.settings import ServerSettings

log = logging.getLogger(__name__)


class _Start:
    """Start-up state, shaped like ``server.app``'s holder so ``on_engine_failure`` and
    ``engine_failure`` (the local backend's hooks) work on this app too."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.on_failure: Callable[[str], None] | None = None


class OpenAIError(Exception):
    """A request refused with an OpenAI-style error body."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def _error_status(err: BaseException) -> tuple[int, str | None]:
    """HTTP status and OpenAI ``code`` of an engine error."""
    if isinstance(err, (QueueFullError, EngineClosedError)):
        return 503, "overloaded" if isinstance(err, QueueFullError) else "unavailable"
    if isinstance(err, DeadlineExceededError):
        return 504, "timeout"
    if isinstance(err, InvalidInputError):
        return 400, "invalid_prompt"
    if isinstance(err, HybridServeError):
        return 400, None
    if isinstance(err, BatchFailedError):
        return 500, "model_failed"
    return 500, None


def _validation(err: RequestValidationError) -> OpenAIError:
    for e in err.errors():
        if e.get("type") == "json_invalid":
            return OpenAIError(400, "malformed JSON body")
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        param = loc[0] if loc else None
        where = ".".join(loc) or "body"
        return OpenAIError(400, f"{where}: {e.get('msg', 'invalid')}", param, "invalid_value")
    return OpenAIError(400, "malformed request body")


def create_generative_app(
    engine: GenerativeEngine, settings: ServerSettings | None = None
) -> FastAPI:
    """The OpenAI-compatible HTTP API around a (started or unstarted) generative engine."""
    settings = settings or ServerSettings()
    metrics = GenerativeMetrics()
    retry = {"Retry-After": str(settings.retry_after_s)}
    state = _Start()

    async def start() -> None:
        try:
            if not engine.ready:
                await engine.start()
        except Exception as err:
            state.error = f"engine failed to start: {err}"
            if state.on_failure is not None:
                state.on_failure(state.error)  # the CLI: one line, then exit 2
            else:
                log.error("%s", state.error, exc_info=not isinstance(err, HybridServeError))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        engine.set_observer(metrics)
        metrics.attach(engine.energy_snapshot, engine.queue_depths)
        if settings.start_in_background:
            state.task = asyncio.create_task(start())
        else:
            await start()
        try:
            yield
        finally:
            if state.task is not None and not state.task.done():
                state.task.cancel()
            await engine.stop(drain=True)

    app = FastAPI(
        title="hybridserve (generative)",
        version=hybridserve.__version__,
        description="A family of language models served as one confidence-based cascade, "
        "behind OpenAI-compatible routes.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.engine = engine
    app.state.holder = state

    def failed(
        status: int, message: str, param: str | None = None, code: str | None = None
    ) -> JSONResponse:
        headers = retry if status == 503 else None
        return JSONResponse(openai_error(status, message, param, code), status, headers=headers)

    # ------------------------------------------------------------------ errors
    @app.exception_handler(OpenAIError)
    async def _on_openai(_: Request, err: OpenAIError) -> JSONResponse:
        return failed(err.status, err.message, err.param, err.code)

    @app.exception_handler(RequestValidationError)
    async def _on_validation(_: Request, err: RequestValidationError) -> JSONResponse:
        e = _validation(err)
        return failed(e.status, e.message, e.param, e.code)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        return failed(err.status_code, str(err.detail))

    @app.exception_handler(ServingError)
    async def _on_serving(_: Request, err: ServingError) -> JSONResponse:
        status, code = _error_status(err)
        return failed(status, str(err), None, code)

    @app.exception_handler(HybridServeError)
    async def _on_user_error(_: Request, err: HybridServeError) -> JSONResponse:
        status, code = _error_status(err)
        return failed(status, str(err), None, code)

    def serving(model: str) -> GenerativeEngine:
        if model != engine.family.name:
            raise OpenAIError(
                404,
                f"the model {model!r} does not exist; this server serves {engine.family.name!r}",
                "model",
                "model_not_found",
            )
        if not engine.ready:
            raise EngineClosedError(state.error or f"not ready: {engine.not_ready_reason}")
        return engine

    def model_card() -> dict[str, Any]:
        return {
            "id": engine.family.name,
            "object": "model",
            "created": 0,
            "owned_by": "hybridserve",
            "hybridserve": {"chain": list(engine.chain), "task": "generate"},
        }

    # ------------------------------------------------------------------ completions
    @app.post("/v1/completions", summary="OpenAI-compatible text completion")
    async def completions(body: CompletionRequest) -> Response:
        bad = body.unsupported()
        if bad is not None:
            raise OpenAIError(400, bad[1], bad[0], "unsupported")
        eng = serving(body.model)
        prompts = body.prompts
        if len(prompts) > eng.config.max_batch_size:
            raise OpenAIError(
                400,
                f"at most {eng.config.max_batch_size} prompts per request, got {len(prompts)}",
                "prompt",
            )
        try:
            params = body.params(eng.family.max_new_tokens)
        except HybridServeError as err:
            raise OpenAIError(400, str(err)) from err
        decode = {m.name: m.decode for m in eng.family.models}

        def one(i: int, done: Completion) -> dict[str, Any]:
            return choice(i, done, decode[done.model], prompts[i], body.logprobs)

        cid = new_id()
        return await _answer(
            eng,
            prompts,
            params,
            body.stream,
            one,
            lambda choices, dones: completion_body(cid, body.model, choices, dones),
            lambda c: chunk_body(cid, body.model, c),
        )

    async def _answer(
        eng: GenerativeEngine,
        prompts: Sequence[str],
        params: Any,
        stream: bool,
        one: Callable[[int, Completion], dict[str, Any]],
        whole: Callable[[list[dict[str, Any]], list[Completion]], dict[str, Any]],
        chunk: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> Response:
        """Complete ``prompts`` through the cascade: one response, or a stream of chunks."""
        if eng.inflight + len(prompts) > eng.config.queue_size:
            raise QueueFullError("server overloaded: the queue is full; retry later")
        tasks = [asyncio.ensure_future(eng.complete(p, params)) for p in prompts]
        if not stream:
            try:
                dones = list(await asyncio.gather(*tasks))
            finally:
                for t in tasks:
                    t.cancel()  # the others, when one failed: nothing waits for them
            return JSONResponse(whole([one(i, d) for i, d in enumerate(dones)], dones))
        return await _stream(tasks, lambda i, done: chunk(one(i, done)))

    async def _stream(
        tasks: Sequence[asyncio.Future[Completion]],
        chunk_of: Callable[[int, Completion], dict[str, Any]],
    ) -> Response:
        index = {id(t): i for i, t in enumerate(tasks)}
        try:
            first, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in first:
                t.result()  # an error before anything was sent: a plain error response
        except BaseException:
            for t in tasks:
                t.cancel()
            raise

        def event(t: asyncio.Future[Completion]) -> tuple[str, bool]:
            """The event of a finished prompt, and whether it ends the stream (an error)."""
            err = t.exception()
            if err is not None:
                status, code = _error_status(err)
                return json.dumps(openai_error(status, str(err), None, code)), True
            return json.dumps(chunk_of(index[id(t)], t.result())), False

        async def events() -> AsyncIterator[str]:
            ready, waiting = first, pending
            try:
                while True:
                    for t in sorted(ready, key=lambda t: index[id(t)]):
                        data, fatal = event(t)
                        yield f"data: {data}\n\n"
                        if fatal:
                            waiting = set()
                            break
                    if not waiting:
                        break
                    ready, waiting = await asyncio.wait(
                        waiting, return_when=asyncio.FIRST_COMPLETED
                    )
                yield "data: [DONE]\n\n"
            finally:
                for t in tasks:
                    t.cancel()  # the client went away, or an error ended the stream

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    @app.post("/v1/chat/completions", summary="OpenAI-compatible chat completion")
    async def chat_completions(body: ChatCompletionRequest) -> Response:
        bad = body.unsupported()
        if bad is not None:
            raise OpenAIError(400, bad[1], bad[0], "unsupported")
        eng = serving(body.model)
        if not eng.family.chats:
            raise OpenAIError(
                400,
                f"family {eng.family.name!r} has no chat template: its models complete plain "
                "text; use POST /v1/completions with a prompt (or declare chat_template in the "
                "family YAML)",
                "messages",
                "chat_not_supported",
            )
        try:
            prompt = eng.family.chat_prompt(body.plain_messages())
            params = body.params(eng.family.max_new_tokens)
        except HybridServeError as err:
            raise OpenAIError(400, str(err), "messages") from err
        decode = {m.name: m.decode for m in eng.family.models}

        def one(_: int, done: Completion) -> dict[str, Any]:
            return chat_choice(done, decode[done.model], body)

        cid = new_chat_id()
        return await _answer(
            eng,
            [prompt],
            params,
            body.stream,
            one,
            lambda choices, dones: chat_body(cid, body.model, choices, dones),
            lambda c: chat_chunk(cid, body.model, c),
        )

    @app.get("/v1/models", summary="The model this server serves (the whole cascade)")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model}", summary="One model's card")
    async def model(model: str) -> dict[str, Any]:
        if model != engine.family.name:
            raise OpenAIError(
                404, f"the model {model!r} does not exist", "model", "model_not_found"
            )
        return model_card()

    # ------------------------------------------------------------------ health
    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        if engine.ready:
            return JSONResponse({"ready": True, "detail": None})
        detail = state.error or engine.not_ready_reason
        return JSONResponse({"ready": False, "detail": detail}, status_code=503, headers=retry)

    @app.get("/metrics", response_class=Response, summary="Prometheus metrics")
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(
        FrontDoor,
        settings=settings,
        metrics=metrics,
        overloaded=lambda: engine.overloaded,
        error_body=lambda status, message: openai_error(status, message),
    )
    return app
