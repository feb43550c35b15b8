"""A small JSON-over-HTTP client on the standard library, safe to share between threads.

Each thread keeps one keep-alive connection of its own (``http.client``), so ``n``
threads give ``n`` requests in flight. Every failure becomes one
:class:`~detllm.errors.CaptureError` line naming the URL and what happened. Retries
happen only where the request cannot have been acted on, or the server asked for
one: a connection refused before any byte was sent, a kept-alive connection the
server had already closed, and HTTP 503; each is bounded and counted.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import CaptureError


@dataclass(frozen=True)
class RetryPolicy:
    """What is retried, how often and how long it waits; recorded in the trace header."""

    connection_refused: int = 3
    """Retries of a connection refused before any byte of the request was sent."""
    http_503: int = 3
    """Retries of an HTTP 503 (the server says it is busy or starting)."""
    backoff_s: float = 0.25
    """The first wait; each retry waits twice as long as the one before."""
    max_wait_s: float = 4.0

    def to_header(self) -> dict[str, Any]:
        return {
            "connection_refused": self.connection_refused,
            "http_503": self.http_503,
            "backoff_s": self.backoff_s,
            "max_wait_s": self.max_wait_s,
            "reconnect_closed_keepalive": 1,
        }

    def wait(self, attempt: int, retry_after: str | None = None) -> None:
        delay = self.backoff_s * (2**attempt)
        if retry_after is not None:
            try:
                delay = max(delay, float(retry_after))
            except ValueError:
                pass
        time.sleep(min(delay, self.max_wait_s))


class HTTPError(CaptureError):
    """The server answered with an HTTP error status."""

    def __init__(self, message: str, status: int, body: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def one_line(text: str, limit: int = 200) -> str:
    """Server text clipped for an error line (which the CLI escapes when it prints it, once)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class JSONClient:
    """JSON requests to one base URL; the API key, if any, goes only into a request header."""

    def __init__(self, base_url: str, *, api_key: str | None, timeout: float, retry: RetryPolicy | None = None) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CaptureError(f"--base-url {base_url!r}: expected http://HOST:PORT or https://HOST:PORT")
        self.base_url = base_url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self._local = threading.local()
        self._lock = threading.Lock()
        self.retries: dict[str, int] = {"connection_refused": 0, "http_503": 0, "reconnect": 0}

    def url(self, path: str) -> str:
        return self.base_url + path

    def _count(self, what: str) -> None:
        with self._lock:
            self.retries[what] += 1

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, True
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        connection = cls(self._host, self._port, timeout=self.timeout)
        self._local.connection = connection
        return connection, False

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def close(self) -> None:
        self._drop()

    def get(self, path: str) -> Any:
        return self.request("GET", path, None)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, orjson.dumps(body))

    def request(self, method: str, path: str, data: bytes | None) -> Any:
        url = self.url(path)
        refused = busy = reconnects = 0
        while True:
            connection, reused = self._connection()
            sent = False
            try:
                connection.request(method, self._prefix + path, body=data, headers=self._headers)
                sent = True
                response = connection.getresponse()
                status, reason = response.status, response.reason
                retry_after = response.getheader("Retry-After")
                raw = response.read()
                if response.will_close:
                    self._drop()
            except ConnectionRefusedError:
                self._drop()
                if refused < self.retry.connection_refused:
                    self.retry.wait(refused)
                    refused += 1
                    self._count("connection_refused")
                    continue
                raise CaptureError(f"{url}: connection refused ({refused} {'retry' if refused == 1 else 'retries'})") from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop()
                if reused and reconnects < 1:
                    # A kept-alive connection the server had closed: the request was not read.
                    reconnects += 1
                    self._count("reconnect")
                    continue
                what = "the server closed the connection" if sent else "the connection failed"
                raise CaptureError(f"{url}: {what} before answering ({type(exc).__name__})") from None
            except http.client.IncompleteRead as exc:
                self._drop()
                raise CaptureError(f"{url}: the answer was cut short ({len(exc.partial)} bytes received)") from None
            except (TimeoutError, socket.timeout):
                self._drop()
                raise CaptureError(f"{url}: no answer within {self.timeout:g} s") from None
            except http.client.HTTPException as exc:
                self._drop()
                raise CaptureError(f"{url}: not a valid HTTP answer ({type(exc).__name__})") from None
            except OSError as exc:
                self._drop()
                raise CaptureError(f"{url}: {one_line(exc.strerror or str(exc))}") from None
            if status == 503 and busy < self.retry.http_503:
                self.retry.wait(busy, retry_after)
                busy += 1
                self._count("http_503")
                continue
            return self._decode(url, status, reason, raw)

    @staticmethod
    def _decode(url: str, status: int, reason: str, raw: bytes) -> Any:
        try:
            body = orjson.loads(raw) if raw else None
            valid = True
        except orjson.JSONDecodeError as exc:
            body, valid = None, False
            problem = str(exc)
        if status >= 400:
            detail = _error_text(body) if valid else raw[:200].decode("utf-8", "replace")
            message = f"{url}: HTTP {status} {one_line(reason or '', 60)}".rstrip()
            if detail:
                message += f": {one_line(detail)}"
            raise HTTPError(message, status, body)
        if not valid:
            raise CaptureError(f"{url}: the answer is not valid JSON ({one_line(problem, 80)})")
        return body


def _error_text(body: Any) -> str:
    """The message of an OpenAI-style error body (``{"error": {"message": ...}}``), or ''."""
    if isinstance(body, dict):
        error = body.get("error", body.get("message", body.get("detail")))
        if isinstance(error, dict):
            error = error.get("message")
        if isinstance(error, str):
            return error
    return ""
