"""``--backend openai``: any OpenAI-compatible server, through the standard library.

Each prompt is one request to ``/v1/completions`` (or ``/v1/chat/completions`` with
the ``chat`` option, where the server applies the chat template), with ``logprobs``,
``temperature``, ``top_p``, ``seed`` and ``max_tokens``. Token ids come from the
server where it gives them (vLLM: ``return_token_ids`` gives ``token_ids`` and
``prompt_token_ids``; ``return_tokens_as_token_ids`` names each top-logprob entry
``token_id:N``); otherwise they are derived from the text with ``--tokenizer``, and
the header says so. Without ids and without a tokenizer the backend refuses.

The server describes itself once, when the backend starts (``/v1/models``,
``/version`` where there is one, and one request of one token, which also tells
whether it returns ids); the header records it. The API key is read from the
environment variable the ``api_key_env`` option names and goes only into the
``Authorization`` request header: never into a trace, a file or a message.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import CaptureError, UsageError
from ..trace import Artifact, Decoding, Row, Software
from ._http import HTTPError, JSONClient, RetryPolicy, one_line
from .backend import BackendDescription, ForcedSequence, ForcedStep, LogprobMode, Prompt, resolve_decoding, row_seed
from .registry import BackendConfig

COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"
REDACTED = "<redacted>"
OPTIONS = ("base_url", "chat", "api_key_env", "timeout", "concurrency", "redact_url")
SERVER_DTYPE = "unknown"
"""A server's dtype when the user does not give one: servers do not report theirs."""
"""The backend options this backend reads (``--base-url``, ``--chat``, ...)."""

_FINISH_REASONS = {"stop": "stop", "length": "length", "abort": "abort", "eos": "stop", "eos_token": "stop"}
_PROBE_TEXT = "Hello"


