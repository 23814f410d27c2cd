"""A generative family: text generators in cascade order, declared in the same YAML as classifiers.

A family YAML with ``task: generate`` lists causal LMs saved in local directories::

    family: my-lms
    task: generate
    data: {val: val.jsonl, test: test.jsonl}   # optional; {prompt, answer} lines
    scorer: exact                              # optional: exact (default), next-word, mod:fn
    max_new_tokens: 32                         # optional: generation budget per request
    chat_template: "{% for m in messages %}..." # optional Jinja; default: the giant's tokenizer's
    models:                                    # cascade order, smallest first, the giant last
      - name: small
        loader: hf-causal-lm                   # a transformers causal LM + tokenizer directory
        path: models/small                     # relative to the YAML; never downloaded
        dtype: float32                         # optional: float32 (default), bfloat16, float16

Classifier-only steps refuse such a file by its ``task`` (``family.read_config``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hybridserve.errors import HybridServeError
from hybridserve.models.generative import GenerativeModel
from hybridserve.yamlio import read_mapping, unique_names, validation_message


class GenerativeModelEntry(BaseModel):
    """One model of a generative family YAML file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    loader: Literal["hf-causal-lm"] = Field(
        description="hf-causal-lm: a Hugging Face causal LM and its tokenizer in `path`"
    )
    path: str = Field(min_length=1, description="local model directory, relative to the YAML")
    dtype: Literal["float32", "bfloat16", "float16"] | None = None


class GenerativeDataEntry(BaseModel):
    """Validation and test prompts: JSONL paths with ``{prompt, answer}`` per line."""

    model_config = ConfigDict(extra="forbid")

    val: str
    test: str


class GenerativeFamilyConfig(BaseModel):
    """A generative family YAML file, validated."""

    model_config = ConfigDict(extra="forbid")

    family: str = Field(min_length=1)
    task: Literal["generate"]
    data: GenerativeDataEntry | None = None
    scorer: str = Field(
        default="exact",
        description="exact: the stripped output equals the answer; next-word: its first word "
        "does; or a registered scorer's name, or module:function (text, answer) -> bool",
    )
    max_new_tokens: int = Field(default=32, ge=1, le=4096)
    chat_template: str | None = Field(
        default=None,
        min_length=1,
        description="Jinja chat template for /v1/chat/completions (default: the giant's "
        "tokenizer's, if it has one)",
    )
    models: list[GenerativeModelEntry] = Field(min_length=2)

    @field_validator("scorer")
    @classmethod
    def _known_scorer(cls, value: str) -> str:
        from hybridserve.models.scorers import SCORERS

        if value not in SCORERS and not (value.count(":") == 1 and all(value.split(":"))):
            raise ValueError(
                f"unknown scorer {value!r}; known: {sorted(SCORERS)} or module:function"
            )
        return value

    @field_validator("models")
    @classmethod
    def _unique_names(cls, value: list[GenerativeModelEntry]) -> list[GenerativeModelEntry]:
        return unique_names(value)


@dataclass(frozen=True)
class GenerativeFamily:
    """Generators in cascade order (the last is the giant) and where their prompts live."""

    name: str
    models: tuple[GenerativeModel, ...]
    data_paths: dict[str, Path] = field(default_factory=dict, compare=False)
    scorer: str = "exact"
    max_new_tokens: int = 32
    #: the YAML's chat template; ``chat_prompt`` falls back to the giant's tokenizer's
    chat_template: str | None = None

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.models)

    @property
    def chats(self) -> bool:
        """The family has a chat template (its own, or the giant's tokenizer's)."""
        return (self.chat_template or self.giant.chat_template) is not None

    def chat_prompt(self, messages: list[dict[str, str]]) -> str:
        """The one prompt every chain model gets for a chat: rendered once, by the giant's
        tokenizer, with the family's template (a cascade routes one prompt)."""
        if not self.chats:
            raise HybridServeError(f"family {self.name!r} has no chat template")
        return self.giant.render_chat(messages, self.chat_template)

    @property
    def giant(self) -> GenerativeModel:
        return self.models[-1]

    def model(self, name: str) -> GenerativeModel:
        for m in self.models:
            if m.name == name:
                return m
        raise HybridServeError(f"family {self.name!r} has no model {name!r}; it has {self.names}")


def read_generative_config(path: Path) -> GenerativeFamilyConfig:
    """Parse and validate a generative family YAML; errors name the file and the field."""
    path = Path(path)
    raw = read_mapping(path)
    if raw.get("task") != "generate":
        raise HybridServeError(
            f"{path}: family {raw.get('family')!r} is not generative (it needs 'task: generate')"
        )
    try:
        return GenerativeFamilyConfig.model_validate(raw)
    except ValidationError as err:
        raise HybridServeError(validation_message(path, err)) from err


def build_generative_family(
    cfg: GenerativeFamilyConfig, base: Path, device: str = "cpu"
) -> GenerativeFamily:
    """Load every model of a validated config from its local directory onto ``device``."""
    # Imported here: the transformers dependency is the optional 'gen' extra.
    from hybridserve.models.hf_causal import HFCausalLM

    models = tuple(
        HFCausalLM(base / entry.path, name=entry.name, device=device, dtype=entry.dtype)
        for entry in cfg.models
    )
    return family_of(cfg, base, models)


def family_of(
    cfg: GenerativeFamilyConfig, base: Path, models: tuple[GenerativeModel, ...]
) -> GenerativeFamily:
    """The family ``cfg`` declares, with ``models`` (all of its models, or a chain's)."""
    data = {"val": cfg.data.val, "test": cfg.data.test} if cfg.data else {}
    return GenerativeFamily(
        name=cfg.family,
        models=models,
        data_paths={split: (base / p).resolve() for split, p in data.items()},
        scorer=cfg.scorer,
        max_new_tokens=cfg.max_new_tokens,
        chat_template=cfg.chat_template,
    )


def load_generative_family(config: Path, device: str = "cpu") -> GenerativeFamily:
    """Load a user's generative family from its YAML ``config``."""
    path = Path(config)
    return build_generative_family(read_generative_config(path), path.parent, device)
