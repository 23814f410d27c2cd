"""``POST /v1/feedback``: true labels for answers already given (drift handling on).

The body names requests by the ``id`` their ``/v1/predict`` or ``/v2`` answer carried and gives
one class index per input: ``{"feedback": [{"id": "r17", "labels": [3, 0]}, ...]}``. Labels are
counted against what was served (``GET /v1/policy`` → ``drift.feedback``), and those of inputs
shadow-checked since a drift alarm become the live re-tune's labels. The body is checked whole
before anything is recorded: 404 for an id the server does not know (or has forgotten), 422 for
a malformed body or labels that do not fit the request, 409 when drift handling is off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastapi import FastAPI, params
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from hybridserve.errors import HybridServeError
from hybridserve.runtime.contract import ServingEngine
from hybridserve.runtime.errors import UnknownRequestError
from hybridserve.server.openapi import ERRORS, responses
from hybridserve.server.schemas import ErrorResponse


class FeedbackItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="the request's id, from its answer")
    labels: list[int] = Field(description="the true class index of each of its inputs")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    feedback: list[FeedbackItem] = Field(min_length=1, max_length=10_000)


class FeedbackAccepted(BaseModel):
    labels: int = Field(description="labels recorded")
    retune_labels: int = Field(description="of them, labels of shadow pairs for the re-tune")


_FEEDBACK_ERRORS: dict[int | str, dict[str, object]] = {
    404: {"model": ErrorResponse, "description": "an id the server does not know; nothing kept"},
    409: {"model": ErrorResponse, "description": "drift handling is off (serve --drift)"},
    422: {"model": ErrorResponse, "description": "a malformed body or labels; nothing kept"},
    503: ERRORS[503],
}


def install_feedback_route(
    app: FastAPI,
    serving: Callable[[], ServingEngine],
    auth: Sequence[params.Depends],
    token: bool,
) -> None:
    @app.post(
        "/v1/feedback",
        response_model=FeedbackAccepted,
        responses=responses(token=token, extra=_FEEDBACK_ERRORS),
        dependencies=list(auth),
        summary="True labels of answered requests (by id), for drift monitoring and re-tunes",
    )
    async def feedback(body: FeedbackRequest) -> Response:
        eng = serving()
        drift = getattr(eng, "drift", None)
        if drift is None:
            return JSONResponse(
                {"error": "drift handling is off on this server (serve --drift)"}, status_code=409
            )
        n_classes = len(eng.family.label_names)
        # check everything first: a bad item must not leave half a body recorded
        for k, item in enumerate(body.feedback):
            try:
                drift.check_feedback(item.id, item.labels, n_classes)
            except UnknownRequestError as err:
                return JSONResponse({"error": f"feedback.{k}.{err}"}, status_code=404)
            except HybridServeError as err:
                return JSONResponse({"error": f"feedback.{k}.{err}"}, status_code=422)
        used = sum(drift.feedback(i.id, i.labels, n_classes) for i in body.feedback)
        total = sum(len(i.labels) for i in body.feedback)
        return JSONResponse(FeedbackAccepted(labels=total, retune_labels=used).model_dump())
