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

from .._json_errors import DECODE_ERRORS
from ..trace import LOGPROB_TOLERANCE, Header, Row, TokenId, encode

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


REPEATED_MEMBER = "member repeated: an object must not have two members of one name"


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

    def texts(self, tokens: Iterable[int]) -> None:
        """Look up the texts of ``tokens`` in one pass, ahead of :meth:`text` calls.

        Canonical ``token_texts`` are sorted by id: the ids are searched for in
        ascending order, each search starting where the previous one matched, so
        the row's map is scanned once rather than decoded. A map in another layout
        (or without some of the ids) is decoded whole instead.
        """
        if self._complete:
            return
        missing = sorted({t for t in tokens if t not in self._texts})
        if not missing:
            return
        found = _find_texts(bytes(self.row.token_texts), missing)
        if found is None:
            try:
                self._texts = _texts_decoder.decode(self.row.token_texts) or {}
            except DECODE_ERRORS as exc:
                raise RowProblem(self.side, "token_texts", str(exc)) from None
            self._complete = True
        else:
            self._texts.update(found)

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


def _find_texts(raw: bytes, tokens: list[int]) -> dict[int, str] | None:
    """Find the texts of ``tokens`` (ascending) in a canonical ``token_texts`` object.

    In JSON a quote inside a string is escaped, so ``,"12":"`` cannot occur inside
    a value: a match is a key. None means "not all found this way" (another layout,
    or an id without text), and the caller decodes the whole map.
    """
    out: dict[int, str] = {}
    find = raw.find
    position = 0
    for token in tokens:
        key = b',"%d":"' % token
        start = find(key, position)
        if start < 0:
            if position or not raw.startswith(b"{" + key[1:]):
                return None
            start = 0
        start += len(key)  # the value's first byte
        end = find(b'"', start)
        while end > 0 and raw[end - 1] == 0x5C:  # an escaped quote, unless the backslash is itself escaped
            backslashes = 1
            while raw[end - 1 - backslashes] == 0x5C:
                backslashes += 1
            if backslashes % 2 == 0:
                break
            end = find(b'"', end + 1)
        if end < 0:
            return None
        value = raw[start:end]
        try:
            out[token] = _str_decoder.decode(raw[start - 1 : end + 1]) if b"\\" in value else value.decode()
        except (msgspec.DecodeError, UnicodeDecodeError):
            return None
        position = end
    return out


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

