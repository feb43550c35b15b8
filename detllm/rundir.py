"""The run, check and pack directory format (``formats/run-directory.md``), version 1.

One home for what ``detllm run``, ``check`` and ``pack`` write and what ``report``,
``pack`` and ``bisect`` read back: the file names, the records of ``run_config.json``
(the settings asked for, the prompts, a check's plan of traces) and its one reader,
which checks the format and the major version and names the file and the field of
any problem. Needs only orjson and msgspec: capture, report and pack all import it.
``formats/run-directory.schema.json`` is generated from these records
(:func:`detllm._schema.run_config_schema`).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

import msgspec
import orjson

from ._json_errors import explain_validation
from ._flags import Flag, arguments_of
from .errors import InputError, RunDirectoryError, UsageError
from .trace import Decoding

RUN_CONFIG_FORMAT = "detllm.run_config"
RUN_CONFIG_VERSION = "1.0"
SUPPORTED_MAJOR = 1
"""The major version of ``run_config.json`` this reader knows; another is refused."""

RUN_CONFIG_FILE = "run_config.json"
ENV_FILE = "env.json"
DETERMINISM_FILE = "determinism_applied.json"
TRACE_FILE = "trace.jsonl"
"""A run directory's trace."""
TRACES_DIR = "traces"
"""A check directory's traces."""
ISOLATED_DIR = "isolated"
"""Where each isolated repeat's own run directory goes (its trace moves to ``traces/``)."""
PROMPT_FILE = "prompts.jsonl"
"""The prompts as a prompt file, in a pack and under ``isolated/``."""


class Prompt(msgspec.Struct, frozen=True):
    """One input: an id unique within a run, and its text or its token ids.

    (A Struct rather than a dataclass: created as cheaply, and far cheaper to define,
    which ``import detllm`` pays.)
    """

    id: str
    text: str | None = None
    token_ids: tuple[int, ...] | None = None


def prompt_record(prompt: Prompt) -> dict[str, Any]:
    """A prompt as ``run_config.json`` and prompt files hold it: ``id`` and ``prompt`` or ``input_ids``."""
    if prompt.text is not None:
        return {"id": prompt.id, "prompt": prompt.text}
    return {"id": prompt.id, "input_ids": list(prompt.token_ids or ())}


def prompt_lines(prompts: Iterable[Prompt]) -> bytes:
    """Prompts as a JSON Lines prompt file: ``id`` and ``prompt`` or ``input_ids``."""
    return b"".join(msgspec.json.encode(prompt_record(p)) + b"\n" for p in prompts)


class RunSettings(msgspec.Struct, kw_only=True, frozen=True):
    """Everything ``detllm run`` was asked to do: ``config`` in ``run_config.json``.

    The capture side extends it (:class:`detllm.capture.runner.RunConfig`) with how
    to load a backend for these settings; readers of a directory need only this.
    """

    model: str
    backend: str = "hf"
    tokenizer: str | None = None
    revision: str | None = None
    dtype: str = "float32"
    device: str = "auto"
    mode: str = "best-effort"
    seed: int = 0
    threads: int | None = None
    max_new_tokens: int = 32
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int = 1
    composition: str = "in-order"
    top_logprobs: int = 5
    logprobs: str = "raw"
    options: dict[str, Any] = {}
    redact: list[str] = []

    def arguments(self) -> list[str]:
        """Command-line arguments that ask ``detllm run`` (or ``check``) for these settings.

        Settings at their defaults are left out, except the few a reader of the
        command wants to see; ``batch_size`` and ``composition`` are left to the caller.
        """
        return arguments_of(self, RUN_FLAGS, _SETTING_DEFAULTS)

    def decoding(self) -> Decoding:
        return Decoding(
            do_sample=self.do_sample,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
        )


def option_text(value: Any) -> str:
    """A backend option's value as ``--backend-option`` reads it back (JSON when it parses)."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
    return json.dumps(value)


def backend_options(items: Sequence[str]) -> dict[str, Any]:
    """``--backend-option KEY=VALUE`` arguments as the options they set (VALUE as JSON when it parses)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--backend-option {item!r}: expected KEY=VALUE")
        try:
            options[key] = json.loads(text)
        except ValueError:
            options[key] = text
    return options


