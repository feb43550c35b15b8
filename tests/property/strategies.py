"""Hypothesis strategies for valid trace records."""

from __future__ import annotations

from hypothesis import strategies as st

from detllm import Decoding, Logprobs, Row

from ..factories import make_header

token_ids = st.integers(min_value=0, max_value=2**31 - 1)
logprob_values = st.floats(min_value=-1e4, max_value=0.0, allow_nan=False, allow_infinity=False)
texts = st.text(max_size=12)


@st.composite
def steps(draw: st.DrawFn, top_k: int) -> tuple[int, float, list[tuple[int, float]]]:
    """One generation step: chosen token, its logprob, and the top-k alternatives."""
    entries = draw(st.dictionaries(token_ids, logprob_values, min_size=top_k, max_size=top_k))
    top = sorted(entries.items(), key=lambda e: (-e[1], e[0]))
    if top and draw(st.booleans()):
        chosen, value = top[draw(st.integers(0, len(top) - 1))]
    else:
        chosen = draw(token_ids.filter(lambda t: t not in entries))
        floor = top[-1][1] if top else 0.0
        value = draw(st.floats(min_value=-1e5, max_value=floor, allow_nan=False))
    return chosen, value, top


@st.composite
def rows(draw: st.DrawFn, prompt_id: str, top_k: int = 3, max_tokens: int = 8) -> Row:
    n = draw(st.integers(0, max_tokens))
    drawn = [draw(steps(top_k)) for _ in range(n)]
    ids = [d[0] for d in drawn]
    with_texts = draw(st.booleans())
    return Row(
        prompt_id=prompt_id,
        input_token_ids=draw(st.lists(token_ids, max_size=10)),
        token_ids=ids,
        logprobs=[d[1] for d in drawn],
        top_logprobs=[d[2] for d in drawn],
        finish_reason=draw(st.sampled_from(["stop", "length", "abort"])),
        token_texts={t: draw(texts) for t in ids} if with_texts else None,
        prompt=draw(st.none() | st.text(max_size=30)),
    )


@st.composite
def traces(draw: st.DrawFn, max_rows: int = 5):  # type: ignore[no-untyped-def]
    """A header and a list of rows with distinct prompt ids."""
    top_k = draw(st.integers(0, 4))
    max_tokens = 8
    header = make_header(
        decoding=Decoding(do_sample=False, max_new_tokens=max_tokens),
        logprobs=Logprobs(semantics="raw", top_k=top_k),
    )
    ids = draw(st.lists(st.text(min_size=1, max_size=8), max_size=max_rows, unique=True))
    return header, [draw(rows(pid, top_k, max_tokens)) for pid in ids]


def json_paths(value: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """The path (keys and indexes) of ``value`` and of every value inside it."""
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(json_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(json_paths(item, (*prefix, index)))
    return found


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=10,
)


ATTACKS = [
    "\x1b[2J\x1b[H",  # clear the screen
    "\x1b[31mred\x1b[0m",  # restyle it
    "\x1b]8;;https://evil.example\x07link\x1b]8;;\x07",  # a terminal hyperlink
    "bell\x07",
    "over\bwrite",
    "carriage\rreturn",
    "new\nline",
    "c1 \x9b31m csi",
    "del\x7f",
    "rtl \u202eoverride\u202c",
    "isolate \u2066x\u2069",
    "zero\u200bwidth \u200f mark \ufeff bom",
    "line\u2028para\u2029sep",
    "tag \U000e0041 char",
    "unassigned \U000e0000 \U0010ffff \ufdd0 points",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "</details>",
    "# heading",
    "x\n# heading",
    "\n| injected | row |\n",
    "[link](https://evil.example)",
    "![image](https://evil.example/x.png)",
    "*bold* _em_ ~~strike~~",
    "a | b | c",
    "`code` `` break ``` out",
    "&amp; &lt;",
    "\"quoted\" 'single'",
    "- list",
    "1. ordered",
    "back\\slash\\",
]
"""Strings a hostile trace, report or file name can carry: each was once rendered raw."""

hostile_texts = st.one_of(
    st.sampled_from(ATTACKS),
    st.text(max_size=16),
    st.lists(st.sampled_from(ATTACKS) | st.text(max_size=4), min_size=1, max_size=4).map("".join),
)
"""Arbitrary strings, the attack corpus, and mixtures of the two."""
