"""Comparison settings and command-line flags map both ways without loss.

``COMPARISON_FLAGS`` (detllm/diff/_options.py) is the one table: every command adds the
comparison flags it takes from it, ``options_from`` turns the parsed flags into
:class:`DiffOptions`, and ``comparison_arguments`` turns options back into flags for pack's
command and the HTML page's "how to reproduce" box.
"""

from __future__ import annotations

import argparse
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detllm.cli import build_parser
from detllm.diff import DiffOptions
from detllm.diff.options import (
    CHECK_FIELDS,
    COMPARISON_FLAGS,
    FINDINGS_FIELDS,
    add_comparison_flags,
    comparison_arguments,
    options_from,
)

PARSER = build_parser()
ALL_FIELDS = tuple(f.field for f in COMPARISON_FLAGS)

floats = st.one_of(st.sampled_from([0.0, 1e-5, 0.5, 2.0, 4.0, 1e-300]), st.floats(0, 1e6, allow_nan=False))


@st.composite
def comparison_options(draw: st.DrawFn) -> DiffOptions:
    return DiffOptions(
        tier=draw(st.sampled_from([1, 2])),
        atol=draw(floats),
        near_tie_factor=draw(floats.filter(lambda x: x > 0)),
        noise_floor=draw(st.none() | floats),
        context_tokens=draw(st.integers(0, 64)),
        continuation_tokens=draw(st.integers(0, 64)),
        allow_incomplete=draw(st.booleans()),
        workers=draw(st.integers(0, 8)),
    )


def parsed(argv: list[str]) -> DiffOptions:
    return options_from(PARSER.parse_args(["diff", "a", "b", *argv]))


@settings(max_examples=300, deadline=None)
@given(comparison_options())
def test_options_to_flags_to_options(options: DiffOptions) -> None:
    assert parsed(comparison_arguments(options, ALL_FIELDS)) == options


@settings(max_examples=200, deadline=None)
@given(comparison_options())
def test_flags_to_options_to_flags(options: DiffOptions) -> None:
    argv = comparison_arguments(options, ALL_FIELDS)
    assert comparison_arguments(parsed(argv), ALL_FIELDS) == argv


def test_defaults_give_no_flags_and_flags_come_in_table_order() -> None:
    assert comparison_arguments(parsed([])) == []
    assert comparison_arguments(DiffOptions(workers=1)) == []  # workers change no finding
    assert comparison_arguments(DiffOptions(), CHECK_FIELDS, keep=("tier",)) == ["--tier", "1"]
    options = DiffOptions(tier=2, atol=1e-5, near_tie_factor=2.0, noise_floor=0.001, context_tokens=4,
                          continuation_tokens=0, allow_incomplete=True)  # fmt: skip
    assert comparison_arguments(options) == [
        "--tier", "2", "--atol", "1e-05", "--near-tie-factor", "2", "--noise-floor", "0.001", "--context", "4",
        "--continuation", "0", "--allow-incomplete",
    ]  # fmt: skip
    assert comparison_arguments(options, CHECK_FIELDS) == ["--tier", "2", "--atol", "1e-05"]
    assert "workers" not in FINDINGS_FIELDS and set(FINDINGS_FIELDS) == set(DiffOptions().to_dict())


def test_a_float_that_g_would_round_keeps_every_digit() -> None:
    assert comparison_arguments(DiffOptions(atol=0.1 + 0.2)) == ["--atol", "0.30000000000000004"]


@pytest.mark.parametrize(
    ("command", "fields"),
    [
        (["diff", "a", "b"], ALL_FIELDS),
        (["report", "a", "b"], ALL_FIELDS),
        (["check", "--model", "m"], CHECK_FIELDS),
        (["bisect", "a", "b"], CHECK_FIELDS),
        (["pack", "c", "--out", "p"], ("tier", "allow_incomplete")),
    ],
)
def test_each_command_takes_its_subset_of_the_table(command: list[str], fields: tuple[str, ...]) -> None:
    args = vars(PARSER.parse_args(command))
    assert [f for f in ALL_FIELDS if f in args] == list(fields)


def test_a_command_default_of_none_keeps_the_records() -> None:
    parser = argparse.ArgumentParser()
    add_comparison_flags(parser, ("tier",), defaults={"tier": None})
    args = parser.parse_args([])
    assert args.tier is None and options_from(args) == DiffOptions()
    assert options_from(parser.parse_args(["--tier", "2"])) == DiffOptions(tier=2)
    assert options_from(parser.parse_args([]), DiffOptions(tier=2, atol=0.5)) == DiffOptions(tier=2, atol=0.5)


def test_every_flag_names_a_field_once() -> None:
    names = {f.name for f in dataclasses.fields(DiffOptions)}
    assert len({f.field for f in COMPARISON_FLAGS}) == len(COMPARISON_FLAGS)
    assert {f.field for f in COMPARISON_FLAGS} == names - {"buffer_bytes"}
