"""Rows as the comparison reads them: decoded only as far as needed.

A row whose bytes differ from its counterpart's is decoded, but its top-k steps
stay raw JSON until the analysis looks at one, and its token texts stay raw until
a report needs a few of them.

The checks here are the format's rules that the analysis relies on; a row that
breaks one is reported through the reader, which names the first problem exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from .._json_errors import DECODE_ERRORS, REPEATED_MEMBER, duplicate_member
from ..trace import LOGPROB_TOLERANCE, Header, Positive, Row, TokenId, at_least_1_1, encode, members_unique

Step = list[tuple[int, float]]


class FastRow(msgspec.Struct):
    """A row with each ``top_logprobs`` step and ``token_texts`` left as raw JSON."""

    prompt_id: str
    input_token_ids: list[TokenId]
    token_ids: list[TokenId]
    logprobs: list[float] | None
    top_logprobs: list[msgspec.Raw] | None
    finish_reason: str
    token_texts: msgspec.Raw = msgspec.Raw(b"null")
    prompt: str | None = None
    ranks: list[Positive] | None = None


class _PromptIdOnly(msgspec.Struct):
    prompt_id: str


_row_decoder = msgspec.json.Decoder(FastRow)
prompt_id_decoder = msgspec.json.Decoder(_PromptIdOnly)
_step_decoder = msgspec.json.Decoder(list[tuple[TokenId, float]])
_texts_decoder = msgspec.json.Decoder(dict[int, str] | None)
_str_decoder = msgspec.json.Decoder(str)

decode_row = _row_decoder.decode

"""Decode a row line for the comparison; raises msgspec errors for a bad line."""

ID_PREFIX = b'{"record":"row","prompt_id":"'


class RowProblem(Exception):
    """A row breaks a rule the analysis relies on. ``side`` is ``left`` or ``right``."""

    def __init__(self, side: str, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.side = side
        self.field = field
        self.problem = problem


def prompt_id_of(raw: bytes) -> str | None:
    """The prompt id read from a canonical row's first bytes; None when that fails."""
    if raw.startswith(ID_PREFIX):
        start = len(ID_PREFIX)
        end = raw.find(b'"', start)
        if end >= 0:
            value = raw[start:end]
            if b"\\" not in value:
                try:
                    return value.decode()
                except UnicodeDecodeError:
                    return None
    return None


def check_prompt_id(raw: bytes, row: FastRow, side: str) -> None:
    """Refuse a row whose first bytes name another prompt than its decoded ``prompt_id``:
    the line repeats the member, and rows are paired by the first."""
    first = prompt_id_of(raw)
    if first is not None and first != row.prompt_id:
        raise RowProblem(side, "prompt_id", REPEATED_MEMBER)


def from_row(row: Row) -> FastRow:
    """A :class:`~detllm.trace.Row` in the comparison's form."""
    return decode_row(encode(row))


