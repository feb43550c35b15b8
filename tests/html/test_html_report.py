"""The HTML report without a browser: escaping, the policy, the structure, thinning."""

from __future__ import annotations

import base64
import hashlib
import re
import unicodedata
from html.parser import HTMLParser
from pathlib import Path

import pytest

from detllm.report import render_html, write_report_dir
from detllm.report._html import CSP, MAX_DETAILS, MAX_GRID_ROWS, html_text

from ._hostile import HOSTILE, PROMPT_IDS, hostile_report
from ._large import large_check

ROOT = Path(__file__).resolve().parents[2]
GOLDENS = sorted((ROOT / "fixtures").glob("*/*/report.html"))

ALLOWED = {
    "html", "head", "meta", "title", "style", "body", "section", "h1", "h2", "h3", "p", "b", "i", "code", "span",
    "ul", "li", "table", "tr", "th", "td", "div", "pre", "br", "footer",
    "svg", "line", "text", "polyline", "circle", "rect",
}  # fmt: skip
VOID = {"meta", "br"}
SVG_VOID = {"line", "polyline", "circle", "rect"}


class Structure(HTMLParser):
    """Every element, attribute and text run of a page, and whether the elements nest."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []
        self.errors: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.texts.append(data)


def structure(page: str) -> Structure:
    parser = Structure()
    parser.feed(page)
    parser.close()
    return parser


def test_html_text_escapes_markup_quotes_controls_and_bidi() -> None:
    assert html_text("<a href='x'>&\"</a>") == "&lt;a href=&#x27;x&#x27;&gt;&amp;&quot;&lt;/a&gt;"
    assert html_text("\u202eabc\u202c") == "\\u202eabc\\u202c"
    assert html_text("a\nb\x00\x1b") == "a\\nb\\x00\\x1b"
    assert html_text("猫 é") == "猫 é"


@pytest.mark.parametrize("golden", GOLDENS, ids=lambda p: p.parent.name)
def test_golden_pages_carry_the_policy_and_load_nothing(golden: Path) -> None:
    page = golden.read_text(encoding="utf-8")
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f'<meta http-equiv="Content-Security-Policy" content="{CSP}">' in page
    assert f"style-src 'sha256-{digest}'" in CSP and "default-src 'none'" in CSP and "script-src 'none'" in CSP
    parsed = structure(page)
    assert parsed.errors == [] and parsed.stack == []
    assert {tag for tag, _ in parsed.tags} <= ALLOWED
    for tag, attrs in parsed.tags:
        assert not any(name.startswith("on") or name in ("src", "href", "style", "srcset") for name in attrs), tag


def test_hostile_strings_stay_text(tmp_path: Path) -> None:
    report = hostile_report(tmp_path)
    page = render_html(report)
    parsed = structure(page)
    # The layout holds: elements nest as written, only the renderer's own tags exist.
    assert parsed.errors == [] and parsed.stack == []
    assert {tag for tag, _ in parsed.tags} <= ALLOWED
    assert not any(tag in ("script", "img", "iframe", "link", "textarea") for tag, _ in parsed.tags)
    for tag, attrs in parsed.tags:
        assert not any(name.startswith("on") or name in ("src", "href", "style") for name in attrs), (tag, attrs)
    # No raw control or bidi character reached the page; they show as \uXXXX.
    raw = [ch for ch in page if unicodedata.category(ch) in ("Cc", "Cf") and ch != "\n"]
    assert raw == []
    text = "".join(parsed.texts)
    assert "<script>window.__pwned=5</script>" in text  # the prompt id, as text
    assert "\\u202eDI tpmorp" in text
    assert "\\u202eevil\\u202c" in text
    # Every diverging prompt has its section, with its id written visibly.
    sections = [attrs for tag, attrs in parsed.tags if tag == "section" and attrs.get("class") == "prompt"]
    assert len(sections) == report.summary.statuses["tokens_diverge"] == 2
    assert html_text(PROMPT_IDS[1]) in page
    shown = [h for h in HOSTILE if html_text(h) in page]
    assert len(shown) >= 6, shown  # the token texts of the context and the top-k lists


def _grid_rows(page: str) -> list[str]:
    grid = page[page.index('<table class="grid" id="grid">') :]
    grid = grid[: grid.index("</table>")]
    return re.findall(r'<tr><td class="pid" title="([^"]*)">', grid)


def test_a_large_check_is_thinned_and_says_so() -> None:
    report = large_check(1000, 10)
    page = render_html(report)
    rows = _grid_rows(page)
    assert len(rows) == MAX_GRID_ROWS
    assert f"The grid draws {MAX_GRID_ROWS} of 1000 prompts" in page
    assert page.count('<section class="prompt"') == MAX_DETAILS
    diverging = sum(any(d.result.divergence is not None for d in p.divergences) for p in report.prompts)
    assert f"the first {MAX_DETAILS} of {diverging} diverging prompts" in page
    assert 'id="thinned"' in page
    # Drawn rows are the report's first prompts, in order; every drawn row has all ten runs.
    assert rows == [p.prompt_id for p in report.prompts[:MAX_GRID_ROWS]]
    first_row = page[page.index(f'title="{rows[0]}">') :]
    assert first_row[: first_row.index("</tr>")].count("data-class=") == 10


def test_a_small_check_is_drawn_in_full() -> None:
    report = large_check(40, 4)
    page = render_html(report)
    assert len(_grid_rows(page)) == 40
    assert 'id="thinned"' not in page


def test_a_diff_page_shows_every_diverging_prompt(tmp_path: Path) -> None:
    from tests.diff._traces import flip_at, rows, write

    from detllm.diff import diff_traces

    left = rows(120, seed=3)
    right = [flip_at(r, 2) if i % 2 else r for i, r in enumerate(left)]
    report = diff_traces(write(tmp_path / "a.jsonl", left), write(tmp_path / "b.jsonl", right))
    page = render_html(report)
    assert page.count('<section class="prompt"') == 60
    ids = re.findall(r'<section class="prompt" id="p\d+" data-classification="[a-z_]+" data-index="2"><h3><code>(p\d+)</code>', page)
    assert ids == [f"p{i}" for i in range(1, 120, 2)]


def test_report_directory_holds_the_page(tmp_path: Path) -> None:
    report = hostile_report(tmp_path)
    out = write_report_dir(report, tmp_path / "out", command=["detllm", "diff", "a b", "<c>"])
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page == render_html(report, command=["detllm", "diff", "a b", "<c>"])
    assert "<pre id=\"command\">detllm diff &#x27;a b&#x27; &#x27;&lt;c&gt;&#x27;</pre>" in page
    assert not list(out.glob("*.partial"))
