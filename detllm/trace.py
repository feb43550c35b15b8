"""The trace format, version 1: its records and the rules they follow.

A trace is JSON Lines: a header record, one row per generated sequence, and a footer.
``formats/trace-v1.md`` is the normative text; the Structs here are its executable
form, and ``tests/test_schemas.py`` keeps the two in agreement with the JSON Schemas.

Schema evolution within major version 1 (see ``docs/versioning.md``): new fields get
a default and go at the end of their record; an existing field never changes type or
meaning; readers ignore fields they do not know.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Annotated, Any, Literal, Protocol

import msgspec

from ._json_errors import DECODE_ERRORS
FORMAT = "detllm.trace"
"""Value of the header's ``format`` field."""

VERSION = "1.0"
"""The version of a trace that uses nothing added after 1.0: what a plain run writes."""

REPLAY_VERSION = "1.1"
"""The version of a replay trace: 1.1 added ``Header.replay`` and ``Row.ranks``."""

STEPS_VERSION = "1.2"
"""The version of a trace whose batches an engine may spread over several scheduler steps:
1.2 added ``Placement.step``."""

SUPPORTED_MAJOR = 1
SUPPORTED_MINOR = 2

LOGPROB_SEMANTICS = ("raw", "processed", "none")
"""``raw``: log-softmax of the model's logits. ``processed``: after the sampling
transforms (temperature, top-k, top-p, penalties). ``none``: not recorded."""

FINISH_REASONS = ("stop", "length", "abort")
"""``stop``: an end-of-sequence token or stop condition; ``length``: the token budget
ran out; ``abort``: generation was cut short by the engine."""

LOGPROB_TOLERANCE = 1e-4
"""How far above 0 a recorded logprob may lie (rounding in the backend's log-softmax)."""

INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
"""Every integer in a trace lies in the signed 64-bit range (rule 6 of the File section)."""

MAX_DEPTH = 32
"""Levels a free-form header object (``backend_settings``, ``decoding.extra``,
``determinism.applied``) may nest, itself included (rule 7)."""

TokenId = Annotated[int, msgspec.Meta(ge=0, le=INT_MAX)]
Count = Annotated[int, msgspec.Meta(ge=0, le=INT_MAX)]
Positive = Annotated[int, msgspec.Meta(ge=1, le=INT_MAX)]
Int64 = Annotated[int, msgspec.Meta(ge=INT_MIN, le=INT_MAX)]


class _Record(msgspec.Struct, kw_only=True, tag_field="record"):
    """Common base: records are tagged by their ``record`` field, written first."""


class Software(msgspec.Struct, kw_only=True):
    """A program and its version."""

    name: str
    version: str | None = None


class Artifact(msgspec.Struct, kw_only=True):
    """A model or tokenizer: what it is called and what it is.

    ``fingerprint`` is a content hash such as ``sha256:<hex>`` of the files that
    define it, so that two traces can tell "same model" from "same name".
    """

    id: str
    revision: str | None = None
    fingerprint: str | None = None


class Decoding(msgspec.Struct, kw_only=True):
    """The decoding settings the backend actually used."""

    do_sample: bool
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: Count = 0
    max_new_tokens: Positive
    seed: Int64 | None = None
    extra: dict[str, Any] = {}


class Logprobs(msgspec.Struct, kw_only=True):
    """What the recorded logprobs mean and how many alternatives each step has."""

    semantics: Literal["raw", "processed", "none"]
    top_k: Count


class Batch(msgspec.Struct, kw_only=True):
    """How prompts were grouped: the batch size and how batches were composed."""

    size: Positive
    composition: str = "in-order"


class Determinism(msgspec.Struct, kw_only=True):
    """The determinism controls: the mode asked for, what was applied, what was not and why."""

    mode: str = "off"
    applied: dict[str, Any] = {}
    unavailable: dict[str, str] = {}


