"""Field-by-field comparison of two trace headers, and what the differences point to."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import msgspec

from ..trace import Header
from ._model import Attribution, HeaderDifference, Setup
from .._numbers import count

_IGNORED: dict[str, str] = {
    "created_at": "when the trace was written; never affects the numbers",
    "labels": "labels are the user's notes; they do not affect the numbers",
}
"""Fields listed but never counted, with the reason they cannot change an output."""

_CATEGORY_BY_PREFIX: tuple[tuple[str, str], ...] = (
    ("model", "setup"),
    ("tokenizer", "setup"),
    ("decoding", "setup"),
    ("dtype", "setup"),
    ("batch", "batch"),
    ("backend_settings", "backend"),
    ("backend", "backend"),
    ("determinism", "determinism"),
    ("device", "environment"),
    ("environment", "environment"),
    ("producer", "environment"),
    ("logprobs", "recording"),
    ("format", "recording"),
    ("version", "recording"),
)
"""The first component of a field path decides its category. ``recording`` fields
(what was recorded, not how it was computed) change no token."""

_SAMPLING_ONLY = frozenset({"decoding.temperature", "decoding.top_p", "decoding.top_k"})
"""Settings that only shape the distribution sampled from: greedy decoding ignores them."""

_FINGERPRINTS = ("model.fingerprint", "tokenizer.fingerprint")

_SETTING_NAMES: dict[str, str] = {
    "decoding": "",  # decoding.seed -> seed, decoding.max_new_tokens -> max_new_tokens, ...
    "batch": "batch_",  # batch.size -> batch_size, batch.composition -> batch_composition
}


def setting_name(field: str) -> str:
    """The factor a header field stands for: ``model``, ``dtype``, ``seed``, ``batch_size``, ..."""
    head, _, rest = field.partition(".")
    if head in _SETTING_NAMES and rest:
        return _SETTING_NAMES[head] + rest.split(".", 1)[0]
    return head


def greedy_exempt(field: str, greedy: bool) -> str | None:
    """Why a field cannot matter when every trace decodes greedily; None when it can."""
    if not greedy:
        return None
    if field == "decoding.seed":
        return "greedy decoding draws no random numbers"
    if field in _SAMPLING_ONLY:
        return "greedy decoding does not use it: it picks the most likely token"
    return None


def is_unknown_fingerprint(field: str, values: Sequence[Any]) -> bool:
    """A model or tokenizer fingerprint that some traces record and others do not."""
    return field in _FINGERPRINTS and any(v is None for v in values) and any(v is not None for v in values)


def category_of(field: str) -> str:
    head = field.split(".", 1)[0]
    if head in _IGNORED:
        return "ignored"
    for prefix, category in _CATEGORY_BY_PREFIX:
        if head == prefix:
            return category
    return "environment"  # a field from a newer minor version: assume it can matter


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def flatten_header(header: Header) -> dict[str, Any]:
    """The header as ``{dotted.field: value}``; nested objects and maps are opened."""
    out: dict[str, Any] = {}
    _flatten(msgspec.to_builtins(header), "", out)
    out.pop("record", None)
    return out


def _merged_keys(left: dict[str, Any], right: dict[str, Any]) -> Iterator[str]:
    seen = set()
    for key in list(left) + list(right):
        if key not in seen:
            seen.add(key)
            yield key


def compare_headers(left: Header, right: Header) -> list[HeaderDifference]:
    """Every field whose value differs, in the header's field order."""
    a, b = flatten_header(left), flatten_header(right)
    greedy = not left.decoding.do_sample and not right.decoding.do_sample
    differences: list[HeaderDifference] = []
    for field in _merged_keys(a, b):
        if field in a and field in b and _same(a[field], b[field]):
            continue
        absent = None if field in a and field in b else ("left" if field not in a else "right")
        category = category_of(field)
        note = _IGNORED.get(field.split(".", 1)[0]) if category == "ignored" else None
        exempt = greedy_exempt(field, greedy)
        if exempt is not None:
            category, note = "ignored", exempt
        elif field in _FINGERPRINTS and (a.get(field) is None) != (b.get(field) is None):
            side = "left" if a.get(field) is None else "right"
            category = "recording"
            note = f"not recorded in the {side} trace: whether the {field.split('.')[0]}s are the same is unknown"
        elif field == "environment.fingerprint":
            note = "a summary of the environment: some fact behind it differs"
        differences.append(
            HeaderDifference(
                field=field, left=a.get(field), right=b.get(field), absent=absent, category=category, note=note
            )
        )
    return differences


def _same(x: Any, y: Any) -> bool:
    # 1 and 1.0 are the same setting; True and 1 are not.
    if isinstance(x, bool) or isinstance(y, bool):
        return type(x) is type(y) and x == y
    return bool(x == y)


def _fields(differences: Sequence[HeaderDifference], *categories: str) -> list[str]:
    return [d.field for d in differences if d.category in categories]


