"""The ``detllm`` command line: one module per subcommand, one error handler."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .._escape import text as escape
from .._version import __version__
from ..errors import DetllmError, ExitCode

COMMANDS: dict[str, str] = {
    "run": "Run a model on prompts and record a trace.",
    "check": "Repeat runs and sweep batch sizes: Tier 1, Tier 2, batch invariance.",
    "replay": "Replay a trace's tokens under a setup (teacher forcing): logprobs and ranks at every position.",
    "bisect": "Find which differing settings make two runs diverge, by rerunning them one at a time.",
    "pack": "Cut a check directory down to a repro pack of the prompts that diverge.",
    "env": "Print this machine's environment snapshot as JSON.",
    "validate": "Check trace files against the trace format.",
    "diff": "Compare two traces: where outputs diverge, and what that is consistent with.",
    "report": "Render a saved report, or aggregate three or more traces of the same prompts.",
}
"""Subcommand name -> one-line help. The module ``detllm.cli.<name>`` (dashes become
underscores) provides ``add_arguments(parser)`` and ``run(args) -> int``. Command
modules import nothing heavy at import time: torch is imported only when a capture
command runs."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="detllm",
        description="Is this LLM inference setup reproducible? If not, where and why.",
    )
    parser.add_argument("--version", action="version", version=f"detllm {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        module = _command_module(name)
        sub = subparsers.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(sub)
    return parser


def _command_module(name: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"{__name__}.{name.replace('-', '_')}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code instead of exiting."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = ["detllm", *argv]  # recorded by commands that write what they ran
    try:
        return int(_command_module(args.command).run(args))
    except DetllmError as error:
        print(f"detllm: {escape(str(error))}", file=sys.stderr)
        return int(error.exit_code)
    except OSError as error:
        # Trouble outside detLLM's own checks (disk full, permission denied): one line.
        where = f"{error.filename}: " if error.filename else ""
        print(escape(f"detllm: {where}{error.strerror or error}"), file=sys.stderr)
        return int(ExitCode.TROUBLE)
    except KeyboardInterrupt:
        print("detllm: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    """Entry point of the ``detllm`` console script."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader of our output went away (``detllm diff ... | head``): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = ExitCode.OK
    sys.exit(code)
