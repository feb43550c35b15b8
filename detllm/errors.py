"""Errors and exit codes.

Every error detLLM raises on purpose derives from :class:`DetllmError`. The command
line catches it once, prints ``detllm: <message>`` on one line and exits with the
error's ``exit_code``. Format errors carry the file, line and field they concern.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit codes, following diff(1)."""

    OK = 0
    """Valid input, or no difference."""
    DIFFERENT = 1
    """Invalid trace (``validate``) or outputs that differ (``diff``, ``check``)."""
    TROUBLE = 2
    """Usage error, unreadable input, a run that could not be done."""


class DetllmError(Exception):
    """Base class of every error detLLM raises on purpose."""

    exit_code: ExitCode = ExitCode.TROUBLE


class UsageError(DetllmError):
    """The command or call was given arguments it cannot use."""


class InputError(DetllmError):
    """A file could not be opened or read (missing, unreadable, not a trace directory)."""


class _Located:
    """A problem at a place in a file: ``path:line: field: problem``.

    ``line`` is 1-based and 0 when the problem concerns the whole file. ``field`` is
    the path of the offending value inside the record, such as ``logprobs[3]``, or
    ``-`` when the problem concerns the line as a whole.
    """

    def __init__(self, path: str, line: int, field: str, problem: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.problem = problem
        super().__init__(f"{path}:{line}: {field}: {problem}")  # type: ignore[call-arg]


class PromptFileError(_Located, InputError):
    """A prompt file has a line that cannot be used."""


class RunDirectoryError(_Located, InputError):
    """A run, check or pack directory's ``run_config.json`` does not follow its format
    (``formats/run-directory.md``): the file and the field are named."""


class TraceFormatError(_Located, DetllmError):
    """A trace does not follow the trace format."""

    exit_code = ExitCode.DIFFERENT


class UnsupportedVersionError(TraceFormatError):
    """The trace has a major version this reader does not know."""


class IncompleteTraceError(TraceFormatError):
    """The trace ends before its footer: the run that wrote it did not finish."""


class NewerMinorVersionWarning(UserWarning):
    """The trace has a newer minor version: fields this reader does not know are ignored."""


class CaptureError(DetllmError):
    """Inference could not be run or recorded as asked."""


class DeterminismUnavailableError(CaptureError):
    """A determinism control required by ``--mode strict`` is not available."""
