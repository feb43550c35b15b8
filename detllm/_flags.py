"""Command-line flags described once, as data: how a table of settings becomes argparse
arguments, how parsed arguments become field values, and how values become flags again.

Each settings record keeps its own table (capture settings: :data:`detllm.rundir.RUN_FLAGS`;
comparison settings: ``detllm.diff.options.COMPARISON_FLAGS``); this module is what the
tables share. A flag stores its value under its field's name (``dest``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FIELD_DEFAULT: Any = object()
"""A flag whose default is its field's default."""


def number_text(value: object) -> str:
    """A value as a flag's argument: floats as short as reads back exactly (``1e-05``, ``2``)."""
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


@dataclass(frozen=True)
class Flag:
    """One setting on the command line.

    ``type`` turns the flag's text into a value (None: a switch, present or not).
    ``default``: the flag's default where it is not the field's (``FIELD_DEFAULT``).
    ``group``: which argument group of a command it belongs to. ``always``: named in a
    command line even at its default, for the reader. ``repeat``: given once per item
    (``parse`` turns the list into the field's value; ``words`` the value into one
    argument per item). ``parse``/``words`` also serve single values that are not plain
    text, such as a comma-separated list.
    """

    field: str
    flag: str
    type: Callable[[str], Any] | None
    metavar: str | None
    help: str
    choices: tuple[Any, ...] | None = None
    default: Any = FIELD_DEFAULT
    group: str = ""
    always: bool = False
    required: bool = False
    repeat: bool = False
    parse: Callable[[Any], Any] | None = None
    words: Callable[[Any], list[str]] | None = None


def add_flags(
    parser: Any,
    flags: Iterable[Flag],
    defaults_of: Mapping[str, Any],
    *,
    help: Mapping[str, str] | None = None,
    defaults: Mapping[str, Any] | None = None,
    choices: Mapping[str, Sequence[Any]] | None = None,
) -> None:
    """Add ``flags`` to an argparse parser or group. ``defaults_of``: the record's defaults by
    field; ``help``, ``defaults`` and ``choices`` change a flag for one command."""
    help, defaults, choices = help or {}, defaults or {}, choices or {}
    for flag in flags:
        words = help.get(flag.field, flag.help)
        if flag.type is None:
            parser.add_argument(flag.flag, dest=flag.field, action="store_true", help=words)
            continue
        extra: dict[str, Any] = {"metavar": flag.metavar} if flag.metavar else {}
        listed = choices.get(flag.field, flag.choices)
        if listed:
            extra["choices"] = listed
        if flag.required:
            extra["required"] = True
        elif flag.repeat:
            extra.update(action="append", default=[])
        else:
            extra["default"] = defaults.get(flag.field, default_of(flag, defaults_of))
        parser.add_argument(flag.flag, dest=flag.field, type=flag.type, help=words, **extra)


def default_of(flag: Flag, defaults_of: Mapping[str, Any]) -> Any:
    """The value a flag stands for when it is not given."""
    return defaults_of.get(flag.field) if flag.default is FIELD_DEFAULT else flag.default


def values_from(args: object, flags: Iterable[Flag]) -> dict[str, Any]:
    """The field values the flags of a parsed command line give: those the command takes and
    that were not left None."""
    values: dict[str, Any] = {}
    for flag in flags:
        value = getattr(args, flag.field, None)
        if value is not None:
            values[flag.field] = flag.parse(value) if flag.parse else value
    return values


def flag_words(flag: Flag, value: Any) -> list[str]:
    """The arguments that give ``value`` back through ``flag`` (none for an empty value)."""
    if flag.type is None:
        return [flag.flag] if value else []
    if value is None:
        return []
    items = flag.words(value) if flag.words else [number_text(value)]
    return [word for item in items for word in (flag.flag, item)]


def arguments_of(record: object, flags: Iterable[Flag], defaults_of: Mapping[str, Any],
                 *, keep: Sequence[str] = ()) -> list[str]:
    """The flags that give ``record``'s values back, in table order: a value at its flag's
    default is left out unless the flag is ``always`` named or its field is in ``keep``."""
    words: list[str] = []
    for flag in flags:
        value = getattr(record, flag.field)
        if value == default_of(flag, defaults_of) and not (flag.always or flag.field in keep):
            continue
        words += flag_words(flag, value)
    return words
