"""A generative engine as the load generator sees it: one prompt index in, one judged answer out.

``bench/loadgen.py`` drives anything with ``async predict(batch)`` whose answers carry ``label``,
``model`` and ``path``, and counts an answer right when its label equals the request's. A
generative request's input is the index of its test prompt; ``CompletionTarget`` sends that
prompt through ``GenerativeEngine.complete`` (the engine ``hybridserve serve`` runs, routing by
the policy's one ``decide``) and answers label 1 when the family's scorer accepts the
generated text, else 0, so the bench asks every request for label 1. It also counts tokens:
those of the answers that stood (what a client receives) and, through the engine's observer,
every token each model generated, escalated requests included (the work the energy pays for).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt

from hybridserve.data.prompts import PromptRecord
from hybridserve.models.generative import GenerationParams
from hybridserve.models.scorers import Scorer
from hybridserve.runtime.genengine import GenerativeEngine, GenerativeObserver

#: The label a request asks for: its answer is right (see the module docstring).
RIGHT = 1


@dataclass
class TokenCount:
    """One system's tokens over all its runs."""

    #: requests answered (the standing answer's tokens were counted)
    answered: int = 0
    #: tokens of the standing answers
    answer_tokens: int = 0
    #: tokens each chain model generated, standing or passed on
    generated: dict[str, int] = field(default_factory=dict)

    def per_request(self) -> dict[str, Any]:
        """``tokens_per_request`` and ``generated_tokens_per_request`` (per model) for a report."""
        n = self.answered
        return {
            "tokens_per_request": self.answer_tokens / n if n else None,
            "generated_tokens_per_request": {m: t / n for m, t in self.generated.items()}
            if n
            else {},
        }


class _TokenObserver(GenerativeObserver):
    """Adds each model call's generated tokens to a ``TokenCount`` (on the event loop)."""

    def __init__(self, count: TokenCount) -> None:
        self._count = count

    def on_tokens(self, model: str, tokens: int) -> None:
        self._count.generated[model] = self._count.generated.get(model, 0) + tokens


class CompletionTarget:
    """``engine`` behind the load generator's interface; starts and stops it as a context."""

    def __init__(
        self,
        engine: GenerativeEngine,
        prompts: Sequence[PromptRecord],
        scorer: Scorer,
        params: GenerationParams,
        count: TokenCount,
    ) -> None:
        self._engine = engine
        self._prompts = prompts
        self._scorer = scorer
        self._params = params
        self._count = count
        engine.set_observer(_TokenObserver(count))

    @property
    def devices(self) -> list[str]:
        """The devices of the chain's models (each metered once by the bench)."""
        family = self._engine.family
        return list(dict.fromkeys(family.model(n).device for n in self._engine.chain))

    async def __aenter__(self) -> CompletionTarget:
        await self._engine.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._engine.stop()

    async def predict(self, batch: npt.NDArray[Any]) -> list[dict[str, Any]]:
        """One answer per prompt index in ``batch`` (the load generator sends one at a time)."""
        out = []
        for i in batch:
            record = self._prompts[int(i)]
            done = await self._engine.complete(record.prompt, self._params)
            right = self._scorer.correct(done.generation.text, record.answer)
            self._count.answered += 1
            self._count.answer_tokens += len(done.generation.token_ids)
            out.append({"label": RIGHT if right else 0, "model": done.model, "path": done.path})
        return out
