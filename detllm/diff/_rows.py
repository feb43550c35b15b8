"""Rows as the comparison reads them: decoded only as far as needed.

A row whose bytes differ from its counterpart's is decoded, but its top-k steps
stay raw JSON until the analysis looks at one, and its token texts stay raw until
a report needs a few of them.

The checks here are the format's rules that the analysis relies on, as
:mod:`detllm.trace` defines them (:func:`~detllm.trace.row_shape_problems` on every
row decoded, :func:`~detllm.trace.step_problems` on each step read); a row that
breaks one is reported through the reader, which names the first problem exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from .._json_errors import DECODE_ERRORS, REPEATED_MEMBER, duplicate_member
from ..trace import Header, Positive, Row, TokenId, encode, members_unique, row_shape_problems, step_problems

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
        assert self.row.logprobs is not None
        for problem in step_problems(index, step, self.top_k, self.row.token_ids[index], self.row.logprobs[index]):
            raise RowProblem(self.side, *problem)
        self._steps[index] = step
        return step


def _check(row: FastRow, side: str, header: Header) -> None:
    for problem in row_shape_problems(row, header):
        raise RowProblem(side, *problem)
