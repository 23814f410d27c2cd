"""``create_app``: the engine behind a FastAPI app (KServe v2, ``/v1/predict``, health, metrics).

Errors are JSON ``{"error": ...}``: 400 malformed JSON, 422 inputs that do not fit the family,
401 missing token, 404 unknown model or route, 408 body too slow, 413 body too large, 415
compressed body, 503 overloaded or not ready (with Retry-After), 504 deadline passed, 500 a model
failed on the request's inputs. ``server/openapi.py`` documents them per route.

The app is typed against ``runtime.contract.ServingEngine`` (``runtime.Engine``, with local or
Ray replicas). An engine that cannot be built or started is reported by readiness
and to ``on_engine_failure``'s callback, which the local backend uses to end the process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

import hybridserve
from hybridserve.errors import HybridServeError
from hybridserve.runtime.contract import ServingEngine
from hybridserve.runtime.errors import EngineClosedError, ServingError
from hybridserve.server import replies
from hybridserve.server.binroute import BinaryRoutes
from hybridserve.server.errors import error_reply
from hybridserve.server.fastroute import BodyRoute
from hybridserve.server.feedback_route import install_feedback_route
from hybridserve.server.frontdoor import FrontDoor
from hybridserve.server.metrics import ServerMetrics
from hybridserve.server.openapi import (
    BINARY_REPLY,
    INFERENCE,
    NOT_READY,
    install_examples,
    requires_token,
    responses,
)
from hybridserve.server.policy_route import install_drift, install_policy_routes
from hybridserve.server.replies import Reply
from hybridserve.server.schemas import (
    InferRequest,
    InferResponse,
    Liveness,
    ModelMetadata,
    PredictRequest,
    PredictResponse,
    Readiness,
    TensorMetadata,
)
from hybridserve.server.settings import ServerSettings

log = logging.getLogger(__name__)

EngineSource = ServingEngine | Callable[[], ServingEngine]
_bearer_doc = HTTPBearer(auto_error=False)  # documents the scheme; FrontDoor enforces it


class _Holder:
    """The app's engine and its start-up state."""

    def __init__(self, source: EngineSource) -> None:
        self.engine: ServingEngine | None = None
        self.factory: Callable[[], ServingEngine] | None = None
        if callable(source):
            self.factory = source
        else:
            self.engine = source
        self.error: str | None = None
        self.task: asyncio.Task[None] | None = None
        #: told once, with the reason, when the engine cannot be built or started
        self.on_failure: Callable[[str], None] | None = None

    async def build(self) -> ServingEngine | None:
        if self.engine is None:
            assert self.factory is not None
            try:
                # building loads weights: off the loop
                self.engine = await asyncio.to_thread(self.factory)
            except Exception as err:
                self.failed("engine could not be built", err)
        return self.engine

    async def start(self) -> None:
        assert self.engine is not None
        try:
            if not self.engine.ready:
                await self.engine.start()
        except Exception as err:
            self.failed("engine failed to start", err)

    def failed(self, what: str, err: Exception) -> None:
        """Record why serving is impossible; readiness reports it and ``on_failure`` is told."""
        self.error = f"{what}: {err}"
        log.debug("%s", self.error, exc_info=err)
        if self.on_failure is not None:
            self.on_failure(self.error)  # it says why (the CLI: one line, then exit 2)
        else:
            # an expected failure (bad setup) is one line; anything else keeps its traceback
            log.error("%s", self.error, exc_info=not isinstance(err, HybridServeError))

    def serving(self) -> ServingEngine:
        engine = self.engine
        if engine is None or not engine.ready:
            reason = engine.not_ready_reason if engine is not None else "building the engine"
            raise EngineClosedError(self.error or reason or "not ready")
        return engine


def on_engine_failure(app: FastAPI, callback: Callable[[str], None]) -> None:
    """Call ``callback(reason)`` if the app's engine cannot be built or started."""
    holder: _Holder = app.state.holder
    holder.on_failure = callback


def engine_failure(app: FastAPI) -> str | None:
    """Why the app's engine could not be built or started (None if it did, or has not yet)."""
    holder: _Holder = app.state.holder
    return holder.error


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _reply(reply: Reply) -> Response:
    return Response(reply.body, media_type=reply.media_type, headers=reply.headers)