class OpenAIBackend:
    """One OpenAI-compatible server, asked one prompt per request."""

    name = "openai"

    def __init__(self, config: BackendConfig) -> None:
        options = dict(config.options)
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise UsageError(f"the openai backend has no option {unknown[0]!r} (it reads {', '.join(OPTIONS[:5])})")
        base_url = options.get("base_url")
        if not isinstance(base_url, str) or not base_url:
            raise UsageError("--backend openai needs --base-url (for example http://127.0.0.1:8000)")
        self.config = config
        self.served_model = config.model
        self.chat = bool(options.get("chat", False))
        self.concurrency = int(options.get("concurrency", 1))
        self.redact_url = bool(options.get("redact_url", False))
        timeout = float(options.get("timeout", 300))
        api_key = None
        key_env = options.get("api_key_env")
        if key_env:
            api_key = os.environ.get(str(key_env))
            if not api_key:
                raise UsageError(f"--api-key-env {key_env}: that environment variable is not set")
        self.retry = RetryPolicy()
        self.client = JSONClient(base_url, api_key=api_key, timeout=timeout, retry=self.retry)
        self.endpoint = CHAT if self.chat else COMPLETIONS
        self._tokenizer: Any = None
        self._tokenizer_artifact: Artifact | None = None
        if config.tokenizer:
            self._load_tokenizer(config.tokenizer)
        self.server = self._describe_server()
        self.ids_from = self._probe()

    # -- what the server says about itself ---------------------------------------------

    def _describe_server(self) -> dict[str, Any]:
        models = self.client.get("/v1/models")
        entries = models.get("data") if isinstance(models, dict) else None
        if not isinstance(entries, list):
            raise CaptureError(f"{self.client.url('/v1/models')}: the answer has no model list ('data')")
        ids = [str(e.get("id")) for e in entries if isinstance(e, dict)]
        if self.served_model not in ids:
            listed = ", ".join(repr(one_line(i, 60)) for i in ids[:5]) or "none"
            raise CaptureError(f"{self.client.url('/v1/models')}: the server does not serve {self.served_model!r} (it serves {listed})")
        entry = next(e for e in entries if isinstance(e, dict) and e.get("id") == self.served_model)
        model = {k: entry[k] for k in ("id", "owned_by", "root", "max_model_len") if k in entry}
        if self.redact_url and "root" in model:
            model["root"] = REDACTED  # the server's path to the model, as revealing as its URL
        version = None
        try:
            answer = self.client.get("/version")
            if isinstance(answer, dict) and isinstance(answer.get("version"), str):
                version = answer["version"]
        except HTTPError:
            pass  # 404: the server has no version endpoint
        return {"models": ids, "model": model, "version": version, "system_fingerprint": None}

    def _probe(self) -> str:
        """One request of one token: does the server give token ids? Also learns its fingerprint."""
        prompt = Prompt(id="probe", text=_PROBE_TEXT)
        body = self._request_body(prompt, Decoding(do_sample=False, max_new_tokens=1), top_k=1)
        answer = self._post(self.endpoint, body)
        fingerprint = answer.get("system_fingerprint") if isinstance(answer, dict) else None
        self.server["system_fingerprint"] = fingerprint if isinstance(fingerprint, str) else None
        choice = _choice(self.client.url(self.endpoint), answer, prompt)
        has_ids = isinstance(choice.get("token_ids"), list) and isinstance(
            (answer if self.chat else choice).get("prompt_token_ids"), list
        )
        if has_ids:
            return "server"
        if self._tokenizer is None:
            raise CaptureError(
                f"{self.client.url(self.endpoint)}: the server returns no token ids (return_token_ids): "
                "give --tokenizer to derive them from the text"
            )
        return "tokenizer"

    def _load_tokenizer(self, name: str) -> None:
        from .models import fingerprint, resolve_model, tokenizer_files

        location = resolve_model(name)
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise CaptureError("--tokenizer needs transformers: pip install 'detllm[hf]'") from None
        self._tokenizer = AutoTokenizer.from_pretrained(str(location.path))
        self._tokenizer_artifact = Artifact(
            id=name, revision=location.revision, fingerprint=fingerprint(tokenizer_files(location.path))
        )

    # -- Backend protocol ----------------------------------------------------------------

    def describe(self) -> BackendDescription:
        server = dict(self.server)
        server["base_url"] = REDACTED if self.redact_url else self.client.base_url
        return BackendDescription(
            backend=Software(name="openai", version=self.server.get("version")),
            model=Artifact(id=self.served_model),
            tokenizer=self._tokenizer_artifact or Artifact(id=self.served_model),
            dtype=self.config.dtype,
            device="server",
            settings={
                "endpoint": self.endpoint,
                "chat": self.chat,
                "concurrency": self.concurrency,
                "token_ids": "server" if self.ids_from == "server" else "derived from text by the tokenizer",
                "server": server,
                "retries": self.retry.to_header(),
                "timeout_s": self.client.timeout,
            },
        )

    def resolve_decoding(self, decoding: Decoding) -> Decoding:
        return resolve_decoding(decoding, "openai")

    def generate(self, batch: Sequence[Prompt], decoding: Decoding, *, top_k: int, logprob_mode: LogprobMode) -> list[Row]:
        """The prompts of ``batch`` sent at once, one request each, ``len(batch)`` in flight."""
        decoding = self.resolve_decoding(decoding)
        rows: list[Row | None] = [None] * len(batch)
        for index, row in run_pool(list(batch), len(batch), lambda p: self.request_row(p, decoding, top_k)):
            rows[index] = row
        return [row for row in rows if row is not None]

    def close(self) -> None:
        self.client.close()

    # -- one request, one row ------------------------------------------------------------

    def request_row(self, prompt: Prompt, decoding: Decoding, top_k: int) -> Row:
        row, _ = self.request(prompt, decoding, top_k)
        return row

    def request(self, prompt: Prompt, decoding: Decoding, top_k: int) -> tuple[Row, int | None]:
        """One prompt's row, and the cached prompt tokens the server reported (None: not reported)."""
        url = self.client.url(self.endpoint)
        answer = self._post(self.endpoint, self._request_body(prompt, decoding, top_k))
        choice = _choice(url, answer, prompt)
        try:
            row = self._row(prompt, answer, choice, top_k)
        except CaptureError as exc:
            raise CaptureError(f"{url}: prompt {prompt.id!r}: {exc}") from None
        usage = answer.get("usage") if isinstance(answer, dict) else None
        details = usage.get("prompt_tokens_details") if isinstance(usage, dict) else None
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return row, cached if isinstance(cached, int) else None

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        answer = self.client.post(path, body)
        if not isinstance(answer, dict):
            raise CaptureError(f"{self.client.url(path)}: the answer is not a JSON object")
        return answer

    def _request_body(self, prompt: Prompt, decoding: Decoding, top_k: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.served_model, "max_tokens": decoding.max_new_tokens, "stream": False}
        if self.chat:
            if prompt.text is None:
                raise UsageError(f"prompt {prompt.id!r}: --chat needs prompt text, not token ids")
            body["messages"] = [{"role": "user", "content": prompt.text}]
            body["logprobs"] = True
            body["top_logprobs"] = top_k
        else:
            body["prompt"] = prompt.text if prompt.text is not None else list(prompt.token_ids or ())
            body["logprobs"] = top_k
        if decoding.do_sample:
            body["temperature"] = decoding.temperature
            body["top_p"] = decoding.top_p
            if decoding.top_k:
                body["top_k"] = decoding.top_k
            assert decoding.seed is not None
            body["seed"] = row_seed(decoding.seed, prompt.id)
        else:
            body["temperature"] = 0.0
        # vLLM extensions; other servers ignore fields they do not know.
        body["return_token_ids"] = True
        body["return_tokens_as_token_ids"] = True
        return body

    def _row(self, prompt: Prompt, answer: dict[str, Any], choice: dict[str, Any], top_k: int) -> Row:
        tokens, chosen, tops = _logprobs(choice, self.chat)
        if self.ids_from == "server":
            token_ids = _int_list(choice.get("token_ids"), "token_ids")
            input_ids = _int_list((answer if self.chat else choice).get("prompt_token_ids"), "prompt_token_ids")
        else:
            token_ids = self._ids_from_text(tokens, choice)
            input_ids = self._prompt_ids(prompt)
        if len(tokens) != len(token_ids):
            raise CaptureError(f"logprobs cover {len(tokens)} tokens but the completion has {len(token_ids)}")
        logprobs: list[float] = []
        top: list[list[tuple[int, float]]] = []
        for i, (token, value, entries) in enumerate(zip(token_ids, chosen, tops)):
            if value is None or not math.isfinite(value):
                raise CaptureError(f"step {i}: the chosen token has logprob {value!r}")
            pairs = [(self._key_id(key), lp) for key, lp in entries]
            step = sorted({t: lp for t, lp in pairs if t is not None and lp != -math.inf}.items(), key=lambda p: (-p[1], p[0]))
            listed = dict(step).get(token)
            if listed is not None and listed != value:
                raise CaptureError(f"step {i}: the chosen token {token} has logprob {value!r} but {listed!r} in its top-k")
            logprobs.append(float(value))
            top.append([(t, float(lp)) for t, lp in step[:top_k]])
        reason = _FINISH_REASONS.get(str(choice.get("finish_reason")))
        if reason is None:
            raise CaptureError(f"finish_reason {one_line(str(choice.get('finish_reason')), 40)!r} is not one detLLM knows")
        texts = {t: s for t, s in zip(token_ids, tokens) if not s.startswith("token_id:")}
        return Row(
            prompt_id=prompt.id,
            input_token_ids=input_ids,
            token_ids=token_ids,
            logprobs=logprobs,
            top_logprobs=top,
            finish_reason=reason,
            token_texts=texts or None,
            prompt=prompt.text,
        )

    def _key_id(self, key: str) -> int | None:
        if key.startswith("token_id:"):
            try:
                return int(key.removeprefix("token_id:"))
            except ValueError:
                raise CaptureError(f"a top-logprob entry is named {one_line(key, 40)!r}") from None
        if self._tokenizer is None:
            raise CaptureError(
                "the server names its top logprobs by text, not by id (return_tokens_as_token_ids): give --tokenizer"
            )
        ids = self._tokenizer.encode(key, add_special_tokens=False)
        return int(ids[0]) if len(ids) == 1 else None  # text that is not one token cannot be placed

    def _ids_from_text(self, tokens: list[str], choice: dict[str, Any]) -> list[int]:
        if tokens and all(t.startswith("token_id:") for t in tokens):
            return [int(t.removeprefix("token_id:")) for t in tokens]
        pieces = [self._tokenizer.encode(t, add_special_tokens=False) for t in tokens]
        if all(len(p) == 1 for p in pieces):
            return [int(p[0]) for p in pieces]
        whole = [int(t) for t in self._tokenizer.encode(str(choice.get("text") or ""), add_special_tokens=False)]
        if len(whole) != len(tokens):
            raise CaptureError(
                f"the tokenizer makes {len(whole)} tokens of the completion's text, the server {len(tokens)}: "
                "the ids cannot be derived (is --tokenizer the server's?)"
            )
        return whole

    def _prompt_ids(self, prompt: Prompt) -> list[int]:
        if prompt.token_ids is not None:
            return list(prompt.token_ids)
        if self.chat:
            ids = self._tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt.text}], add_generation_prompt=True, tokenize=True
            )
            if isinstance(ids, dict):
                ids = ids["input_ids"]
            return [int(t) for t in ids]
        return [int(t) for t in self._tokenizer(prompt.text)["input_ids"]]

    # -- replay (Scorer) -------------------------------------------------------------------

    def score(self, batch: Sequence[ForcedSequence], *, top_k: int) -> list[list[ForcedStep]]:
        """Forced decoding in one request per sequence: the input and forced ids as the
        prompt, ``prompt_logprobs=top_k``, ``max_tokens=1`` (vLLM)."""
        if self.chat:
            raise CaptureError("replay goes through /v1/completions: leave out --chat")
        url = self.client.url(COMPLETIONS)
        results: list[list[ForcedStep] | None] = [None] * len(batch)
        for index, steps in run_pool(list(batch), max(1, min(len(batch), self.concurrency)), lambda s: self._score_one(url, s, top_k)):
            results[index] = steps
        return [r for r in results if r is not None]

    def _score_one(self, url: str, sequence: ForcedSequence, top_k: int) -> list[ForcedStep]:
        if not sequence.input_ids:
            raise CaptureError(f"replay of {sequence.prompt_id!r}: the input has no tokens")
        ids = [*sequence.input_ids, *sequence.forced_ids]
        body = {
            "model": self.served_model,
            "prompt": ids,
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": top_k,
            "return_tokens_as_token_ids": True,
            "stream": False,
        }
        try:
            answer = self._post(COMPLETIONS, body)
        except HTTPError as exc:
            if exc.status in (400, 422):
                raise CaptureError(f"{url}: the server refused prompt_logprobs, so it cannot replay ({exc})") from None
            raise
        choice = _choice(url, answer, Prompt(id=sequence.prompt_id, token_ids=tuple(ids)))
        positions = choice.get("prompt_logprobs", answer.get("prompt_logprobs"))
        if not isinstance(positions, list):
            raise CaptureError(f"{url}: the server gives no prompt_logprobs, so it cannot replay")
        if len(positions) != len(ids):
            raise CaptureError(f"{url}: prompt_logprobs cover {len(positions)} positions of {len(ids)}")
        steps = []
        start = len(sequence.input_ids)
        for i, token in enumerate(sequence.forced_ids):
            entries = positions[start + i]
            if not isinstance(entries, dict):
                raise CaptureError(f"{url}: replay of {sequence.prompt_id!r}: no logprobs at forced token {i}")
            parsed = {}
            for key, value in entries.items():
                try:
                    parsed[int(str(key).removeprefix("token_id:"))] = value
                except ValueError:
                    raise CaptureError(f"{url}: prompt_logprobs key {one_line(str(key), 40)!r} is not a token id") from None
            own = parsed.get(token)
            if not isinstance(own, dict) or "logprob" not in own or "rank" not in own:
                raise CaptureError(f"{url}: replay of {sequence.prompt_id!r}: no logprob and rank for forced token {i}")
            ranked = sorted(
                ((t, float(e["logprob"])) for t, e in parsed.items() if isinstance(e, dict) and isinstance(e.get("rank"), int) and e["rank"] <= top_k),
                key=lambda p: (-p[1], p[0]),
            )[:top_k]
            steps.append(
                ForcedStep(
                    logprob=float(own["logprob"]),
                    rank=int(own["rank"]),
                    top_ids=tuple(t for t, _ in ranked),
                    top_logprobs=tuple(v for _, v in ranked),
                )
            )
        return steps


