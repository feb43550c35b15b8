"""From a path on the command line to one trace file."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError, UsageError
from ..writer import PARTIAL_SUFFIX

TRACE_NAMES = ("trace.jsonl", "trace.jsonl.gz")
"""The names a run directory gives its trace."""

_SUFFIXES = (".jsonl", ".jsonl.gz")


def traces_in(directory: Path, *, allow_incomplete: bool = False) -> list[Path]:
    """The trace files directly inside ``directory``, by name."""
    suffixes = _SUFFIXES + tuple(s + PARTIAL_SUFFIX for s in _SUFFIXES) if allow_incomplete else _SUFFIXES
    try:
        entries = sorted(directory.iterdir())
    except OSError as exc:
        raise InputError(f"{directory}: {exc.strerror or exc}") from None
    return [p for p in entries if p.is_file() and p.name.endswith(suffixes)]


def locate_trace(path: str | os.PathLike[str], *, allow_incomplete: bool = False) -> str:
    """The trace a path stands for: the file itself, or the one trace in a directory.

    A directory's ``trace.jsonl`` (or ``trace.jsonl.gz``) wins over other files; a
    directory with no trace, or with several and no ``trace.jsonl``, is an error.
    """
    name = os.fspath(path)
    p = Path(name)
    if not p.is_dir():
        if not p.exists():
            partial = Path(name + PARTIAL_SUFFIX)
            if partial.exists():
                hint = "" if allow_incomplete else " (pass --allow-incomplete to read it)"
                raise InputError(f"{name}: no such file, but {partial.name} is there: the run did not finish{hint}")
            raise InputError(f"{name}: no such file or directory")
        return name
    named = [p / n for n in TRACE_NAMES if (p / n).is_file()]
    if len(named) == 1:
        return str(named[0])
    if len(named) > 1:
        raise UsageError(f"{name}: holds several traces ({', '.join(n.name for n in named)}); name the one to use")
    found = traces_in(p, allow_incomplete=allow_incomplete)
    if len(found) == 1:
        return str(found[0])
    if found:
        listed = ", ".join(f.name for f in found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
        raise UsageError(f"{name}: holds several traces ({listed}); name the one to use")
    partials = [f for f in traces_in(p, allow_incomplete=True) if f.name.endswith(PARTIAL_SUFFIX)]
    if partials:
        raise InputError(
            f"{name}: no complete trace, only {partials[0].name}: the run did not finish "
            "(pass --allow-incomplete to read it)"
        )
    raise InputError(f"{name}: no trace in this directory (looked for trace.jsonl, trace.jsonl.gz, *.jsonl, *.jsonl.gz)")