class Environment(msgspec.Struct, kw_only=True):
    """The facts about the machine and its software that can explain a difference."""

    fingerprint: str | None = None
    python: str | None = None
    platform: str | None = None
    machine: str | None = None
    cpu: str | None = None
    gpu: str | None = None
    gpu_compute_capability: str | None = None
    driver: str | None = None
    cuda: str | None = None
    cudnn: str | None = None
    libraries: dict[str, str] = {}
    variables: dict[str, str] = {}


class Replay(msgspec.Struct, kw_only=True):
    """What a replay trace replays (1.1): the source trace, named by its footer.

    The rows' tokens are the source's, forced: each row's logprobs, top-k and ranks
    say what this trace's setup computes for the token the source recorded.
    """

    source_digest: str
    """The source trace's footer ``digest``."""
    source_rows: Count
    """The source trace's footer ``rows``."""
    source_name: str | None = None
    """The source trace's file name (no directory), for people; the digest identifies it."""
    forced: bool = True
    """The tokens were fed, not chosen (teacher forcing); always true in 1.1."""


class Header(_Record, kw_only=True, tag="header"):
    """First line of a trace: everything needed to judge whether two traces compare."""

    format: str = FORMAT
    version: str = VERSION
    producer: Software
    created_at: str
    backend: Software
    model: Artifact
    tokenizer: Artifact
    dtype: str
    device: str
    decoding: Decoding
    batch: Batch
    logprobs: Logprobs
    determinism: Determinism = msgspec.field(default_factory=Determinism)
    environment: Environment = msgspec.field(default_factory=Environment)
    backend_settings: dict[str, Any] = {}
    labels: dict[str, str] = {}
    replay: Replay | None = None


