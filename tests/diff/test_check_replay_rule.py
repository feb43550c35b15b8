"""The replay-backed verdict rule of ``check --replay``, on hand-made numbers (no model)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from detllm.diff import DiffOptions
from detllm.diff._check_replay import ReplayFloor, _margin
from detllm.trace import Row

LEFT = SimpleNamespace(name="bs1-run0", batch_size=1, composition="in-order")
RIGHT = SimpleNamespace(name="bs8-in-order", batch_size=8, composition="in-order")
A, B = 10, 11  # run 0 chose A at step 1, run N chose B


def row(token: int, logprob: float) -> Row:
    return Row(prompt_id="p", input_token_ids=[1], token_ids=[5, token], logprobs=[-0.1, logprob],
               top_logprobs=None, finish_reason="length", ranks=[1, 1])


def floor(setup: str, max_abs: float) -> ReplayFloor:
    return ReplayFloor(setup=setup, replay=f"{setup}@{setup}", compared=2, max_abs=max_abs, mean_abs=max_abs, rank1=2)


@pytest.mark.parametrize(
    ("under_left", "under_right", "verdict"),
    [
        # (lp of A, lp of B) under run 0's setup, then under run N's setup
        ((-1.0, -1.0 - 2e-6), (-1.0 - 1e-6, -1.0), "near_tie"),        # both within 4 x 1e-6
        ((-1.0, -1.0 + 2e-6), (-1.0, -1.0 - 3e-6), "near_tie"),        # contrary signs, but within the noise
        ((-1.0, -1.5), (-1.5, -1.0), "flip_confirmed"),               # each setup prefers its own token
        ((-1.0, -1.0 - 1e-6), (-1.5, -1.0), "flip_confirmed"),        # a tie under one, decisive under the other
        ((-1.0, -1.5), (-1.0, -1.5), "not_reproduced"),               # run N's setup prefers run 0's token
        ((-1.0, -1.0), (-1.2, -1.0), "flip_confirmed"),               # an exact tie goes to the lower id, A
    ],
)
def test_verdicts(under_left: tuple[float, float], under_right: tuple[float, float], verdict: str) -> None:
    rows = (row(A, under_left[0]), row(B, under_left[1]), row(A, under_right[0]), row(B, under_right[1]))
    floors = {"bs1-run0": floor("bs1-run0", 1e-6), "bs8-in-order": floor("bs8-in-order", 5e-7)}
    result = SimpleNamespace(classification="near_tie_flip", evidence=SimpleNamespace(left_lead=1e-6, right_lead=0.0))
    m = _margin(1, "p", 1, LEFT, RIGHT, rows, floors, result, DiffOptions())  # type: ignore[arg-type]
    assert (m.noise, m.tolerance) == (1e-6, 4e-6)
    assert m.left_setup.margin == under_left[0] - under_left[1] and m.right_setup.margin == under_right[0] - under_right[1]
    assert (m.left_token, m.right_token, m.inferred_left_lead, m.inferred) == (A, B, 1e-6, "near_tie_flip")
    assert m.verdict == verdict