def _choice(url: str, answer: Any, prompt: Prompt) -> dict[str, Any]:
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        count = len(choices) if isinstance(choices, list) else "no"
        raise CaptureError(f"{url}: prompt {prompt.id!r}: the answer has {count} choices, expected 1")
    return choices[0]


def _int_list(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        raise CaptureError(f"{name} is missing or not a list of token ids")
    return value


def _logprobs(choice: dict[str, Any], chat: bool) -> tuple[list[str], list[float | None], list[list[tuple[str, float]]]]:
    """Token strings, chosen logprobs and top-k entries, from either endpoint's shape."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        raise CaptureError("the answer has no logprobs")
    tokens: list[str] = []
    chosen: list[float | None] = []
    tops: list[list[tuple[str, float]]] = []
    try:
        if chat:
            for entry in logprobs.get("content") or []:
                tokens.append(str(entry["token"]))
                chosen.append(entry.get("logprob"))
                tops.append([(str(e["token"]), float(e["logprob"])) for e in entry.get("top_logprobs") or []])
        else:
            tokens = [str(t) for t in logprobs.get("tokens") or []]
            chosen = list(logprobs.get("token_logprobs") or [])
            tops = [[(str(k), float(v)) for k, v in (step or {}).items()] for step in logprobs.get("top_logprobs") or []]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise CaptureError("the logprobs are not in the OpenAI shape") from None
    if not (len(tokens) == len(chosen) == len(tops)):
        raise CaptureError(f"logprobs list {len(tokens)} tokens, {len(chosen)} logprobs and {len(tops)} top-k steps")
    return tokens, chosen, tops


# -- requests in flight ------------------------------------------------------------------


def run_pool(jobs: list[Any], workers: int, work: Callable[[Any], Any], *, poll_s: float = 0.2) -> Iterator[tuple[int, Any]]:
    """``(index, work(job))`` as each finishes, with ``workers`` jobs in flight at once.

    The threads are daemons and stop taking jobs after the first failure (or when the
    caller stops iterating, on Ctrl-C): an interrupted run never waits for the rest.
    """
    if not jobs:
        return
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(jobs)):
        todo.put(index)
    done: queue.SimpleQueue[tuple[int, Any, BaseException | None]] = queue.SimpleQueue()
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((index, work(jobs[index]), None))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                done.put((index, None, exc))
                return

    threads = [threading.Thread(target=worker, daemon=True, name=f"detllm-request-{i}") for i in range(min(workers, len(jobs)))]
    for thread in threads:
        thread.start()
    try:
        for _ in range(len(jobs)):
            while True:
                try:
                    index, result, error = done.get(timeout=poll_s)
                    break
                except queue.Empty:
                    if not any(t.is_alive() for t in threads) and done.empty():
                        raise CaptureError("every request thread ended before the work was done") from None
            if error is not None:
                raise error
            yield index, result
    finally:
        stop.set()