class Placement(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where a row sat: batch ``index`` (0-based), ``position`` in it, and its ``size``."""

    index: Count
    position: Count
    size: Positive
    step: Count | None = None
    """(1.2) The engine step, counted from 0 at its batch's first, in which the row was
    first scheduled; set on every row of a batch the engine spread over several steps
    (a token budget per step with chunked prefill), left out otherwise."""


class Row(_Record, kw_only=True, tag="row"):
    """One generated sequence.

    ``top_logprobs[i]`` lists step ``i``'s most likely tokens as ``[token_id, logprob]``
    pairs, by descending logprob and then ascending token id. ``token_texts`` maps
    token ids that appear in the row to their text, so reports need no tokenizer.
    """

    prompt_id: str
    input_token_ids: list[TokenId]
    token_ids: list[TokenId]
    logprobs: list[float] | None
    top_logprobs: list[list[tuple[TokenId, float]]] | None
    finish_reason: str
    token_texts: dict[Int64, str] | None = None
    prompt: str | None = None
    batch: Placement | None = None
    ranks: list[Positive] | None = None
    """(1.1, replay traces) ``ranks[i]``: the rank of ``token_ids[i]`` under this setup,
    1 when greedy decoding would choose it; null when the backend does not say."""


class Footer(_Record, kw_only=True, tag="footer"):
    """Last line of a complete trace: how many rows precede it and their digest.

    ``digest`` is ``sha256:<hex>`` of the bytes of every row line, newlines included.
    """

    rows: Count
    digest: str


class _Preamble(msgspec.Struct):
    """The part of a header that every version shares; read first to check the version."""

    record: Any = None
    format: Any = None
    version: Any = None


class _Tag(msgspec.Struct):
    record: Any = None


_encoder = msgspec.json.Encoder()
header_decoder = msgspec.json.Decoder(Header)
row_decoder = msgspec.json.Decoder(Row)
footer_decoder = msgspec.json.Decoder(Footer)
preamble_decoder = msgspec.json.Decoder(_Preamble)
tag_decoder = msgspec.json.Decoder(_Tag)

ROW_PREFIX = b'{"record":"row",'
FOOTER_PREFIX = b'{"record":"footer",'


_NULL_REPLAY = b',"replay":null}'
_NULL_RANKS = b',"ranks":null}'


def encode(record: Header | Row | Footer) -> bytes:
    """The canonical encoding of a record, without the newline.

    Keys in definition order, no whitespace, every field written, floats in their
    shortest round-trip form. Equal records give equal bytes. The members added in
    1.1 (``replay``, ``ranks``) and 1.2 (``batch.step``) are the one exception to
    "every field written": they are left out when null, so a trace that uses none of
    them keeps the bytes (and the digest) a 1.0 writer gives it. Being the last fields
    of their records, they are cut off the end (``Placement`` omits its own).
    """
    raw = _encoder.encode(record)
    if type(record) is Row:
        if record.ranks is None:
            return raw[: -len(_NULL_RANKS)] + b"}"
    elif type(record) is Header and record.replay is None:
        return raw[: -len(_NULL_REPLAY)] + b"}"
    return raw


_VERSION_RE = re.compile(r"^(\d+)\.(\d+)$")

CREATED_AT_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$"
"""RFC 3339 date-time with a UTC offset, as ``created_at`` must be written."""
_CREATED_AT_RE = re.compile(CREATED_AT_PATTERN)


def parse_version(value: object) -> tuple[int, int] | None:
    """``"1.0"`` -> ``(1, 0)``; None when the value is not ``MAJOR.MINOR``."""
    if not isinstance(value, str):
        return None
    match = _VERSION_RE.match(value)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def header_problems(header: Header) -> Iterator[tuple[str, str]]:
    """Rules a decoded header must follow beyond its types, as ``(field, problem)``."""
    if not _valid_created_at(header.created_at):
        yield "created_at", f"not an RFC 3339 date-time with a UTC offset: {header.created_at!r}"
    decoding = header.decoding
    if not (math.isfinite(decoding.temperature) and decoding.temperature >= 0):
        yield "decoding.temperature", f"must be a number >= 0, got {decoding.temperature!r}"
    if not (0 < decoding.top_p <= 1):
        yield "decoding.top_p", f"must be in (0, 1], got {decoding.top_p!r}"
    if header.logprobs.semantics == "none" and header.logprobs.top_k != 0:
        yield "logprobs.top_k", "must be 0 when logprobs.semantics is 'none'"
    if header.replay is not None:
        if not at_least_1_1(header):
            yield "replay", f"needs trace version 1.1 or later, the header says {header.version!r}"
        if not _DIGEST_RE.match(header.replay.source_digest):
            yield "replay.source_digest", f"must be 'sha256:' and 64 lowercase hex digits, got {header.replay.source_digest!r}"
        if not header.replay.forced:
            yield "replay.forced", "must be true: a replay feeds the source's tokens"
        if header.logprobs.semantics != "raw":
            yield "logprobs.semantics", "must be 'raw' in a replay (forced logprobs are the model's log-softmax)"
    for name, value in (
        ("decoding.extra", decoding.extra),
        ("determinism.applied", header.determinism.applied),
        ("backend_settings", header.backend_settings),
    ):
        problem = free_form_problem(value, name)
        if problem is not None:
            yield problem


_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def at_least_1_1(header: Header) -> bool:
    """Whether the header's version admits the members added in 1.1 (``replay``, ``ranks``)."""
    return at_least(header, 1)


def at_least(header: Header, minor: int) -> bool:
    """Whether the header's version is ``1.minor`` or later."""
    version = parse_version(header.version)
    return version is not None and version >= (1, minor)


def free_form_problem(value: Any, path: str) -> tuple[str, str] | None:
    """The first value of a free-form object that breaks rule 6 or 7, as ``(field, problem)``.

    Walked without recursion: how deep the value goes is what is being checked.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 1)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                return path, f"nests deeper than {MAX_DEPTH} levels, the most a free-form object may"
            if isinstance(item, dict):
                stack.extend((v, f"{where}.{k}", depth + 1) for k, v in reversed(list(item.items())))
            else:
                stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, int) and not isinstance(item, bool) and not INT_MIN <= item <= INT_MAX:
            return where, "integer outside the signed 64-bit range"
    return None


def _valid_created_at(value: str) -> bool:
    if not _CREATED_AT_RE.match(value):
        return False
    try:
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:  # well-formed but impossible, such as month 13
        return False
    return True


class RowShape(Protocol):
    """What :func:`row_shape_problems` reads of a row: a :class:`Row`, or the diff's
    lighter form of one, whose top-k steps are still undecoded (only counted)."""

    prompt_id: str
    finish_reason: str
    token_ids: list[int]
    logprobs: list[float] | None
    top_logprobs: Sequence[object] | None
    ranks: list[int] | None


def row_problems(row: Row, header: Header) -> Iterator[tuple[str, str]]:
    """Rules a decoded row must follow beyond its types, as ``(field, problem)``."""
    yield from row_shape_problems(row, header)
    top = row.top_logprobs
    if header.logprobs.semantics != "none" and top is not None and len(top) == len(row.token_ids):
        logprobs = row.logprobs
        n = len(row.token_ids)
        chosen = logprobs if logprobs is not None and len(logprobs) == n else [None] * n
        yield from top_k_problems(row.token_ids, chosen, top, header.logprobs.top_k)
    yield from placement_problems(row.batch, header)


def row_rules_key(header: Header) -> tuple[object, ...]:
    """What the row rules (:func:`row_problems`) read of a header. A row line is valid
    under two headers with the same key or under neither, so a reader that checked it
    under one header need not check it under the other; under headers with different
    keys, the same bytes must be checked under each for the rules that read a field
    where they differ (:func:`may_break_other_rules` tells which rows need it)."""
    return (
        header.logprobs.semantics == "none",
        header.logprobs.top_k,
        header.decoding.max_new_tokens,
        header.batch.size,
        at_least(header, 1),
        at_least(header, 2),
    )


class _RuleFields(msgspec.Struct):
    """The members of a row line that the header-dependent row rules read, as little
    decoded as they allow."""

    token_ids: list[msgspec.Raw]
    top_logprobs: msgspec.Raw
    batch: msgspec.Raw = msgspec.Raw(b"null")
    ranks: msgspec.Raw = msgspec.Raw(b"null")


_rule_fields_decoder = msgspec.json.Decoder(_RuleFields)
_steps_decoder = msgspec.json.Decoder(list[list[msgspec.Raw]] | None)
_placement_decoder = msgspec.json.Decoder(Placement | None)
_NULL = b"null"


def may_break_other_rules(raw: bytes, header: Header, other: Header) -> bool:
    """Whether the row line ``raw`` may break a rule of ``header`` that reads a header
    field where ``header`` and ``other`` differ (:func:`row_rules_key`): a quick filter
    for a row two traces share byte for byte, before the exact check. False means those
    rules hold; True means "not proved" (the caller checks the row in full under
    ``header``). Where two headers differ, a row judged differently under them is
    always flagged under one of them."""
    if row_rules_key(header) == row_rules_key(other):
        return False
    try:
        fields = _rule_fields_decoder.decode(raw)
    except DECODE_ERRORS:
        return True
    none = header.logprobs.semantics == "none"
    if none != (other.logprobs.semantics == "none"):
        return True  # every logprob rule changes: the full check decides
    if len(fields.token_ids) > header.decoding.max_new_tokens:
        return True
    if header.logprobs.top_k != other.logprobs.top_k and not none:
        try:
            steps = _steps_decoder.decode(fields.top_logprobs)
        except DECODE_ERRORS:
            return True
        if steps is not None and any(len(step) > header.logprobs.top_k for step in steps):
            return True
    if bytes(fields.ranks) != _NULL and not at_least(header, 1):
        return True
    if bytes(fields.batch) != _NULL and (header.batch.size != other.batch.size or at_least(header, 2) != at_least(other, 2)):
        try:
            batch = _placement_decoder.decode(fields.batch)
        except DECODE_ERRORS:
            return True
        if batch is not None and any(True for _ in placement_problems(batch, header)):
            return True
    return False


def top_k_problems(
    token_ids: Sequence[int], chosen: Sequence[float | None], steps: list[list[tuple[int, float]]], top_k: int, first: int = 0
) -> Iterator[tuple[str, str]]:
    """The first broken rule of the top-k ``steps`` (:func:`step_problems`), which are the
    row's steps from index ``first`` on, with their chosen tokens and logprobs."""
    if not _steps_are_plainly_valid(token_ids, chosen, steps, top_k):
        for i, step in enumerate(steps):
            problems = list(step_problems(first + i, step, top_k, token_ids[i], chosen[i]))
            if problems:  # the first bad step speaks for the row
                yield from problems
                return


def placement_problems(batch: Placement | None, header: Header) -> Iterator[tuple[str, str]]:
    """The rules of a row's ``batch`` placement."""
    if batch is not None:
        if batch.position >= batch.size:
            yield "batch.position", f"{batch.position} is outside a batch of {batch.size}"
        if batch.size > header.batch.size:
            yield "batch.size", f"{batch.size} exceeds the header's batch.size ({header.batch.size})"
        if batch.step is not None and not at_least(header, 2):
            yield "batch.step", f"needs trace version 1.2 or later, the header says {header.version!r}"


def row_shape_problems(row: RowShape, header: Header) -> Iterator[tuple[str, str]]:
    """The row rules that need no top-k step decoded, as ``(field, problem)``.

    :func:`row_problems` adds each step's rules (:func:`step_problems`) and the batch
    placement; the diff engine checks these on every row it decodes and a step's
    rules only on the steps it reads.
    """
    if not row.prompt_id:
        yield "prompt_id", "must not be empty"
    if not row.finish_reason:
        yield "finish_reason", "must not be empty"
    n = len(row.token_ids)
    if n > header.decoding.max_new_tokens:
        yield "token_ids", (
            f"has {n} tokens, more than decoding.max_new_tokens ({header.decoding.max_new_tokens})"
        )
    if row.ranks is not None:
        if not at_least_1_1(header):
            yield "ranks", f"needs trace version 1.1 or later, the header says {header.version!r}"
        elif len(row.ranks) != n:
            yield "ranks", f"has {len(row.ranks)} entries but token_ids has {n}"
    if header.logprobs.semantics == "none":
        if row.logprobs is not None:
            yield "logprobs", "must be null when the header's logprobs.semantics is 'none'"
        if row.top_logprobs is not None:
            yield "top_logprobs", "must be null when the header's logprobs.semantics is 'none'"
        return
    logprobs = row.logprobs
    if logprobs is None:
        yield "logprobs", "is null but the header's logprobs.semantics says they were recorded"
    elif len(logprobs) != n:
        yield "logprobs", f"has {len(logprobs)} entries but token_ids has {n}"
    elif n and max(logprobs) > LOGPROB_TOLERANCE:
        i = next(i for i, value in enumerate(logprobs) if value > LOGPROB_TOLERANCE)
        yield f"logprobs[{i}]", f"a logprob must not be positive, got {logprobs[i]!r}"
    top = row.top_logprobs
    if top is None:
        yield "top_logprobs", "is null but the header's logprobs.semantics says they were recorded"
    elif len(top) != n:
        yield "top_logprobs", f"has {len(top)} steps but token_ids has {n}"


def _steps_are_plainly_valid(
    token_ids: Sequence[int], chosen: Sequence[float | None], top: list[list[tuple[int, float]]], top_k: int
) -> bool:
    """A fast check that passes almost every valid row; a row it rejects gets the exact check.

    Steps it passes list each id once and their logprobs strictly descending, so they
    are also in canonical order."""
    for token, value, step in zip(token_ids, chosen, top):
        if not step:
            continue
        if len(step) > top_k:
            return False
        values = [v for _, v in step]
        if values[0] > LOGPROB_TOLERANCE or values != sorted(values, reverse=True):
            return False
        by_id = dict(step)
        if len(by_id) != len(step) or len(set(values)) != len(values):
            return False  # a repeated id, or ties that need the token-id order check
        listed = by_id.get(token)
        if listed is not None and value is not None and listed != value:
            return False
    return True


def step_problems(
    i: int, step: list[tuple[int, float]], top_k: int, token_chosen: int, chosen: float | None
) -> Iterator[tuple[str, str]]:
    """The rules of step ``i``'s top-k list: the first broken one, as ``(field, problem)``."""
    if len(step) > top_k:
        yield f"top_logprobs[{i}]", f"has {len(step)} entries, more than logprobs.top_k ({top_k})"
        return
    previous: tuple[int, float] | None = None
    seen: set[int] = set()
    for j, (token, value) in enumerate(step):
        if value > LOGPROB_TOLERANCE:
            yield f"top_logprobs[{i}][{j}]", f"a logprob must not be positive, got {value!r}"
            return
        if token in seen:
            yield f"top_logprobs[{i}][{j}]", f"token {token} is listed twice"
            return
        seen.add(token)
        if previous is not None and (value > previous[1] or (value == previous[1] and token < previous[0])):
            yield f"top_logprobs[{i}][{j}]", "entries must be sorted by descending logprob, then ascending token id"
            return
        previous = (token, value)
        if chosen is not None and token == token_chosen and value != chosen:
            yield f"top_logprobs[{i}][{j}]", (
                f"the chosen token {token} has logprob {value!r} here but {chosen!r} in logprobs[{i}]"
            )
            return


_ROW_MEMBERS = 10
"""Members of a canonical row without ``ranks``: every 1.0 field of :class:`Row`,
``record`` included. A canonical row writes ``ranks`` (1.1) only when it is not null."""
_PLACEMENT_MEMBERS = 3


def members_unique(raw: bytes, members: int, colons: Callable[[], int]) -> bool:
    """True when the JSON text ``raw`` has exactly ``members`` members in all its objects.

    ``colons()`` is how many ``:`` the decoded strings hold. Outside strings each
    member holds exactly one ``:``, so the text's colons are its members plus the
    colons in its strings, and a repeated or unknown member makes the count larger.
    False means "not proved", not "repeated": a colon written ``\\u003a`` does not
    count, for one.
    """
    found = raw.count(b":")
    if found == members:  # no colon in any string: nothing left to count
        return True
    inside = colons()
    if inside and b"\\u003" in raw:
        return False
    return found == members + inside


def row_members_unique(raw: bytes, row: Row) -> bool:
    """True when the row line ``raw``, decoded as ``row``, has no repeated member name.

    A proof by counting, fast enough for every row: outside strings, each member of
    every object holds exactly one ``:``, so the line's colons are its members plus the
    colons inside its strings. A canonical row has its 10 members (11 with ``ranks``),
    one per token text and 3 in ``batch`` (4 with ``step``); any repeated or unknown member makes the count larger. False
    means "not proved" (a non-canonical row, an escaped colon): the caller then asks
    :func:`detllm._json_errors.duplicate_member`, which is exact.
    """
    texts = row.token_texts

    def colons() -> int:
        found = row.prompt_id.count(":") + row.finish_reason.count(":")
        if row.prompt is not None:
            found += row.prompt.count(":")
        return found + ("".join(texts.values()).count(":") if texts else 0)

    members = (
        _ROW_MEMBERS
        + (row.ranks is not None)
        + len(texts or ())
        + (_PLACEMENT_MEMBERS + (row.batch.step is not None) if row.batch is not None else 0)
    )
    if not members_unique(raw, members, colons):
        return False
    # The count assumed the three optional members present: a null one must be seen.
    for name, value in ((b"token_texts", texts), (b"prompt", row.prompt), (b"batch", row.batch)):
        if value is None and raw.rfind(b'"' + name + b'":null') < 0:
            return False
    return True

