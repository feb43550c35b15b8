"""Turning a JSON decoding failure into ``(field, problem)``, worded for users.

Shared by every reader of untrusted JSON: traces, prompt files, reports.
"""

from __future__ import annotations

import json
import re

import msgspec

DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError)
"""What decoding an untrusted line can raise."""


def explain(exc: BaseException, raw: bytes) -> tuple[str, str]:
    """``(field, problem)`` for an exception from :data:`DECODE_ERRORS`; field ``-`` is the whole line."""
    if isinstance(exc, msgspec.ValidationError):
        return explain_validation(str(exc))
    if isinstance(exc, (msgspec.DecodeError, UnicodeDecodeError)):
        # Bad UTF-8 is found by our own check, not by msgspec's wording or exception type:
        # 0.18 raises UnicodeDecodeError, 0.23 a DecodeError, each with its own message.
        bad_utf8 = _explain_bad_utf8(raw)
        if bad_utf8 is not None:
            return "-", bad_utf8
    if isinstance(exc, msgspec.DecodeError):
        return _explain_malformed(raw, str(exc))
    if isinstance(exc, UnicodeDecodeError):
        return "-", "not valid UTF-8"
    return "-", "nesting is too deep"


_AT = re.compile(r"^(.*) - at `\$(.*)`$", re.DOTALL)
_MISSING = re.compile(r"^Object missing required field `(.*)`$")
_KEY_AT = re.compile(r"^(.*) - at `key` in `\$(.*)`$", re.DOTALL)


def _field_path(suffix: str) -> str:
    return suffix[1:] if suffix.startswith(".") else suffix


def explain_validation(message: str) -> tuple[str, str]:
    """Turn msgspec's message into ``(field, problem)``."""
    path = ""
    key_match = _KEY_AT.match(message)
    if key_match:
        problem, path = key_match.group(1), _field_path(key_match.group(2))
        return path or "-", f"invalid key: {_lower(problem)}"
    at_match = _AT.match(message)
    if at_match:
        message, path = at_match.group(1), _field_path(at_match.group(2))
    missing = _MISSING.match(message)
    if missing:
        name = missing.group(1)
        return (f"{path}.{name}" if path else name), "missing required field"
    if message in (f"Expected `int` <= {2**63 - 1}", f"Expected `int` >= {-(2**63)}"):
        return path or "-", "integer outside the signed 64-bit range"
    if message == "Number out of range":
        return path or "-", "number out of range (a finite number is required)"
    return path or "-", _lower(message).replace("`", "")


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


class _NonFinite:
    def __init__(self, name: str) -> None:
        self.name = name


def _explain_malformed(raw: bytes, message: str) -> tuple[str, str]:
    """Say why a line is not JSON; point at a NaN or Infinity when that is why."""
    if b"NaN" in raw or b"Infinity" in raw:
        try:
            value = json.loads(raw, parse_constant=_NonFinite)
        except (ValueError, RecursionError):
            pass
        else:
            found = _find_non_finite(value, "")
            if found is not None:
                path, name = found
                return path or "-", f"{name} is not allowed: a finite number is required"
    if "truncated" in message:
        return "-", "not valid JSON: the line ends in the middle of a value"
    detail = _BYTE.sub(lambda m: f"at column {int(m.group(1)) + 1}", message.split(": ", 1)[-1])
    return "-", f"not valid JSON ({detail})"


_BYTE = re.compile(r"\(byte (\d+)\)")


def _explain_bad_utf8(raw: bytes) -> str | None:
    """Where ``raw`` stops being UTF-8, or None when it is valid UTF-8."""
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
    return None


def _find_non_finite(value: object, path: str) -> tuple[str, str] | None:
    stack: list[tuple[object, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, _NonFinite):
            return where, item.name
        if isinstance(item, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(item))))
    return None


REPEATED_MEMBER = "member repeated: an object must not have two members of one name"
"""The problem every reader reports for a repeated member, with the member's path as field."""


class _Members(list):  # type: ignore[type-arg]
    """An object's members in order, repeats kept: what :func:`duplicate_member` walks."""


def duplicate_member(raw: bytes) -> str | None:
    """The path of the first member that an object of the JSON text ``raw`` repeats, or None.

    JSON readers disagree on a repeated name (msgspec and orjson keep the last value,
    others the first, some refuse), so detLLM refuses it. This reads the line again
    with the standard library, which sees every member: slow, so readers call it only
    on lines they cannot otherwise prove free of repeats (see
    :func:`detllm.trace.row_members_unique`). ``raw`` is valid JSON: a decoder accepted it.
    """
    try:
        value = json.loads(raw, object_pairs_hook=_Members)
    except (ValueError, RecursionError):  # the line's own decoder has the last word on these
        return None
    stack: list[tuple[object, str]] = [(value, "")]
    while stack:
        item, where = stack.pop()
        if isinstance(item, _Members):
            seen: set[str] = set()
            for name, member in item:
                path = f"{where}.{name}" if where else name
                if name in seen:
                    return path
                seen.add(name)
                stack.append((member, path))
        elif isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
    return None
