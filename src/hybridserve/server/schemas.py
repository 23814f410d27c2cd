"""Request and response bodies of the HTTP API (they are also what the OpenAPI page shows)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: KServe v2 datatypes this server accepts: numeric for tensor families, BYTES (strings, in JSON
#: bodies) for text families.
Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: one line saying what went wrong."""

    error: str = Field(examples=["inputs: expected shape (N, 28, 28) with the batch first"])


class AnswerModel(BaseModel):
    """The cascade's answer for one input."""

    label: int = Field(description="class index")
    label_name: str = Field(description="class name from the family's labels")
    confidence: float = Field(description="calibrated confidence of the answering model")
    model: str = Field(description="the model whose answer stood")
    path: list[str] = Field(description="models the input visited, in order")
    latency_ms: float = Field(description="time from acceptance to this input's answer")


class PredictRequest(BaseModel):
    """Simple form: a batch of inputs, each a nested list of numbers or a base64 PNG (tensor
    families), or a string (text families)."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[list[Any] | str] = Field(
        description=(
            "one entry per input: a nested list with the family's input shape (pixel values "
            "0-255 for image families) or a base64-encoded PNG string; for a text family "
            "(input_kind: text) one string of text per input"
        ),
    )


class PredictResponse(BaseModel):
    """One answer per input, in input order."""

    model: str = Field(description="the family served")
    answers: list[AnswerModel]
    policy_version: int = Field(0, description="the policy version that routed every answer")
    id: str | None = Field(
        None, description="the request's id (drift handling on): POST /v1/feedback names it"
    )


class TensorInput(BaseModel):
    """A KServe v2 input tensor; ``data`` is row-major, flat or nested; batch dimension first."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="tensor name (any; the family has one input)")
    shape: list[int] = Field(description="[N, *family input shape]; [N] for a text family")
    datatype: Datatype
    data: list[Any] = Field(
        description="the values, flat or nested, row-major; a BYTES tensor's are strings"
    )
    parameters: dict[str, Any] | None = None


class RequestedOutput(BaseModel):
    """A KServe v2 requested output (all outputs are always returned)."""

    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """KServe v2 / Triton inference request (JSON tensor form)."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[TensorInput] = Field(description="exactly one tensor: the batch of inputs")
    outputs: list[RequestedOutput] | None = None


class TensorOutput(BaseModel):
    """A KServe v2 output tensor."""

    name: str
    shape: list[int]
    datatype: Literal["INT64", "FP64", "BYTES"]
    data: list[Any]


class InferResponse(BaseModel):
    """KServe v2 response: outputs ``label``, ``label_name``, ``confidence``, ``model``; answers."""

    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[TensorOutput]
    answers: list[AnswerModel] = Field(description="the same answers, one object per input")
    policy_version: int = Field(0, description="the policy version that routed every answer")
    request_id: str | None = Field(
        None, description="the server's id of the request (drift handling on): for feedback"
    )


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """KServe v2 model metadata (``-1`` marks the batch dimension)."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class Liveness(BaseModel):
    live: bool


class Readiness(BaseModel):
    ready: bool
    detail: str | None = None


class PolicyResponse(BaseModel):
    """The served policy (as in ``policy-*.json``) and the engine's positions and replicas."""

    family: str
    version: int = Field(description="the policy version new requests are routed by")
    policy: dict[str, Any]
    engine: dict[str, Any]
    drift: dict[str, Any] | None = Field(
        None, description="drift handling's state (None: off; serve --drift turns it on)"
    )


class PolicySwapped(BaseModel):
    """A policy swapped in by ``POST /v1/policy``: its version, chain and saved file."""

    version: int = Field(description="routes every request accepted from now on")
    chain: list[str]
    file: str | None = Field(description="where it was saved in the workdir (None: no workdir)")