def _names(value: str) -> list[str]:
    return [n.strip() for n in value.split(",") if n.strip()]


RUN_FLAGS: tuple[Flag, ...] = (
    # model
    Flag("model", "--model", str, None, "a model directory, a built-in model ({models}), or a hub id already in the local cache",
         group="model", always=True, required=True),
    Flag("tokenizer", "--tokenizer", str, None, "tokenizer directory or id (default: the model's)", group="model"),
    Flag("revision", "--revision", str, None, "hub revision of a cached model", group="model"),
    Flag("backend", "--backend", str, None, "inference backend (default: %(default)s)", group="model", always=True),
    Flag("dtype", "--dtype", str, None,
         "float32, bfloat16 or float16 (default: float32; against a server, which does not report it: unknown)",
         group="model", always=True),
    Flag("device", "--device", str, None, "cpu, cuda, cuda:N or auto (default: %(default)s)", group="model", always=True),
    Flag("options", "--backend-option", str, "KEY=VALUE",
         "a backend setting, recorded in the trace header (hf: attn_implementation=eager|sdpa, eos_token_ids=[0]; "
         "vllm: see docs/vllm.md); VALUE is read as JSON when it parses",
         group="model", repeat=True, parse=backend_options,
         words=lambda options: [f"{key}={option_text(value)}" for key, value in options.items()]),
    # decoding
    Flag("max_new_tokens", "--max-new-tokens", int, None, "default: %(default)s", group="decoding", always=True),
    Flag("do_sample", "--do-sample", None, None, "sample instead of greedy decoding", group="decoding"),
    Flag("temperature", "--temperature", float, None, "sampling only (default: %(default)s)", group="decoding"),
    Flag("top_p", "--top-p", float, None, "sampling only (default: %(default)s)", group="decoding"),
    Flag("top_k", "--top-k", int, None, "sampling only; 0 turns it off (default: %(default)s)", group="decoding"),
    Flag("seed", "--seed", int, None, "seeds the random generators and sampling (default: %(default)s)", group="decoding"),
    # recording
    Flag("top_logprobs", "--top-logprobs", int, "K", "alternatives recorded per step (default: %(default)s)",
         group="recording"),
    Flag("logprobs", "--logprobs", str, None,
         "raw: the model's log-softmax; processed: after temperature, top-k, top-p (default: %(default)s)",
         choices=("raw", "processed"), group="recording"),
    Flag("mode", "--mode", str, None, "determinism controls: strict refuses to run without all of them (default: %(default)s)",
         group="recording", always=True),
    Flag("threads", "--threads", int, None, "torch CPU threads (default: leave as is, and record it)", group="recording"),
    Flag("redact", "--redact", str, "WHAT", "facts left out of env.json: {redactions}, or all", default="",
         group="recording", parse=_names, words=lambda names: [",".join(names)] if names else []),
)  # fmt: skip
"""The capture settings' flags, in the order a command line names them, each in its help group
(``model``, ``decoding``, ``recording``). A help text's ``{...}`` is filled by the command line
from the capture layer (the built-in models, the redactions); ``backend``'s and ``mode``'s
choices too. ``batch_size`` and ``composition`` are each command's own."""

_SETTING_DEFAULTS = {name: getattr(RunSettings(model=""), name) for name in RunSettings.__struct_fields__}


class PlannedRun(msgspec.Struct, frozen=True, kw_only=True):
    """One trace a check records, as ``run_config.json`` lists it."""

    name: str
    path: str
    """Relative to the check directory."""
    role: Literal["repeat", "sweep", "concurrency"]
    batch_size: int
    composition: str
    repeat: int | None = None
    isolated: bool = False
    concurrency: int | None = None
    """Requests in flight (a server check's runs); None for a model run in process."""


class CheckPlan(msgspec.Struct, frozen=True, kw_only=True):
    """The ``check`` member of a check's ``run_config.json``."""

    runs: int
    batch_sizes: list[int]
    compositions: list[str]
    isolate: bool = False
    tier: Literal[1, 2] = 1
    atol: float = 0.0
    traces: list[PlannedRun]
    concurrency: list[int] | None = None
    """A server check's levels (requests in flight); the first is the repeats'."""


