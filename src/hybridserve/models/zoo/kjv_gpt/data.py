"""The prompt files shipped with the package: validation, test and a shift set.

Built once from the corpora by :func:`build_prompt_files` (seeded, so rebuilding gives the same
bytes) and read by calibrate/tune without the corpus packages installed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from hybridserve.models.zoo.kjv_gpt.corpus import (
    FORTUNES_DIR,
    load_chapters,
    load_fortunes,
    split_chapters,
)
from hybridserve.models.zoo.kjv_gpt.prompts import (
    Prompt,
    make_prompts,
    read_jsonl_gz,
    write_jsonl_gz,
)

PROMPT_FILES = ("val", "test", "shift")
N_PROMPTS = 5000
#: fortunes are short: a shorter minimum context keeps enough of them eligible
SHIFT_MIN_CHARS = 60


def data_dir() -> Path:
    return Path(str(resources.files("hybridserve.models.zoo.kjv_gpt") / "data"))


def prompt_path(name: str, directory: Path | None = None) -> Path:
    return (directory or data_dir()) / f"{name}.jsonl.gz"


def load_prompts(name: str, directory: Path | None = None) -> list[Prompt]:
    """The shipped ``val``, ``test`` or ``shift`` prompts."""
    return read_jsonl_gz(prompt_path(name, directory))


def build_prompt_files(
    directory: Path | None = None,
    *,
    seed: int = 0,
    n: int = N_PROMPTS,
    fortunes_dir: Path = FORTUNES_DIR,
) -> dict[str, int]:
    """Write val/test prompts from the held-out chapters and shift prompts from fortunes."""
    splits = split_chapters(load_chapters(), seed)
    counts = {}
    for i, name in enumerate(("val", "test")):
        docs = [(c.key, c.text) for c in splits[name]]  # type: ignore[index]
        prompts = make_prompts(docs, n, seed + 1 + i)
        write_jsonl_gz(prompts, prompt_path(name, directory))
        counts[name] = len(prompts)
    shift = make_prompts(load_fortunes(fortunes_dir), n, seed + 3, min_chars=SHIFT_MIN_CHARS)
    write_jsonl_gz(shift, prompt_path("shift", directory))
    counts["shift"] = len(shift)
    return counts
