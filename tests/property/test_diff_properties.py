"""Properties of diff: self-identity, mirror symmetry, exact divergence index, attribution."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detllm.diff import DiffReport, diff_traces
from detllm.trace import Artifact, Batch, Environment, Logprobs, Row, Software
from tests.diff._traces import drift, flip_at, header, replace, rows, write

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes = st.fixed_dictionaries(
    {
        "n": st.integers(1, 4),
        "seed": st.integers(0, 2**16),
        "length": st.integers(1, 12),
        "top_k": st.integers(2, 5),
    }
)


def base_rows(shape: dict[str, int]) -> list[Row]:
    return rows(shape["n"], seed=shape["seed"], length=shape["length"], top_k=shape["top_k"])


def run(left_rows: list[Row], right_rows: list[Row], left_header: Any = None, right_header: Any = None, **kw: Any) -> tuple[DiffReport, DiffReport]:
    """diff(left, right) and diff(right, left)."""
    with tempfile.TemporaryDirectory() as d:
        k = max([len(s) for r in left_rows + right_rows for s in (r.top_logprobs or [])] + [2])
        h = header(logprobs=Logprobs(semantics="raw", top_k=k))
        a = write(Path(d) / "a.jsonl", left_rows, left_header or h)
        b = write(Path(d) / "b.jsonl", right_rows, right_header or msgspec.structs.replace(h, created_at="2026-11-29T00:00:00Z"))
        forward, backward = diff_traces(a, b, **kw), diff_traces(b, a, **kw)
        # Reading the results before the files go keeps the test honest about laziness.
        list(forward.prompts), list(backward.prompts)
        return forward, backward


@SETTINGS
@given(shapes)
def test_a_trace_is_identical_to_itself(shape: dict[str, int]) -> None:
    data = base_rows(shape)
    report, _ = run(data, data)
    assert report.classification == "identical"
    assert report.exit_code(1) == 0 and report.exit_code(2) == 0
    assert {p.status for p in report.prompts} == {"identical"}
    assert len(report.prompts) == len(data)


@st.composite
def changed(draw: st.DrawFn) -> tuple[list[Row], list[Row]]:
    """A trace and a changed copy: flips, drift, stops, other inputs, missing prompts, another order."""
    data = base_rows(draw(shapes))
    other = []
    for r in data:
        change = draw(st.sampled_from(["same", "flip", "drift", "stop", "input", "drop"]))
        n = len(r.token_ids)
        if change == "flip":
            r2 = flip_at(r, draw(st.integers(0, n - 1)))
            if draw(st.booleans()):
                r2 = drift(r2, -draw(st.floats(1e-8, 1e-3)))
            other.append(r2)
        elif change == "drift":
            other.append(drift(r, -draw(st.floats(1e-8, 1e-2))))
        elif change == "stop" and n > 1:
            cut = draw(st.integers(0, n - 1))
            other.append(replace(r, token_ids=r.token_ids[:cut], logprobs=r.logprobs[:cut], top_logprobs=r.top_logprobs[:cut], finish_reason="stop"))  # type: ignore[index]
        elif change == "input":
            other.append(replace(r, input_token_ids=r.input_token_ids + [1]))
        elif change != "drop":
            other.append(r)
    other = draw(st.permutations(other))
    if draw(st.booleans()):
        other.append(replace(data[0], prompt_id="extra"))
    return data, list(other)


_MIRROR = {"left_only": "right_only", "right_only": "left_only"}


def _mirrored(result: Any) -> dict[str, Any]:
    """The parts of a result that swap with the sides, swapped; sentences left out."""
    data = msgspec.to_builtins(result)
    data["status"] = _MIRROR.get(data["status"], data["status"])
    data["left_index"], data["right_index"] = data["right_index"], data["left_index"]
    if data["divergence"]:
        d = data["divergence"]
        d["left"], d["right"] = d["right"], d["left"]
        d.pop("context")  # the context is common, but read from the left row's texts
    if data["evidence"]:
        e = data["evidence"]
        e["left_lead"], e["right_lead"] = e["right_lead"], e["left_lead"]
        e.pop("reason")
    if data["inputs"]:
        i = data["inputs"]
        i["left_length"], i["right_length"] = i["right_length"], i["left_length"]
    data.pop("notes")
    return data


def _plain(result: Any) -> dict[str, Any]:
    data = msgspec.to_builtins(result)
    if data["divergence"]:
        data["divergence"].pop("context")
    if data["evidence"]:
        data["evidence"].pop("reason")
    data.pop("notes")
    return data


@SETTINGS
@given(changed())
def test_swapping_sides_mirrors_the_report(pair: tuple[list[Row], list[Row]]) -> None:
    forward, backward = run(*pair)
    ahead = {p.prompt_id: _mirrored(p) for p in forward.prompts}
    behind = {p.prompt_id: _plain(p) for p in backward.prompts}
    assert ahead == behind
    assert forward.classification == backward.classification
    assert (forward.verdict.tier1, forward.verdict.tier2) == (backward.verdict.tier1, backward.verdict.tier2)
    f, b = forward.summary, backward.summary
    assert (f.left_rows, f.right_rows) == (b.right_rows, b.left_rows)
    assert f.statuses["left_only"] == b.statuses["right_only"]
    assert f.classifications == b.classifications
    assert forward.setup.attribution == backward.setup.attribution


@SETTINGS
@given(shapes, st.data())
def test_a_planted_divergence_is_found_at_its_index(shape: dict[str, int], data: st.DataObject) -> None:
    left = base_rows(shape)
    target = data.draw(st.integers(0, len(left) - 1))
    r = left[target]
    index = data.draw(st.integers(0, len(r.token_ids) - 1))
    how = data.draw(st.sampled_from(["flip", "flip_and_drift", "stop"]))
    if how == "stop":
        planted = replace(r, token_ids=r.token_ids[:index], logprobs=r.logprobs[:index], top_logprobs=r.top_logprobs[:index], finish_reason="stop")  # type: ignore[index]
    else:
        planted = flip_at(r, index)
        if how == "flip_and_drift":
            planted = drift(planted, -1e-6)
    right = list(left)
    right[target] = planted
    report, _ = run(left, right)
    result = next(p for p in report.prompts if p.prompt_id == r.prompt_id)
    assert result.divergence is not None
    assert result.divergence.index == index
    assert result.status == ("stopped_early" if how == "stop" else "tokens_diverge")
    others = {p.status for p in report.prompts if p.prompt_id != r.prompt_id}
    assert others <= {"identical"}


HEADER_CHANGES = {
    "batch_dependence": {"batch": Batch(size=8)},
    "environment": {"environment": Environment(gpu="NVIDIA H200", cuda="12.8")},
    "different_setup": {"model": Artifact(id="test/model", fingerprint="sha256:" + "9" * 64)},
}
HEADER_CHANGES["environment_backend"] = {"backend": Software(name="vllm", version="0.32.0")}


@SETTINGS
@given(changed(), st.sampled_from(sorted(HEADER_CHANGES)))
def test_a_header_field_changes_the_attribution_not_the_findings(pair: tuple[list[Row], list[Row]], change: str) -> None:
    left, right = pair
    k = max([len(s) for r in left + right for s in (r.top_logprobs or [])] + [2])
    base = header(logprobs=Logprobs(semantics="raw", top_k=k))
    plain, _ = run(left, right, base, base)
    other, _ = run(left, right, base, msgspec.structs.replace(base, **HEADER_CHANGES[change]))
    # Rows with other input token ids win over the headers: the setups differ whatever they say.
    inputs = plain.summary.statuses["inputs_differ"]
    assert plain.setup.attribution.cause == ("different_setup" if inputs else "run_to_run")
    assert other.setup.attribution.cause == ("different_setup" if inputs else change.split("_backend")[0])
    assert [_plain(p) for p in plain.prompts] == [_plain(p) for p in other.prompts]
    assert plain.summary == other.summary