def trace_name(batch_size: int, composition: str, repeat: int | None = None) -> str:
    """``bs1-run0``, ``bs8-in-order``, ``bs8-reversed``, ``bs8-shuffled-3``."""
    if repeat is not None:
        return f"bs{batch_size}-run{repeat}"
    return f"bs{batch_size}-{composition.replace(':', '-')}"


def plan_runs(runs: int, batch_sizes: Sequence[int], compositions: Sequence[str], isolate: bool = False) -> list[PlannedRun]:
    """The traces of a check, in the order they are recorded: the repeats at the first
    batch size, then each batch size's in-order run and its other compositions."""
    planned = []
    first = batch_sizes[0]
    for repeat in range(runs):
        name = trace_name(first, "in-order", repeat)
        planned.append(PlannedRun(name=name, path=f"{TRACES_DIR}/{name}.jsonl", role="repeat", batch_size=first,
                                  composition="in-order", repeat=repeat, isolated=isolate))
    for size in batch_sizes:
        wanted = ([] if size == first else ["in-order"]) + (list(compositions) if size > 1 else [])
        for composition in wanted:
            name = trace_name(size, composition)
            planned.append(PlannedRun(name=name, path=f"{TRACES_DIR}/{name}.jsonl", role="sweep", batch_size=size,
                                      composition=composition))
    return planned


def run_config_document(config: RunSettings, prompts: Sequence[Prompt], argv: Sequence[str] | None) -> dict[str, Any]:
    """The content of ``run_config.json``: the settings, the prompts, the command."""
    return {
        "format": RUN_CONFIG_FORMAT,
        "version": RUN_CONFIG_VERSION,
        "command": list(argv) if argv is not None else None,
        "config": msgspec.to_builtins(config),
        "prompts": [prompt_record(p) for p in prompts],
    }


class PromptEntry(msgspec.Struct, frozen=True):
    """One of ``prompts``: ``id`` and exactly one of ``prompt`` and ``input_ids``."""

    id: str
    prompt: str | None = None
    input_ids: list[int] | None = None


class RunConfigDocument(msgspec.Struct, frozen=True, kw_only=True):
    """``run_config.json``, as read. ``pack`` and ``sweep`` are read as plain objects."""

    format: str
    version: str
    command: list[str] | None = None
    config: RunSettings
    prompts: list[PromptEntry] = []
    check: CheckPlan | None = None
    pack: dict[str, Any] | None = None
    sweep: dict[str, Any] | None = None


class RunConfigFile(msgspec.Struct, frozen=True, kw_only=True):
    """A directory's ``run_config.json``, read and checked."""

    path: Path
    document: dict[str, Any]
    """The JSON object as written, unknown members included, but for ``prompts`` (read
    into :attr:`prompts` alone: ``pack`` copies the rest)."""
    settings: RunSettings
    """Of the type the reader was asked for (:class:`RunSettings` or a subclass)."""
    prompts: list[Prompt] | StreamedPrompts
    """Every prompt; read with ``stream_prompts``, decoded anew on each pass over them."""
    command: list[str] | None
    check: CheckPlan | None
    """The plan of a check directory's traces; None for a run directory."""


_members = msgspec.json.Decoder(dict[str, msgspec.Raw])
_entries = msgspec.json.Decoder(list[PromptEntry])
_entry = msgspec.json.Decoder(PromptEntry)

_ELEMENT = re.compile(rb'\s*+(\{(?:[^{}"]++|"(?:[^"\\]++|\\.)*+")*+\})\s*+([,\]])', re.DOTALL)
"""One prompt of the ``prompts`` array, an object without nested objects, and what follows it."""


class StreamedPrompts:
    """The prompts of a ``run_config.json``, read again from the file on each pass, one at a
    time: a million of them need not be in memory at once (``pack`` keeps a few)."""

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self._count = count

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Prompt]:
        where = str(self.path)
        listed = _read_members(self.path)[0].pop("prompts", None)
        yield from _checked(where, _each_entry(where, listed))


