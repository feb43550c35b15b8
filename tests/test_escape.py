"""The escaping functions, one per output format, on the attacks a hostile trace can try."""

from __future__ import annotations

import re

import pytest

from detllm import _escape

from .property.strategies import ATTACKS


INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff\U000e0000-\U000e007f]")


@pytest.mark.parametrize("attack", ATTACKS)
def test_text_shows_every_invisible_character_as_an_escape(attack: str) -> None:
    shown = _escape.text(attack)
    assert not INVISIBLE.search(shown)
    for ch in attack:
        if INVISIBLE.match(ch):
            assert f"{ord(ch):02x}" in shown or {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch] in shown


def test_text_escapes_are_the_familiar_ones() -> None:
    assert _escape.text("\x1b[2J") == "\\x1b[2J"
    assert _escape.text("a\u202eb") == "a\\u202eb"
    assert _escape.text("a\nb\tc\rd") == "a\\nb\\tc\\rd"
    assert _escape.text("\\x1b") == "\\\\x1b"  # a backslash cannot forge an escape
    assert _escape.text("plain text, café") == "plain text, café"
    # Unassigned code points (U+E0000 sits beside the tags; U+FDD0 is a noncharacter).
    assert _escape.text("\U000e0000\ufdd0") == "\\U000e0000\\ufdd0"


@pytest.mark.parametrize("attack", ATTACKS)
def test_markdown_text_stays_in_its_cell_and_line(attack: str) -> None:
    shown = _escape.markdown(attack)
    assert not INVISIBLE.search(shown)
    assert not re.search("[<>\"']", shown)
    bare = re.sub(r"&(amp|lt|gt|quot|#39);", "", shown)
    assert "&" not in bare
    assert not re.search(r"(?<!\\)[|\[\]*_~`#]", bare.replace("\\\\", ""))
    assert not re.match(r"[-+=]|\d+[.)]", shown)


def test_markdown_text_keeps_ordinary_prose_readable() -> None:
    assert _escape.markdown("consistent with batch dependence (batch size 1 vs 8).") == (
        "consistent with batch dependence (batch size 1 vs 8)."
    )
    assert _escape.markdown("<b>") == "&lt;b&gt;"
    assert _escape.markdown("a|b") == "a\\|b"


@pytest.mark.parametrize("attack", ATTACKS)
def test_a_code_span_cannot_be_closed_or_left(attack: str) -> None:
    shown = _escape.code(attack)
    assert "\n" not in shown and "\r" not in shown
    fence = re.match("`+", shown).group()  # type: ignore[union-attr]
    assert shown.endswith(fence)
    inner = shown[len(fence) : -len(fence)]
    assert all(len(run) != len(fence) for run in re.findall("`+", inner))
    assert not re.search(r"(?<!\\)\|", inner)


def test_a_code_span_keeps_its_spaces() -> None:
    assert _escape.code(" Paris ") == "`  Paris  `"
    assert _escape.code("`a") == "`` `a ``"
    assert _escape.code("") == "` `"


def test_a_code_block_cannot_be_closed_by_its_lines() -> None:
    block = _escape.code_block(["echo ```", "x\n```\n# injected"], "sh")
    lines = block.split("\n")
    assert len(lines) == 4
    assert lines[0] == "````sh" and lines[-1] == "````"


@pytest.mark.parametrize("attack", ATTACKS)
def test_html_has_no_markup_and_no_invisible_characters(attack: str) -> None:
    shown = _escape.html(attack)
    assert not INVISIBLE.search(shown)
    assert not re.search("[<>\"']", shown)