def _listing(fields: list[str], limit: int = 4) -> str:
    shown = ", ".join(fields[:limit])
    return shown + (f" and {len(fields) - limit} more" if len(fields) > limit else "")


def attribute(differences: Sequence[HeaderDifference], batch_sizes: Sequence[int]) -> Attribution:
    """What a difference between the outputs would be consistent with.

    ``differences`` are the header fields that differ (between two traces, or
    across many); ``batch_sizes`` the batch size of each trace.
    """
    counted = [d for d in differences if d.category not in ("ignored", "recording")]
    factors = [c for c in ("setup", "batch", "backend", "determinism", "environment") if any(d.category == c for d in counted)]
    settings = list(dict.fromkeys(setting_name(d.field) for d in counted))
    attribution = _attribute(counted, factors, batch_sizes)
    return msgspec.structs.replace(attribution, settings=settings, text=attribution.text + _unknown(differences))


def computing_change(differences: Sequence[HeaderDifference]) -> str | None:
    """The settings that differ in what they compute (batching aside), as words; None when none do."""
    counted = [d for d in differences if d.category in ("setup", "backend", "determinism", "environment")]
    names = list(dict.fromkeys(setting_name(d.field) for d in counted))
    if not names:
        return None
    shown = names[:4] + ([f"{len(names) - 4} more"] if len(names) > 4 else [])
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def _unknown(differences: Sequence[HeaderDifference]) -> str:
    """What the headers cannot tell: a fingerprint recorded on one side only."""
    sides = [d for d in differences if d.field in _FINGERPRINTS and d.category == "recording"]
    if not sides:
        return ""
    what = " and ".join(d.field.split(".")[0] for d in sides)
    return f" Whether the {what} {'is' if len(sides) == 1 else 'are'} the same is unknown: not every trace records its fingerprint."


def unfingerprinted(headers: Sequence[Header]) -> str:
    """A caveat when no trace records the model's fingerprint: a name is not the weights."""
    if all(h.model.fingerprint is None for h in headers):
        return (
            " No trace records the model's fingerprint, so the same model cannot be told from the same name "
            f"({headers[0].model.id!r})."
        )
    return ""


def _attribute(counted: list[HeaderDifference], factors: list[str], batch_sizes: Sequence[int]) -> Attribution:
    setup = _fields(counted, "setup")
    environment = _fields(counted, "backend", "determinism", "environment")
    batch = _fields(counted, "batch")
    if setup:
        return Attribution(
            cause="different_setup",
            factors=factors,
            text=(
                f"The setups differ in what they compute ({_listing(setup)}): the traces were not "
                "meant to match, and differences between them are expected."
            ),
        )
    if environment:
        also = f" The batch differs too ({_listing(batch)})." if batch else ""
        return Attribution(
            cause="environment",
            factors=factors,
            text=(
                f"The environment differs ({_listing(environment)}): a difference is consistent with "
                f"the environment (hardware, libraries, backend or determinism controls), not "
                f"necessarily with nondeterminism.{also}"
            ),
        )
    if batch:
        distinct = sorted(set(batch_sizes))
        sizes = ""
        if len(batch_sizes) == 2 and len(distinct) == 2:
            sizes = f" (batch size {batch_sizes[0]} vs {batch_sizes[1]})"
        elif len(distinct) > 1:
            sizes = f" (batch sizes {', '.join(map(str, distinct))})"
        return Attribution(
            cause="batch_dependence",
            factors=factors,
            text=(
                f"Only the batching differs{sizes}: a difference is consistent with batch dependence "
                "(results that change with batch size or with a prompt's neighbours)."
            ),
        )
    return Attribution(
        cause="run_to_run",
        factors=[],
        text=(
            "The setups match (fields that cannot affect the numbers aside): a difference is "
            "consistent with run-to-run nondeterminism."
        ),
    )


def with_input_evidence(setup: Setup, differing: int, compared: int) -> Setup:
    """The setup with the rows' evidence: prompts whose input token ids differ outweigh matching headers."""
    if not differing:
        return setup
    a = setup.attribution
    settings = [*a.settings, "input_ids"] if "input_ids" not in a.settings else a.settings
    factors = a.factors if "setup" in a.factors else ["setup", *a.factors]
    text = (
        f"The rows show different input token ids for {differing} of {count(compared, 'prompt')}: the traces "
        "were not run on the same inputs (other prompts, tokenizer or chat template), so differences between "
        "them are expected."
    )
    if a.cause == "different_setup":
        text = f"{a.text} The rows also show different input token ids for {differing} of {count(compared, 'prompt')}."
    attribution = Attribution(cause="different_setup", factors=factors, text=text, settings=settings)
    return Setup(differences=setup.differences, attribution=attribution)


def compare_setup(left: Header, right: Header) -> Setup:
    differences = compare_headers(left, right)
    attribution = attribute(differences, [left.batch.size, right.batch.size])
    caveat = unfingerprinted([left, right])
    if caveat:
        attribution = msgspec.structs.replace(attribution, text=attribution.text + caveat)
    return Setup(differences=differences, attribution=attribution)
