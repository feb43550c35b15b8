"""Options of ``run`` and ``check`` against a server (``--backend openai``)."""

from __future__ import annotations

import argparse

import msgspec

from ..capture.openai import SERVER_DTYPE
from ..capture.runner import RunConfig
from ..errors import UsageError


def add_server_arguments(parser: argparse.ArgumentParser, *, check: bool) -> None:
    server = parser.add_argument_group("server (--backend openai; --model is the served model name)")
    server.add_argument("--base-url", metavar="URL", help="the server, e.g. http://127.0.0.1:8000 (recorded in the header; --redact url leaves it out)")
    server.add_argument("--chat", action="store_true", help="use /v1/chat/completions: the server applies the chat template")
    server.add_argument("--api-key-env", metavar="NAME", help="environment variable holding the API key (the key is never recorded)")
    server.add_argument("--timeout", type=float, default=300.0, metavar="S", help="seconds to wait for one answer (default: %(default)s)")
    if check:
        server.add_argument("--concurrency", default="1,8", metavar="C1,C2,...", help="requests in flight: each prompt --runs times at each level; the first level's runs are the repeats (default: %(default)s)")
        server.add_argument("--prefix-cache-probe", action="store_true", help="first send each prompt cold, then warm, and compare")
    else:
        server.add_argument("--concurrency", type=int, default=1, metavar="C", help="requests in flight (default: %(default)s)")


def with_server_options(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """``config`` with the server options as backend options (refused for another backend)."""
    given = [flag for flag, value in (("--base-url", args.base_url), ("--chat", args.chat), ("--api-key-env", args.api_key_env)) if value]
    if getattr(args, "prefix_cache_probe", False):
        given.append("--prefix-cache-probe")
    if config.backend != "openai":
        if given:
            raise UsageError(f"{given[0]} applies to --backend openai only")
        return config
    options = dict(config.options)
    if args.base_url:
        options["base_url"] = args.base_url
    elif not options.get("base_url"):  # a repro pack's command gives it as --backend-option base_url=URL
        raise UsageError("--backend openai needs --base-url (for example http://127.0.0.1:8000)")
    if args.chat:
        options["chat"] = True
    if args.api_key_env:
        options["api_key_env"] = args.api_key_env
    if args.timeout != 300.0:
        options["timeout"] = args.timeout
    dtype = config.dtype if getattr(args, "dtype", None) is not None else SERVER_DTYPE
    return msgspec.structs.replace(config, options=options, dtype=dtype)
