"""The comparison settings and their command-line flags, for the layers above diff.

:class:`DiffOptions` is the one record of comparison settings; :data:`COMPARISON_FLAGS` is
the one table of their flags. Each command adds its subset with
:func:`add_comparison_flags`, builds the record with :func:`options_from`, and writes a
command line back with :func:`comparison_arguments` (``detllm pack``'s reproduce command,
the HTML page's reproduce box).
"""

from ._options import (
    CHECK_FIELDS,
    COMPARISON_FLAGS,
    FINDINGS_FIELDS,
    NOISE_FLOORS,
    DiffOptions,
    add_comparison_flags,
    comparison_arguments,
    noise_floor_for,
    options_from,
)

__all__ = [
    "CHECK_FIELDS",
    "COMPARISON_FLAGS",
    "FINDINGS_FIELDS",
    "NOISE_FLOORS",
    "DiffOptions",
    "add_comparison_flags",
    "comparison_arguments",
    "noise_floor_for",
    "options_from",
]