def _read_members(path: Path) -> tuple[dict[str, msgspec.Raw], bytes]:
    """The members of ``run_config.json`` undecoded, and the file's bytes."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (give a run or check directory)") from None
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    try:
        return _members.decode(data), data
    except msgspec.DecodeError:
        _refuse(str(path), data)


def _refuse(where: str, data: bytes) -> NoReturn:
    """The error for a file whose members cannot be read."""
    try:  # not an object of members: orjson words the error and gives its line
        whole = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RunDirectoryError(where, exc.lineno, "-", f"not valid JSON ({exc.msg})") from None
    if not isinstance(whole, dict):
        raise RunDirectoryError(where, 1, "-", "not a detLLM run_config.json (a JSON object is required)") from None
    raise RunDirectoryError(where, 1, "-", "not valid JSON (its members cannot be read)") from None


def _each_entry(where: str, listed: msgspec.Raw | None) -> Iterator[PromptEntry]:
    """The entries of the ``prompts`` array, decoded one at a time.

    The array is cut into its objects by a pattern. One it cannot cut (an entry holding
    an object, or not an object) is decoded as a whole list instead, and an entry of the
    wrong type raises the error the whole list's decoding gives, naming the field."""
    if listed is None:
        return
    data = memoryview(listed)
    done = 0  # entries given so far: a whole decoding after them goes on from there
    start = _ARRAY_START.match(data)
    at = start.end() if start is not None else 0
    if start is not None and _EMPTY_REST.fullmatch(data, at):
        return
    pieces: list[tuple[int, int]] = []
    while start is not None:
        match = _ELEMENT.match(data, at)
        if match is None:  # an entry the pattern cannot cut
            break
        pieces.append(match.span(1))
        at = match.end()
        last = match.group(2) == b"]"
        if last and not _SPACE.fullmatch(data, at):
            break
        if last or len(pieces) >= 4096:
            for begin, end in pieces:
                try:
                    entry = _entry.decode(data[begin:end])
                except msgspec.ValidationError:
                    break  # the whole list's decoding raises, naming prompts[i] and the field
                yield entry
                done += 1
            else:
                pieces.clear()
                if last:
                    return
                continue
            break
    yield from itertools.islice(_whole(where, data), done, None)


_ARRAY_START = re.compile(rb"\s*+\[")
_EMPTY_REST = re.compile(rb"\s*+\]\s*+")
_SPACE = re.compile(rb"\s*+")


def _whole(where: str, data: memoryview) -> Iterator[PromptEntry]:
    try:
        entries = _entries.decode(data)
    except msgspec.ValidationError as exc:  # msgspec says `$[3].id` of the list: the document's prompts[3].id
        field, problem = explain_validation(str(exc).replace("`$", "`$.prompts", 1))
        raise RunDirectoryError(where, 1, field, problem) from None
    yield from entries


def _checked(where: str, entries: Iterable[PromptEntry]) -> Iterator[Prompt]:
    """Each entry as a :class:`Prompt`; one that has both or neither of prompt and
    input_ids is refused once every entry has decoded (so a type error comes first)."""
    wrong: int | None = None
    for i, entry in enumerate(entries):
        if (entry.prompt is None) == (entry.input_ids is None):
            wrong = i if wrong is None else wrong
            continue
        if wrong is None:
            token_ids = tuple(entry.input_ids) if entry.input_ids is not None else None
            yield Prompt(id=entry.id, text=entry.prompt, token_ids=token_ids)
    if wrong is not None:
        raise RunDirectoryError(where, 1, f"prompts[{wrong}]", "needs exactly one of prompt and input_ids")


DETERMINISM_FORMAT = "detllm.determinism"


class DeterminismRecord(msgspec.Struct, kw_only=True, frozen=True):
    """``determinism_applied.json``: the determinism controls a run's process applied."""

    format: Literal["detllm.determinism"] = DETERMINISM_FORMAT
    version: str = "1.0"
    mode: Literal["strict", "best-effort", "off"]
    seed: int | None = None
    """Null when ``mode`` is ``off``."""
    complete: bool
    """Every control the run needed was applied."""
    applied: dict[str, Any] = {}
    """Control name -> the value applied."""
    unavailable: dict[str, str] = {}
    """Control name -> why it was not applied (``not needed: ...``: the run did not need it)."""


