"""Claiming output directories: two commands never write into one directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detllm._claim import CLAIM_FILE, DirectoryClaim
from detllm.errors import UsageError

from .conftest import ROOT

CHECK = ROOT / "fixtures" / "recorded" / "check-flip"

_HOLDER = """
import sys, time
from detllm._claim import DirectoryClaim
from detllm.errors import UsageError
sys.stdin.readline()  # start together
try:
    with DirectoryClaim(sys.argv[1]):
        print("claimed", flush=True)
        time.sleep(1.0)
except UsageError as error:
    print("refused:", error, flush=True)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def test_two_processes_racing_for_one_directory_one_wins(tmp_path: Path) -> None:
    out = tmp_path / "out"
    procs = [
        subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env=_env())
        for _ in range(2)
    ]  # fmt: skip
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outputs = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outputs[0] == "claimed"
    assert outputs[1].startswith("refused: ") and "\n" not in outputs[1]
    assert not (out / CLAIM_FILE).exists()  # released on the way out


def test_two_packs_racing_into_one_directory(tmp_path: Path) -> None:
    out = tmp_path / "pack"
    command = [sys.executable, "-m", "detllm", "pack", str(CHECK), "--out", str(out), "-q"]
    procs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=_env()) for _ in range(2)]
    finished = sorted((p.wait(timeout=120), p.stderr.read()) for p in procs)  # type: ignore[union-attr]
    assert [code for code, _ in finished] == [0, 2]
    refusal = finished[1][1].strip()
    assert refusal.startswith(f"detllm: {out}: ") and "\n" not in refusal
    assert subprocess.run([sys.executable, "-m", "detllm", "validate", str(out / "traces"), "-q"], env=_env()).returncode == 0
    assert not (out / CLAIM_FILE).exists()


def test_a_claim_is_released_on_an_exception_and_a_created_directory_removed(tmp_path: Path) -> None:
    out = tmp_path / "a" / "b"
    with pytest.raises(KeyboardInterrupt), DirectoryClaim(out):
        assert (out / CLAIM_FILE).is_file()
        raise KeyboardInterrupt
    assert not out.exists()
    out.mkdir()
    with pytest.raises(RuntimeError), DirectoryClaim(out):
        (out / "kept").write_text("x")
        raise RuntimeError
    assert sorted(p.name for p in out.iterdir()) == ["kept"]


def test_a_claim_of_a_running_command_refuses_with_its_pid(tmp_path: Path) -> None:
    with DirectoryClaim(tmp_path / "out") as held:
        with pytest.raises(UsageError) as refused:
            DirectoryClaim(held.directory).acquire()
    assert str(refused.value) == f"{held.directory}: detllm pid {os.getpid()} (started " + str(refused.value).split("(started ")[1]
    assert "is writing into this directory; choose another --out" in str(refused.value)


def test_a_stale_claim_is_reported_not_taken(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    out = tmp_path / "out"
    out.mkdir()
    import socket

    (out / CLAIM_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "2026-12-02T10:00:00Z"}))
    with pytest.raises(UsageError) as refused:
        DirectoryClaim(out).acquire()
    assert str(refused.value) == (
        f"{out}: detllm pid {pid} (started 2026-12-02T10:00:00Z) claimed this directory and is no longer running: "
        f"what it wrote may be incomplete; remove {out / CLAIM_FILE} (or the directory) to use it again"
    )
    assert (out / CLAIM_FILE).exists()


def test_a_non_empty_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    with pytest.raises(UsageError, match="directory is not empty; choose another --out or remove it"):
        DirectoryClaim(tmp_path).acquire()
    assert not (tmp_path / CLAIM_FILE).exists()
