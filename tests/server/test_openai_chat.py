"""``/v1/chat/completions`` of a generative cascade with a chat template, via the ``openai`` client.

The chat becomes one prompt (the family's template, rendered once by the giant's tokenizer) that
the cascade completes as ``/v1/completions`` would: same text, same answering model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from hybridserve.models.generative_family import (
    GenerativeFamily,
    load_generative_family,
    read_generative_config,
)
from models.tiny_lms import char_tokenizer
from server.gen_harness import (
    ALWAYS_ESCALATE,
    FAMILY,
    load_family,
    make_engine,
    running_server,
    save_family,
)

pytestmark = pytest.mark.integration

TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "in the beginning"},
]


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> GenerativeFamily:
    root = tmp_path_factory.mktemp("chat-lms")
    save_family(root)
    return dataclasses.replace(load_family(root), chat_template=TEMPLATE)


@pytest.fixture
def client(family: GenerativeFamily) -> Iterator[openai.OpenAI]:
    with running_server(make_engine(family, ALWAYS_ESCALATE)) as url:
        yield openai.OpenAI(base_url=url, api_key="unused", max_retries=0)


def test_a_chat_is_completed_as_its_rendered_prompt(
    client: openai.OpenAI, family: GenerativeFamily
) -> None:
    prompt = family.chat_prompt(MESSAGES)
    assert prompt == "system: be brief\nuser: in the beginning\nassistant:"
    chat = client.chat.completions.create(model=FAMILY, messages=MESSAGES, max_tokens=5)  # type: ignore[arg-type]
    plain = client.completions.create(model=FAMILY, prompt=prompt, max_tokens=5)
    assert chat.object == "chat.completion" and chat.id.startswith("chatcmpl-")
    [c] = chat.choices
    assert c.message.role == "assistant" and c.message.content == plain.choices[0].text
    assert c.finish_reason == plain.choices[0].finish_reason
    ext = c.model_extra["hybridserve"]  # type: ignore[index]
    assert ext["model"] == "big" and ext["path"] == ["small", "big"]
    assert chat.usage is not None and chat.usage.prompt_tokens == plain.usage.prompt_tokens  # type: ignore[union-attr]


def test_a_streamed_chat_sends_the_reply_then_done(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(model=FAMILY, messages=MESSAGES, max_tokens=4)  # type: ignore[arg-type]
    chunks = list(
        client.chat.completions.create(
            model=FAMILY,
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=4,
            stream=True,
        )
    )
    assert chunks and all(c.object == "chat.completion.chunk" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_chat_logprobs_come_in_the_chat_shape(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model=FAMILY,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=3,
        logprobs=True,
        top_logprobs=2,
    )
    content = r.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None and "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0.0 and 1 <= len(t.top_logprobs) <= 2


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"top_logprobs": 2}, "top_logprobs"),
    ],
)
def test_what_cannot_be_served_is_refused_with_400(
    client: openai.OpenAI, extra: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=FAMILY, messages=MESSAGES, **extra)  # type: ignore[arg-type, call-overload]
    assert err.value.body["param"] == param  # type: ignore[index]


def test_image_content_is_refused_and_text_parts_are_joined(client: openai.OpenAI) -> None:
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    with pytest.raises(openai.BadRequestError, match="text content"):
        client.chat.completions.create(
            model=FAMILY,
            messages=[{"role": "user", "content": image}],  # type: ignore[list-item]
        )
    parts = [{"type": "text", "text": "in the "}, {"type": "text", "text": "beginning"}]
    joined = client.chat.completions.create(
        model=FAMILY,
        messages=[{"role": "user", "content": parts}],  # type: ignore[list-item]
        max_tokens=3,
    )
    plain = client.chat.completions.create(
        model=FAMILY, messages=[{"role": "user", "content": "in the beginning"}], max_tokens=3
    )
    assert joined.choices[0].message.content == plain.choices[0].message.content


def test_the_template_comes_from_the_yaml_else_the_giants_tokenizer(tmp_path: Path) -> None:
    yaml = save_family(tmp_path)
    assert not load_generative_family(yaml).chats  # the tiny tokenizers have no template
    text = yaml.read_text()
    yaml.write_text(text.replace("models:", f"chat_template: {TEMPLATE!r}\nmodels:"))
    cfg = read_generative_config(yaml)
    assert cfg.chat_template == TEMPLATE
    fam = load_generative_family(yaml)
    assert fam.chats and fam.chat_prompt(MESSAGES).endswith("assistant:")
    # without the YAML's, the giant's tokenizer's own template is used
    yaml.write_text(text)
    tok = char_tokenizer()
    tok.chat_template = "{{ messages[-1]['content'] }}|"
    tok.save_pretrained(tmp_path / "big")
    fam = load_generative_family(yaml)
    assert fam.chats and fam.chat_prompt(MESSAGES) == "in the beginning|"
