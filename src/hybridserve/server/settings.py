"""Settings of the HTTP layer (the engine has its own ``EngineConfig``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class ServerSettings(BaseModel):
    """Access control, body limits and start-up behaviour of one app."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: SecretStr | None = Field(
        None, description="bearer token required on inference and policy routes (None: open)"
    )
    open_health: bool = Field(
        True, description="health and metrics routes answer without the token"
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1, description="larger request bodies are refused with 413"
    )
    body_read_timeout_s: float = Field(
        30.0,
        gt=0,
        description="a request body not fully received this long after the headers gets 408",
    )
    max_inflight_body_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description="request body bytes held at once across all connections; a body that "
        "would go past it gets 503 (the cap is never below max_body_bytes)",
    )
    retry_after_s: int = Field(1, ge=0, description="Retry-After of 503 answers")
    start_in_background: bool = Field(
        True,
        description="warm the engine up after the server starts (liveness answers at once, "
        "readiness once warm); False warms up before the first request is taken",
    )
    workdir: Path | None = Field(
        None,
        description="POST /v1/policy saves live policies here and reads {path} only from here "
        "(None: it saves nothing and takes policy bodies only)",
    )
