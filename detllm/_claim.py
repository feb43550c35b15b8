"""Claiming an output directory, so that two commands never write into the same one.

A command that writes a run, check or pack directory first creates ``.detllm-claim``
in it with ``O_CREAT | O_EXCL`` (atomic on every local file system): the first
command wins, a second one is refused. The claim holds the owner's process id and
start time, and is removed on every way out of the ``with`` block, exceptions and
KeyboardInterrupt included. A claim left by a process that no longer runs (killed)
is reported, never taken over silently: what that process left may be incomplete.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from pathlib import Path
from types import TracebackType

import orjson

from .errors import UsageError

CLAIM_FILE = ".detllm-claim"


class DirectoryClaim:
    """The right to write into ``directory``, from :meth:`acquire` until :meth:`release`.

    ``created``: whether this claim made the directory (so the owner may remove it
    when it fails before writing anything).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.path = self.directory / CLAIM_FILE
        self.created = False
        self._held = False

    def acquire(self) -> DirectoryClaim:
        directory = self.directory
        if directory.exists() and not directory.is_dir():
            raise UsageError(f"{directory}: exists and is not a directory")
        if directory.is_dir():
            self._refuse_if_used()
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(directory)
            self.created = True
        except FileExistsError:
            if not directory.is_dir():
                raise UsageError(f"{directory}: exists and is not a directory") from None
        except OSError as exc:
            raise UsageError(f"{directory}: cannot be created ({exc.strerror or exc})") from None
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            self._refuse_if_used()
            raise UsageError(f"{directory}: another detllm command claimed it first; choose another --out") from None
        except OSError as exc:
            raise UsageError(f"{directory}: cannot be claimed ({exc.strerror or exc})") from None
        self._held = True
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps(_owner()) + b"\n")
            # Claimed: now nothing else may be here (a command that finished between our
            # first look and the claim has left its files).
            others = [p.name for p in directory.iterdir() if p.name != CLAIM_FILE]
            if others:
                raise UsageError(f"{directory}: directory is not empty; choose another --out or remove it")
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        if self._held:
            self._held = False
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> DirectoryClaim:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
        if value is not None and self.created:
            try:
                self.directory.rmdir()  # only when empty: a failure before anything was written
            except OSError:
                pass

    def _refuse_if_used(self) -> None:
        """Refuse a directory that is claimed or holds files (a claim's own race aside)."""
        problem = claim_problem(self.directory)
        if problem is not None:
            raise UsageError(problem)
        try:
            used = any(self.directory.iterdir())
        except OSError as exc:
            raise UsageError(f"{self.directory}: cannot be read ({exc.strerror or exc})") from None
        if used:
            raise UsageError(f"{self.directory}: directory is not empty; choose another --out or remove it")


def claim_problem(directory: str | os.PathLike[str]) -> str | None:
    """One line on the claim in ``directory``: held by a running command, or left by a dead one."""
    path = Path(directory) / CLAIM_FILE
    owner: object = {}
    for attempt in range(3):  # a claim is created, then written: give its owner a moment
        try:
            owner = orjson.loads(path.read_bytes())
            break
        except FileNotFoundError:
            return None
        except (OSError, orjson.JSONDecodeError):
            time.sleep(0.1 * (attempt + 1))
    if not isinstance(owner, dict):
        owner = {}
    pid, started, host = owner.get("pid"), owner.get("started"), owner.get("host")
    who = f"detllm pid {pid}" + (f" (started {started})" if started else "")
    if isinstance(pid, int) and host == socket.gethostname() and not _alive(pid):
        return (
            f"{Path(directory)}: {who} claimed this directory and is no longer running: what it wrote may be "
            f"incomplete; remove {path} (or the directory) to use it again"
        )
    if not isinstance(pid, int):
        return f"{Path(directory)}: holds an unreadable claim ({path}); remove it if no detllm command writes here"
    where = "" if host == socket.gethostname() else f" on {host}"
    return f"{Path(directory)}: {who}{where} is writing into this directory; choose another --out"


def _owner() -> dict[str, object]:
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": started}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True
