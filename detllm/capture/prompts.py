"""Prompts: the built-in set, and prompt files.

A prompt file is read as JSON Lines when its name ends in ``.jsonl`` or
``.ndjson``, and as text otherwise:

- text: one prompt per line (the line without its line ending); blank lines are
  skipped; prompts get the ids ``p1``, ``p2``, ... in order.
- JSON Lines: one object per line with ``prompt`` (text) or ``input_ids`` (token
  ids), and optionally ``id`` (defaults to ``p<n>``, n counting prompts from 1);
  blank lines are skipped; other fields are an error, so that a typo is not lost.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import msgspec

from .._io import open_regular
from .._json_errors import DECODE_ERRORS, REPEATED_MEMBER, duplicate_member, explain
from ..errors import InputError, PromptFileError, UsageError
from ..rundir import prompt_lines as prompt_lines  # writing a prompt file: the directory format's
from .backend import Prompt

DEFAULT_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):",
    "The three primary colours are",
    "Translate to French: Good morning, how are you?",
    "Water boils at",
    "Le café est fermé le dimanche, mais",
    "A short poem about the moon 🌙:",
)
"""Used when no prompt is given: short and long, code, accents and an emoji, so that
batches need padding and byte-level tokens are exercised."""

JSONL_SUFFIXES = (".jsonl", ".ndjson")
FIELDS = ("id", "prompt", "input_ids")


class PromptList(list[Prompt]):
    """Prompts checked once: at least one, each id non-empty and unique, each with exactly
    one of text and token ids. A run or a check passes this list from where the prompts were
    read to every capture, which takes it as it is instead of checking it again
    (:func:`checked_prompts`). It is a list, equal to the plain list of the same prompts;
    nothing changes it once made."""


def checked_prompts(prompts: Sequence[Prompt]) -> PromptList:
    """``prompts`` checked, as a :class:`PromptList` (a list already checked passes as it is)."""
    if isinstance(prompts, PromptList):
        return prompts
    if not prompts:
        raise UsageError("no prompts to run")
    seen: set[str] = set()
    for prompt in prompts:
        if not prompt.id:
            raise UsageError("a prompt id must not be empty")
        if prompt.id in seen:
            raise UsageError(f"duplicate prompt id {prompt.id!r}")
        if (prompt.text is None) == (prompt.token_ids is None):
            raise UsageError(f"prompt {prompt.id!r} needs exactly one of text and token ids")
        seen.add(prompt.id)
    return PromptList(prompts)


def prompts_from_texts(texts: Iterable[str]) -> list[Prompt]:
    """Texts -> prompts with ids ``p1``, ``p2``, ..."""
    return [Prompt(id=f"p{n}", text=text) for n, text in enumerate(texts, 1)]


def load_prompt_file(path: str | os.PathLike[str]) -> PromptList:
    """Read a prompt file; a bad line raises :class:`~detllm.errors.PromptFileError`.
    The prompts come back checked (:func:`checked_prompts`), for every capture after."""
    name = os.fspath(path)
    try:
        with open_regular(name, "prompt") as file:
            data = file.read()
    except OSError as exc:
        raise InputError(f"{name}: {exc.strerror or exc}") from None
    lines = data.split(b"\n")
    if name.endswith(JSONL_SUFFIXES):
        prompts = _jsonl(name, lines)
    else:
        prompts = _text(name, lines)
    if not prompts:
        raise PromptFileError(name, 0, "-", "no prompts in this file")
    return checked_prompts(prompts)


def _text(name: str, lines: list[bytes]) -> list[Prompt]:
    texts = []
    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as exc:
            raise PromptFileError(name, number, *explain(exc, raw)) from None
        if text.strip():
            texts.append(text)
    return prompts_from_texts(texts)


def _jsonl(name: str, lines: list[bytes]) -> list[Prompt]:
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            value = msgspec.json.decode(raw)
        except DECODE_ERRORS as exc:
            raise PromptFileError(name, number, *explain(exc, raw)) from None
        repeated = duplicate_member(raw)
        if repeated is not None:
            raise PromptFileError(name, number, repeated, REPEATED_MEMBER)
        prompt = _prompt(name, number, value, len(prompts) + 1)
        if prompt.id in seen:
            raise PromptFileError(name, number, "id", f"duplicate prompt id {prompt.id!r}")
        seen.add(prompt.id)
        prompts.append(prompt)
    return prompts


def _prompt(name: str, number: int, value: object, index: int) -> Prompt:
    def fail(field: str, problem: str) -> PromptFileError:
        return PromptFileError(name, number, field, problem)

    if not isinstance(value, dict):
        raise fail("-", f"expected a JSON object, got {type(value).__name__}")
    unknown = [key for key in value if key not in FIELDS]
    if unknown:
        raise fail(unknown[0], f"unknown field (fields: {', '.join(FIELDS)})")
    prompt_id = value.get("id", f"p{index}")
    if isinstance(prompt_id, int) and not isinstance(prompt_id, bool):
        prompt_id = str(prompt_id)  # ids in a trace are strings
    if not isinstance(prompt_id, str) or not prompt_id:
        raise fail("id", "must be a non-empty string or an integer")
    if ("prompt" in value) == ("input_ids" in value):
        raise fail("-", 'needs exactly one of "prompt" and "input_ids"')
    if "prompt" in value:
        text = value["prompt"]
        if not isinstance(text, str) or not text:
            raise fail("prompt", "must be a non-empty string")
        return Prompt(id=prompt_id, text=text)
    ids = value["input_ids"]
    if not isinstance(ids, list) or not ids:
        raise fail("input_ids", "must be a non-empty list of token ids")
    for i, token in enumerate(ids):
        if not isinstance(token, int) or isinstance(token, bool) or token < 0:
            raise fail(f"input_ids[{i}]", f"must be a token id (an integer >= 0), got {token!r}")
    return Prompt(id=prompt_id, token_ids=tuple(ids))