def write_file(path: Path, data: bytes) -> None:
    """Write ``<path>.partial``, then rename: a directory's file that exists is whole."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def write_document(path: Path, value: object) -> None:
    """A directory's JSON file (``run_config.json``, ``determinism_applied.json``,
    ``sweep.json`` ...): indented, ending in a newline, written whole or not at all. Every
    writer of these files, capture and pack alike, goes through here."""
    write_file(path, msgspec.json.format(msgspec.json.encode(value), indent=2) + b"\n")


def check_format(where: str, document: dict[str, Any], name: str, what: str) -> None:
    """Refuse a directory file whose ``format`` is not ``name`` or whose ``version`` is not
    ``MAJOR.MINOR`` with the major version this reader knows; ``what``: the file, for the message."""
    if document.get("format") != name:
        raise RunDirectoryError(where, 1, "format", f"expected {name!r}, got {document.get('format')!r}: not a detLLM {what}")
    version = document.get("version")
    major = version.split(".", 1)[0] if isinstance(version, str) and "." in version else None
    if major is None or not major.isdigit():
        raise RunDirectoryError(where, 1, "version", f"expected 'MAJOR.MINOR', got {version!r}")
    if int(major) != SUPPORTED_MAJOR:
        raise RunDirectoryError(
            where, 1, "version",
            f"major version {major} is not supported (this detLLM reads {SUPPORTED_MAJOR}.x run directories)",
        )  # fmt: skip


Record = TypeVar("Record")


def read_document(path: Path, name: str, record: type[Record]) -> Record | None:
    """A versioned JSON file of a check directory (``sweep.json``, ``replays/replays.json``)
    as ``record``, after :func:`check_format`; None when there is no such file.

    Content that does not follow the format raises :class:`~detllm.errors.RunDirectoryError`
    naming the file, the line and the field, as :func:`read_run_config` does."""
    where = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RunDirectoryError(where, data.count(b"\n", 0, exc.start) + 1, "-", "not valid UTF-8") from None
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RunDirectoryError(where, exc.lineno, "-", f"not valid JSON ({exc.msg})") from None
    if not isinstance(document, dict):
        raise RunDirectoryError(where, 1, "-", f"not a detLLM {path.name} (a JSON object is required)")
    check_format(where, document, name, path.name)
    try:
        return msgspec.convert(document, record)
    except msgspec.ValidationError as exc:
        field, problem = explain_validation(str(exc))
        raise RunDirectoryError(where, 1, field, problem) from None


def read_run_config(
    directory: str | os.PathLike[str], settings: type[RunSettings] = RunSettings, *, stream_prompts: bool = False
) -> RunConfigFile:
    """Read ``directory/run_config.json``; ``settings`` is the record its ``config`` becomes.

    A missing or unreadable file raises :class:`~detllm.errors.InputError`; content that
    does not follow the format (not JSON, another format, a major version other than
    1, a field of the wrong type) raises :class:`~detllm.errors.RunDirectoryError`
    naming the file and the field. Members this reader does not know are ignored.

    ``stream_prompts``: the prompts are checked here, one at a time, and kept as a
    :class:`StreamedPrompts`, which reads them again on each pass; memory then does not
    grow with the number of prompts beyond the file's own bytes while it is read.
    """
    path = Path(directory) / RUN_CONFIG_FILE
    where = str(path)
    members, data = _read_members(path)
    # The prompts (a million, in a large check) are decoded once, straight into their
    # records; every other member as plain JSON, unknown ones included.
    listed = members.pop("prompts", None)
    try:
        document = {key: orjson.loads(memoryview(raw)) for key, raw in members.items()}
    except orjson.JSONDecodeError:
        _refuse(where, data)
    check_format(where, document, RUN_CONFIG_FORMAT, RUN_CONFIG_FILE)
    try:
        parsed = msgspec.convert(document, RunConfigDocument)
        config = msgspec.convert(document["config"], settings)
    except msgspec.ValidationError as exc:
        field, problem = explain_validation(str(exc))
        raise RunDirectoryError(where, 1, field, problem) from None
    prompts: list[Prompt] | StreamedPrompts
    if stream_prompts:
        prompts = StreamedPrompts(path, sum(1 for _ in _checked(where, _each_entry(where, listed))))
    else:
        prompts = list(_checked(where, list(_each_entry(where, listed))))
    return RunConfigFile(path=path, document=document, settings=config, prompts=prompts, command=parsed.command,
                         check=parsed.check)  # fmt: skip