class SideRow:
    """A decoded row and the header facts needed to read it."""

    __slots__ = ("row", "side", "top_k", "has_logprobs", "_texts", "_complete", "_steps")

    def __init__(self, row: FastRow, side: str, header: Header) -> None:
        self.row = row
        self.side = side
        self.top_k = header.logprobs.top_k
        self.has_logprobs = header.logprobs.semantics != "none"
        self._texts: dict[int, str] = {}
        self._complete = False
        self._steps: dict[int, Step] = {}
        _check(row, side, header)
        self.texts(())  # decoded now: a repeated id must be refused whether or not a text is shown

    def texts(self, tokens: Iterable[int]) -> None:
        """Make the texts of ``tokens`` ready for :meth:`text` calls.

        The row's map is decoded whole the first time, and proved free of repeated
        ids (a repeat would show one text here and another to other readers).
        """
        if self._complete:
            return
        raw = bytes(self.row.token_texts)
        try:
            texts = _texts_decoder.decode(raw) or {}
        except DECODE_ERRORS as exc:
            raise RowProblem(self.side, "token_texts", str(exc)) from None
        if not members_unique(raw, len(texts), lambda: "".join(texts.values()).count(":")):
            name = duplicate_member(raw)
            if name is not None:
                raise RowProblem(self.side, f"token_texts.{name}", REPEATED_MEMBER)
        self._texts = texts
        self._complete = True

    def text(self, token: int) -> str | None:
        """The text of ``token``, or None when the trace has none."""
        if token not in self._texts:
            self.texts((token,))
        return self._texts.get(token)

    def step(self, index: int) -> Step:
        """Step ``index``'s top-k list, decoded and checked."""
        cached = self._steps.get(index)
        if cached is not None:
            return cached
        top = self.row.top_logprobs
        assert top is not None
        field = f"top_logprobs[{index}]"
        try:
            step = _step_decoder.decode(top[index])
        except DECODE_ERRORS as exc:
            raise RowProblem(self.side, field, str(exc)) from None
        if len(step) > self.top_k:
            raise RowProblem(self.side, field, f"has {len(step)} entries, more than logprobs.top_k ({self.top_k})")
        chosen = self.row.token_ids[index]
        assert self.row.logprobs is not None
        chosen_logprob = self.row.logprobs[index]
        previous: tuple[int, float] | None = None
        seen: set[int] = set()
        for j, (token, value) in enumerate(step):
            if value > LOGPROB_TOLERANCE:
                raise RowProblem(self.side, f"{field}[{j}]", f"a logprob must not be positive, got {value!r}")
            if token in seen:
                raise RowProblem(self.side, f"{field}[{j}]", f"token {token} is listed twice")
            seen.add(token)
            if previous is not None and (value > previous[1] or (value == previous[1] and token < previous[0])):
                raise RowProblem(
                    self.side, f"{field}[{j}]", "entries must be sorted by descending logprob, then ascending token id"
                )
            if token == chosen and value != chosen_logprob:
                raise RowProblem(
                    self.side,
                    f"{field}[{j}]",
                    f"the chosen token {token} has logprob {value!r} here but {chosen_logprob!r} in logprobs[{index}]",
                )
            previous = (token, value)
        self._steps[index] = step
        return step


def _check(row: FastRow, side: str, header: Header) -> None:
    if not row.prompt_id:
        raise RowProblem(side, "prompt_id", "must not be empty")
    if not row.finish_reason:
        raise RowProblem(side, "finish_reason", "must not be empty")
    n = len(row.token_ids)
    if n > header.decoding.max_new_tokens:
        raise RowProblem(
            side, "token_ids", f"has {n} tokens, more than decoding.max_new_tokens ({header.decoding.max_new_tokens})"
        )
    if row.ranks is not None:
        if not at_least_1_1(header):
            raise RowProblem(side, "ranks", f"needs trace version 1.1 or later, the header says {header.version!r}")
        if len(row.ranks) != n:
            raise RowProblem(side, "ranks", f"has {len(row.ranks)} entries but token_ids has {n}")
    if header.logprobs.semantics == "none":
        if row.logprobs is not None:
            raise RowProblem(side, "logprobs", "must be null when the header's logprobs.semantics is 'none'")
        if row.top_logprobs is not None:
            raise RowProblem(side, "top_logprobs", "must be null when the header's logprobs.semantics is 'none'")
        return
    if row.logprobs is None:
        raise RowProblem(side, "logprobs", "is null but the header's logprobs.semantics says they were recorded")
    if len(row.logprobs) != n:
        raise RowProblem(side, "logprobs", f"has {len(row.logprobs)} entries but token_ids has {n}")
    if n and max(row.logprobs) > LOGPROB_TOLERANCE:
        index = next(i for i, v in enumerate(row.logprobs) if v > LOGPROB_TOLERANCE)
        raise RowProblem(side, f"logprobs[{index}]", f"a logprob must not be positive, got {row.logprobs[index]!r}")
    if row.top_logprobs is None:
        raise RowProblem(side, "top_logprobs", "is null but the header's logprobs.semantics says they were recorded")
    if len(row.top_logprobs) != n:
        raise RowProblem(side, "top_logprobs", f"has {len(row.top_logprobs)} steps but token_ids has {n}")

