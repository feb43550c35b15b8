"""Prompt files: text and JSON Lines, and their one-line errors."""

from __future__ import annotations

import pytest

from detllm.capture.backend import Prompt
from detllm.capture.prompts import DEFAULT_PROMPTS, load_prompt_file
from detllm.cli import main
from detllm.errors import InputError, PromptFileError


def write(tmp_path, name: str, content: str | bytes):
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def test_text_file_one_prompt_per_line(tmp_path):
    path = write(tmp_path, "prompts.txt", "First prompt\r\n\n  second one with spaces  \nlast without newline")
    assert load_prompt_file(path) == [
        Prompt("p1", "First prompt"),
        Prompt("p2", "  second one with spaces  "),
        Prompt("p3", "last without newline"),
    ]


def test_jsonl_file(tmp_path):
    path = write(
        tmp_path,
        "prompts.jsonl",
        '{"id": "capital", "prompt": "The capital of France is"}\n\n{"input_ids": [5, 6, 7]}\n{"prompt": "🙂"}\n',
    )
    assert load_prompt_file(path) == [
        Prompt("capital", "The capital of France is"),
        Prompt("p2", token_ids=(5, 6, 7)),
        Prompt("p3", "🙂"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "ok"}\n{"prompt": "broken"\n', "prompts.jsonl:2: -: not valid JSON: the line ends in the middle of a value"),
        ('["a list"]\n', "prompts.jsonl:1: -: expected a JSON object, got list"),
        ('{"promt": "typo"}\n', "prompts.jsonl:1: promt: unknown field (fields: id, prompt, input_ids)"),
        ('{"id": "x"}\n', 'prompts.jsonl:1: -: needs exactly one of "prompt" and "input_ids"'),
        ('{"prompt": "a", "input_ids": [1]}\n', 'prompts.jsonl:1: -: needs exactly one of "prompt" and "input_ids"'),
        ('{"prompt": ""}\n', "prompts.jsonl:1: prompt: must be a non-empty string"),
        ('{"id": 3.5, "prompt": "a"}\n', "prompts.jsonl:1: id: must be a non-empty string or an integer"),
        ('{"prompt": "a"}\n' + "[" * 100_000 + "]" * 100_000 + "\n", "prompts.jsonl:2: -: nesting is too deep"),
        (b'{"prompt": "caf\xc3"}\n', "prompts.jsonl:1: -: not valid UTF-8 (byte 0xc3 at column 16)"),
        ('{"input_ids": []}\n', "prompts.jsonl:1: input_ids: must be a non-empty list of token ids"),
        ('{"input_ids": [1, -2]}\n', "prompts.jsonl:1: input_ids[1]: must be a token id (an integer >= 0), got -2"),
        ('{"input_ids": [1, true]}\n', "prompts.jsonl:1: input_ids[1]: must be a token id (an integer >= 0), got True"),
        ('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n', "prompts.jsonl:2: id: duplicate prompt id 'a'"),
        ("\n\n", "prompts.jsonl:0: -: no prompts in this file"),
    ],
)
def test_jsonl_errors_name_file_line_and_field(tmp_path, content, message):
    path = write(tmp_path, "prompts.jsonl", content)
    with pytest.raises(PromptFileError) as info:
        load_prompt_file(path)
    assert str(info.value) == str(tmp_path / message)


def test_integer_ids_become_strings(tmp_path):
    path = write(tmp_path, "prompts.jsonl", '{"id": 3, "prompt": "a"}\n')
    assert load_prompt_file(path) == [Prompt("3", "a")]


def test_text_errors(tmp_path):
    path = write(tmp_path, "prompts.txt", b"fine\n\xff\xfe bad bytes\n")
    with pytest.raises(PromptFileError, match=r"prompts.txt:2: -: not valid UTF-8 \(byte 0xff at column 1\)$"):
        load_prompt_file(path)
    with pytest.raises(InputError, match="missing.txt: No such file or directory"):
        load_prompt_file(tmp_path / "missing.txt")


def test_cli_bad_prompt_file_is_one_line_and_exit_2(tmp_path, capsys):
    path = write(tmp_path, "prompts.jsonl", '{"prompt": "ok"}\n{"input_ids": "12"}\n')
    code = main(["run", "--model", "tiny-llama", "--prompt-file", str(path), "--out", str(tmp_path / "run")])
    assert code == 2
    assert capsys.readouterr().err == f"detllm: {path}:2: input_ids: must be a non-empty list of token ids\n"
    assert not (tmp_path / "run").exists()


def test_cli_refuses_both_prompt_sources(tmp_path, capsys):
    path = write(tmp_path, "prompts.txt", "a\n")
    assert main(["run", "--model", "tiny-llama", "--prompt", "x", "--prompt-file", str(path)]) == 2
    assert capsys.readouterr().err == "detllm: give prompts with --prompt or --prompt-file, not both\n"


def test_default_prompts_need_padding():
    assert len(DEFAULT_PROMPTS) == 8
    assert len({len(p) for p in DEFAULT_PROMPTS}) > 4
    assert any(not p.isascii() for p in DEFAULT_PROMPTS)


def test_a_check_validates_its_prompts_once(tmp_path, monkeypatch):
    # The prompt list is checked where it is read and passed, checked, to every capture of
    # the check (repeats, batch sizes, compositions): one validation, not one per capture.
    pytest.importorskip("torch")
    import detllm.capture.prompts as prompts_module

    made = []

    class Counted(prompts_module.PromptList):
        def __init__(self, *args):
            made.append(1)
            super().__init__(*args)

    monkeypatch.setattr(prompts_module, "PromptList", Counted)
    path = tmp_path / "prompts.txt"
    path.write_text("hello\nworld\nagain\n")
    code = main(["check", "--model", "tiny-llama", "--device", "cpu", "--max-new-tokens", "3", "--prompt-file", str(path),
                 "--runs", "2", "--batch-size", "1,2", "--out", str(tmp_path / "c"), "-q"])
    assert code in (0, 1)
    assert len(made) == 1


def test_a_checked_list_is_still_a_list_and_a_plain_one_is_checked():
    from detllm.capture.prompts import PromptList, checked_prompts
    from detllm.errors import UsageError

    checked = checked_prompts([Prompt(id="a", text="x"), Prompt(id="b", text="y")])
    assert isinstance(checked, PromptList) and checked == [Prompt(id="a", text="x"), Prompt(id="b", text="y")]
    assert checked_prompts(checked) is checked
    with pytest.raises(UsageError, match="^duplicate prompt id 'a'$"):
        checked_prompts([Prompt(id="a", text="x"), Prompt(id="a", text="y")])
