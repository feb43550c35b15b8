"""Print a snapshot of this machine's environment as JSON.

Python, OS, CPU, GPUs, driver, CUDA and cuDNN, the versions of the libraries that
compute a model's numbers, and the environment variables that can change them,
with a fingerprint of the facts that matter for numerics. Facts that cannot be
found (a library that is not installed, no GPU) are null.
"""

from __future__ import annotations

import argparse
import sys

from ..capture.env import REDACTIONS, capture_environment, parse_redactions


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redact",
        default="",
        metavar="WHAT",
        help=f"comma-separated facts to leave out: {', '.join(REDACTIONS)}, or all",
    )
    parser.add_argument("--no-torch", action="store_true", help="do not import torch (GPU, CUDA and cuDNN facts are null)")


def run(args: argparse.Namespace) -> int:
    snapshot = capture_environment(redact=parse_redactions(args.redact), use_torch=not args.no_torch)
    sys.stdout.buffer.write(snapshot.to_json())
    return 0