def create_app(engine: EngineSource, settings: ServerSettings | None = None) -> FastAPI:
    """The HTTP API around ``engine`` (or a factory building it at start-up)."""
    settings = settings or ServerSettings()
    metrics = ServerMetrics()
    holder = _Holder(engine)
    retry = {"Retry-After": str(settings.retry_after_s)}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        eng = await holder.build()
        if eng is None:
            yield
            return
        eng.set_observer(metrics)
        metrics.attach(eng.energy_snapshot, eng.queue_depths)
        install_drift(eng, metrics, settings)
        if settings.start_in_background:
            holder.task = asyncio.create_task(holder.start())
        else:
            await holder.start()
        try:
            yield
        finally:
            if holder.task is not None and not holder.task.done():
                holder.task.cancel()
            await eng.stop(drain=True)

    app = FastAPI(
        title="hybridserve",
        version=hybridserve.__version__,
        description="A family of model sizes served as one confidence-based cascade.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    app.state.holder = holder
    token = requires_token(settings)
    # the scheme is documented only where the FrontDoor asks for the token
    auth = [Depends(_bearer_doc)] if token else []
    health_auth = auth if not settings.open_health else []

    # ------------------------------------------------------------------ errors
    @app.exception_handler(RequestValidationError)
    @app.exception_handler(StarletteHTTPException)
    @app.exception_handler(HybridServeError)
    @app.exception_handler(ServingError)
    @app.exception_handler(Exception)
    async def _on_error(_: Request, err: Exception) -> JSONResponse:
        # one mapping for every route, the raw binary ones included (server/errors.py)
        status, message, headers = error_reply(err, settings.retry_after_s)
        return _error(status, message, headers)

    def _model(name: str) -> ServingEngine:
        eng = holder.engine
        family = eng.family.name if eng is not None else None
        if name != family:
            raise StarletteHTTPException(
                404, f"unknown model {name!r}; this server serves {family!r}"
            )
        return holder.serving()

    # ------------------------------------------------------------------ inference
    # BodyRoute: orjson and pydantic-core for JSON bodies; the declared body model stays the
    # schema. Binary bodies never reach these routes: BinaryRoutes (server/binroute.py) answers.
    app.router.route_class = BodyRoute

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        responses=responses(*INFERENCE, token=token),
        dependencies=auth,
        summary="Answer a batch of inputs (nested lists, base64 PNGs, or texts)",
    )
    async def predict(body: PredictRequest) -> Response:
        return _reply(await replies.predict_reply(holder.serving(), body.inputs))

    @app.post(
        "/v2/models/{model_name}/infer",
        response_model=InferResponse,
        responses=responses(*INFERENCE, 404, token=token, extra=BINARY_REPLY),
        dependencies=auth,
        summary="KServe v2 inference (JSON tensors, batch dimension first)",
    )
    async def infer(model_name: str, body: InferRequest) -> Response:
        return _reply(await replies.infer(_model(model_name), body))

    app.router.route_class = APIRoute  # the other routes keep FastAPI's own body handling

    @app.get(
        "/v2/models/{model_name}",
        response_model=ModelMetadata,
        responses=responses(404, 503, token=token),
        dependencies=auth,
        summary="KServe v2 model metadata",
    )
    async def metadata(model_name: str) -> ModelMetadata:
        eng = _model(model_name)
        shape = [-1, *eng.family.input_shape]
        datatype = "BYTES" if eng.family.input_kind == "text" else "FP32"
        return ModelMetadata(
            name=eng.family.name,
            versions=[],
            platform="hybridserve-cascade",
            inputs=[TensorMetadata(name="input", datatype=datatype, shape=shape)],
            outputs=[
                TensorMetadata(name="label", datatype="INT64", shape=[-1]),
                TensorMetadata(name="label_name", datatype="BYTES", shape=[-1]),
                TensorMetadata(name="confidence", datatype="FP64", shape=[-1]),
                TensorMetadata(name="model", datatype="BYTES", shape=[-1]),
            ],
        )

    install_policy_routes(app, lambda: holder.engine, holder.serving, settings, auth, token)
    install_feedback_route(app, holder.serving, auth, token)

    # ------------------------------------------------------------------ health
    @app.get(
        "/v2/health/live",
        response_model=Liveness,
        responses=responses(token=bool(health_auth)),
        dependencies=health_auth,
    )
    async def live() -> Liveness:
        return Liveness(live=True)

    @app.get(
        "/v2/health/ready",
        response_model=Readiness,
        responses=responses(token=bool(health_auth), extra=NOT_READY),
        dependencies=health_auth,
    )
    async def ready() -> Response:
        eng = holder.engine
        if eng is not None and eng.ready:
            return JSONResponse({"ready": True, "detail": None})
        reason = eng.not_ready_reason if eng is not None else "building the engine"
        detail = holder.error or reason
        return JSONResponse({"ready": False, "detail": detail}, status_code=503, headers=retry)

    @app.get(
        "/v2/models/{model_name}/ready",
        response_model=Readiness,
        responses=responses(404, token=bool(health_auth), extra=NOT_READY),
        dependencies=health_auth,
    )
    async def model_ready(model_name: str) -> Response:
        _model_known = holder.engine is not None and holder.engine.family.name == model_name
        if not _model_known:
            return _error(404, f"unknown model {model_name!r}")
        return await ready()

    @app.get(
        "/metrics",
        response_class=Response,
        summary="Prometheus metrics",
        responses=responses(token=bool(health_auth)),
        dependencies=health_auth,
    )
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def overloaded() -> bool:
        eng = holder.engine
        return eng is not None and eng.overloaded

    install_examples(
        app,
        lambda: holder.engine.family if holder.engine is not None else None,
        predict="/v1/predict",
        infer="/v2/models/{model_name}/infer",
    )

    def engine_for(name: str | None) -> ServingEngine:
        return holder.serving() if name is None else _model(name)

    # inside the FrontDoor (token, limits, metrics), before FastAPI's own layers
    app.add_middleware(BinaryRoutes, engine_for=engine_for, retry_after_s=settings.retry_after_s)
    app.add_middleware(FrontDoor, settings=settings, metrics=metrics, overloaded=overloaded)
    return app
