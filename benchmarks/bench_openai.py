"""The openai backend's own cost: requests per second at 64 in flight, and peak memory.

A local endpoint in a process of its own (asyncio, HTTP/1.1 keep-alive) answers every
request at once with the same vLLM-shaped completion (8 tokens, top-5 logprobs), so
what is measured is the client: building the request, the HTTP exchange over
loopback, decoding the JSON and turning it into a trace row. Target: >= 1,000/s.

    python benchmarks/bench_openai.py [--requests 4000] [--in-flight 64]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SERVER = r'''
import asyncio, json, sys
tokens = [65 + i for i in range(8)]
steps = [{f"token_id:{t + j}": -0.1 - j for j in range(5)} for t in tokens]
answer = json.dumps({"id": "x", "object": "text_completion", "model": "bench", "system_fingerprint": "fp",
    "choices": [{"index": 0, "text": "ABCDEFGH", "finish_reason": "length", "token_ids": tokens,
                 "prompt_token_ids": list(range(1, 17)),
                 "logprobs": {"tokens": [f"token_id:{t}" for t in tokens], "token_logprobs": [-0.1] * 8,
                              "top_logprobs": steps, "text_offset": list(range(8))}}],
    "usage": {"prompt_tokens": 16, "completion_tokens": 8, "prompt_tokens_details": {"cached_tokens": 0}}}).encode()
models = json.dumps({"data": [{"id": "bench"}]}).encode()
def reply(body):
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            path = head.split(b" ", 2)[1]
            writer.write(reply(models if path == b"/v1/models" else answer) if path != b"/version" else reply(b'{"version": "bench"}'))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=256)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--in-flight", type=int, default=64)
    args = parser.parse_args()

    from detllm.capture.backend import Prompt
    from detllm.capture.openai import OpenAIBackend, run_pool
    from detllm.capture.registry import BackendConfig
    from detllm.trace import Decoding
    from detllm.writer import canonical_row

    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        backend = OpenAIBackend(BackendConfig(model="bench", options={"base_url": f"http://127.0.0.1:{port}"}))
        decoding = Decoding(do_sample=False, max_new_tokens=8)
        prompts = [Prompt(id=f"p{i}", text=f"prompt number {i}") for i in range(args.requests)]
        warm = prompts[: args.in_flight * 2]
        for _ in run_pool(warm, args.in_flight, lambda p: backend.request_row(p, decoding, 5)):
            pass
        start = time.perf_counter()
        cpu = time.process_time()
        rows = 0
        for _, row in run_pool(prompts, args.in_flight, lambda p: canonical_row(backend.request_row(p, decoding, 5))):
            rows += 1
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        backend.close()
    finally:
        server.terminate()
        server.wait()
    print(f"openai backend client, {args.in_flight} requests in flight, {rows} requests of 8 tokens, top-5:")
    print(f"  {rows / elapsed:,.0f} requests/s ({elapsed:.2f} s wall, {cpu:.2f} s client CPU, {1e6 * cpu / rows:.0f} us CPU per request)")
    print(f"  peak memory (max RSS) {peak / 1024:.1f} MB ({before / 1024:.1f} MB before the backend started)")
    print(f"  target >= 1,000 requests/s: {'met' if rows / elapsed >= 1000 else 'NOT met'}")


if __name__ == "__main__":
    main()
