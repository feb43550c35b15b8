"""A small OpenAI-compatible server for tests, on 127.0.0.1, that misbehaves on request.

It answers like vLLM: ``return_token_ids`` gives ``token_ids`` and ``prompt_token_ids``,
``return_tokens_as_token_ids`` names top-logprob entries ``token_id:N``, and
``prompt_logprobs`` works on a prompt of token ids. Its "model" works on bytes: a
prompt's token ids are its UTF-8 bytes, and the tokens it generates follow from them
deterministically. ``behaviour`` switches on one fault at a time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "fake-model"


def _generate(input_ids: list[int], n: int, flip: bool) -> list[int]:
    seed = sum(input_ids) % 97
    out = [65 + (seed + 7 * i) % 26 for i in range(n)]
    if flip and n > 3:
        out[3] = 97 + (out[3] - 65)  # lower case from the fourth token on: other tokens
    return out


def _top(token: int, i: int, k: int) -> list[tuple[int, float]]:
    chosen = -0.125 * (1 + i % 3)
    others = [((token + j) % 256, chosen - 0.5 * j) for j in range(1, k)]
    return [(token, chosen), *others]


class FakeServer:
    def __init__(self, **behaviour: Any) -> None:
        self.behaviour: dict[str, Any] = dict(behaviour)
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.scored_in_flight: list[int] = []
        """Per scoring request (``prompt_logprobs``), the requests in flight when it was answered."""
        self.authorizations: list[str | None] = []
        self.seen_prompts: set[tuple[int, ...]] = set()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "tests", "max_model_len": 256}]})
                elif self.path == "/version" and not server.behaviour.get("no_version"):
                    self._json(200, {"version": "fake-1.0"})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server.lock:
                    server.requests += 1
                    number = server.requests
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    server.authorizations.append(self.headers.get("Authorization"))
                try:
                    self._answer(body, number)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def _answer(self, body: dict[str, Any], number: int) -> None:
                b = server.behaviour
                probe = number == 1
                delay = b.get("delay", 0.0)
                if delay:
                    time.sleep(delay)
                with server.lock:
                    crowded = server.in_flight > 1
                if not probe:
                    if b.get("die_after") is not None and number > b["die_after"] + 1:
                        server.close_soon()
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if b.get("status") and number > b.get("status_after", 0) + 1:
                        self._json(b["status"], {"error": {"message": f"fault {b['status']} on purpose\x1b[31m"}})
                        return
                    if b.get("busy_once") and number == 2:
                        self._json(503, {"error": {"message": "busy"}}, extra={"Retry-After": "0"})
                        return
                    if b.get("malformed"):
                        self._raw(200, b'{"choices": [{"text": ')
                        return
                    if b.get("truncated"):
                        self._raw(200, b'{"choices": []}', length=400)
                        self.close_connection = True
                        return
                    if b.get("hang"):
                        time.sleep(b["hang"])
                if "prompt_logprobs" in body and body["prompt_logprobs"] is not None:
                    if b.get("refuse_prompt_logprobs"):
                        self._json(400, {"error": {"message": "prompt_logprobs is not supported"}})
                        return
                    with server.lock:
                        server.scored_in_flight.append(server.in_flight)
                    self._json(200, self._scored(body))
                    return
                chat = self.path == "/v1/chat/completions"
                if chat:
                    text = "<user>" + body["messages"][0]["content"]
                    input_ids = list(text.encode())
                else:
                    prompt = body["prompt"]
                    input_ids = list(prompt) if isinstance(prompt, list) else list(prompt.encode())
                n = int(body.get("max_tokens", 16))
                k = int(body.get("top_logprobs", 0) if chat else body.get("logprobs") or 0)
                flip = bool(b.get("flip_when_crowded")) and crowded and not probe
                tokens = _generate(input_ids, n, flip)
                by_id = body.get("return_tokens_as_token_ids") and not b.get("no_ids")
                name = (lambda t: f"token_id:{t}") if by_id else (lambda t: chr(t))
                key = tuple(input_ids)
                with server.lock:
                    cached = len(input_ids) - 1 if key in server.seen_prompts else 0
                    server.seen_prompts.add(key)
                steps = [_top(t, i, max(k, 1))[:max(k, 1)] for i, t in enumerate(tokens)]
                choice: dict[str, Any] = {"index": 0, "text": "".join(chr(t) for t in tokens), "finish_reason": "length"}
                if chat:
                    choice["logprobs"] = {"content": [
                        {"token": name(t), "logprob": s[0][1], "top_logprobs": [{"token": name(a), "logprob": v} for a, v in s]}
                        for t, s in zip(tokens, steps)]}
                else:
                    choice["logprobs"] = {
                        "tokens": [name(t) for t in tokens],
                        "token_logprobs": [s[0][1] for s in steps],
                        "top_logprobs": [{name(a): v for a, v in s} for s in steps],
                        "text_offset": list(range(n)),
                    }
                answer: dict[str, Any] = {"id": f"cmpl-{number}", "object": "text_completion", "model": MODEL,
                                          "system_fingerprint": "fp-fake", "choices": [choice]}
                if body.get("return_token_ids") and not b.get("no_ids"):
                    choice["token_ids"] = tokens
                    (answer if chat else choice)["prompt_token_ids"] = input_ids
                usage: dict[str, Any] = {"prompt_tokens": len(input_ids), "completion_tokens": n}
                if not b.get("no_cache_report"):
                    usage["prompt_tokens_details"] = {"cached_tokens": 0 if b.get("never_cache") else cached}
                answer["usage"] = usage
                self._json(200, answer)

            def _scored(self, body: dict[str, Any]) -> dict[str, Any]:
                ids = list(body["prompt"])
                k = int(body["prompt_logprobs"])
                positions: list[Any] = [None]
                for i, token in enumerate(ids[1:]):
                    entries = {str(token): {"logprob": -0.25, "rank": 1, "decoded_token": chr(token % 128)}}
                    for j in range(1, k):
                        entries[str((token + j) % 256)] = {"logprob": -0.25 - j, "rank": j + 1, "decoded_token": "x"}
                    positions.append(entries)
                choice = {"index": 0, "text": "A", "finish_reason": "length", "prompt_logprobs": positions, "prompt_token_ids": ids}
                return {"id": "cmpl-score", "model": MODEL, "choices": [choice], "usage": {"prompt_tokens": len(ids)}}

            def _json(self, status: int, value: Any, extra: dict[str, str] | None = None) -> None:
                self._raw(status, json.dumps(value).encode(), extra=extra)

            def _raw(self, status: int, data: bytes, *, length: int | None = None, extra: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data) if length is None else length))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> FakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close_soon(self) -> None:
        threading.Thread(target=self.close, daemon=True).start()

    def close(self) -> None:
        if self.thread.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    """A loopback port nothing listens on (for "connection refused")."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
