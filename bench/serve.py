"""Serving under load: our `serve` against `transformers serve --continuous-batching`, side by side.

    uv run python bench/serve.py                          # 1, 4, 16 and 64 clients, both servers
    uv run python bench/serve.py --clients 1,16 --rounds 2 --max-tokens 64
    uv run python bench/serve.py --url http://127.0.0.1:8000 --clients 4   # any running server alone

Each concurrency level starts N clients at once; each streams one greedy completion of
`--max-tokens` tokens (`POST /v1/completions`, `stream: true`, a prompt of its own) and records when
each piece of text arrives. Per level and server: aggregate tokens/s (all clients' tokens over the
level's wall time), time to first token (p50, p99) and inter-token latency (the gaps between pieces,
p50 and p99). Levels run our server, then the peer, then ours again for each round, so both see the
same minutes of a machine whose speed drifts.

The peer is the shipped model exported with `export-hf` and served by `transformers serve` from the
side venv (`$MICROGPT_PEER_PYTHON`, default `~/peer-venv/bin/python`, with `transformers[serving]`
installed; DEVELOPERS.md). Tokens are counted from the final usage chunk (`stream_options:
include_usage`) where the server sends one, else one per streamed piece. Standard library only on
the client side: threads and `http.client`.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from _peer import DEFAULT_PEER_PYTHON

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "Return the absolute value of a number.",
    "The list type is",
    "Once upon a time",
    "A dictionary maps",
    "To open a file, call",
    "The module provides",
    "An exception is raised when",
    "Iterators are",
]


@dataclass
class Stream:
    """What one client saw: when it started, when each piece arrived, how many tokens it got."""

    start: float
    arrivals: list[float] = field(default_factory=list)
    tokens: int | None = None  # from the usage chunk, when the server sends one
    error: str | None = None

    @property
    def count(self) -> int:
        return self.tokens if self.tokens is not None else len(self.arrivals)


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sse_events(response: http.client.HTTPResponse) -> Iterator[str]:
    """The `data:` payloads of a server-sent event stream, as they arrive."""
    for raw in response:
        line = raw.decode("utf-8").strip()
        if line.startswith("data:"):
            yield line[5:].strip()


def one_stream(url: str, model: str, prompt: str, max_tokens: int, go: threading.Event) -> Stream:
    parts = urllib.parse.urlsplit(url)
    body = json.dumps({
        "model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True},
    })  # fmt: skip
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    go.wait()
    stream = Stream(start=time.perf_counter())
    try:
        connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            stream.error = f"HTTP {response.status}: {response.read()[:200]!r}"
            return stream
        for data in sse_events(response):
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            if chunk.get("usage"):
                stream.tokens = chunk["usage"]["completion_tokens"]
            if any(choice.get("text") for choice in chunk.get("choices") or []):
                stream.arrivals.append(time.perf_counter())
    except (OSError, ValueError) as e:
        stream.error = f"{type(e).__name__}: {e}"
    finally:
        connection.close()
    return stream


def level(url: str, model: str, clients: int, max_tokens: int) -> dict:
    """N clients at once; the level's figures."""
    go, results = threading.Event(), [None] * clients

    def client(i: int) -> None:
        results[i] = one_stream(url, model, PROMPTS[i % len(PROMPTS)] + f" ({i})", max_tokens, go)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    streams: list[Stream] = results  # type: ignore[assignment]
    errors = [s.error for s in streams if s.error]
    ttft = [s.arrivals[0] - s.start for s in streams if s.arrivals]
    gaps = [b - a for s in streams for a, b in zip(s.arrivals, s.arrivals[1:], strict=False)]
    tokens = sum(s.count for s in streams)
    return {
        "clients": clients, "tokens": tokens, "seconds": wall, "tokens_per_s": tokens / wall,
        "ttft_p50_ms": 1e3 * percentile(ttft, 50), "ttft_p99_ms": 1e3 * percentile(ttft, 99),
        "itl_p50_ms": 1e3 * percentile(gaps, 50), "itl_p99_ms": 1e3 * percentile(gaps, 99),
        "errors": errors[:3],
    }  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def wait_healthy(url: str, process: subprocess.Popen | None, seconds: float = 300) -> None:
    parts = urllib.parse.urlsplit(url)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server at {url} exited with status {process.returncode}")
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                return
        time.sleep(0.5)
    raise RuntimeError(f"the server at {url} did not answer /health within {seconds:.0f} s")


def model_id(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    connection.request("GET", "/v1/models")
    return json.loads(connection.getresponse().read())["data"][0]["id"]


@contextlib.contextmanager
def server(command: list[str], url: str, log: Path) -> Iterator[subprocess.Popen]:
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        wait_healthy(url, process)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def warm(url: str, model: str, clients: list[int], max_tokens: int) -> None:
    """Each level once, untimed: compilations and the peer's lazy model load happen here."""
    for n in clients:
        level(url, model, n, max_tokens)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default="1,4,16,64", help="concurrency levels, comma-separated")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens per stream")
    p.add_argument("--rounds", type=int, default=1, help="timed rounds per level and server")
    p.add_argument("--slots", type=int, default=16, help="our server's decode slots")
    p.add_argument("--url", help="time only the server already running at this URL")
    p.add_argument("--no-peer", action="store_true", help="time our server only")
    args = p.parse_args()
    clients = [int(n) for n in args.clients.split(",")]
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores); {args.max_tokens} tokens per stream", flush=True)

    if args.url:
        model = model_id(args.url)
        warm(args.url, model, clients, args.max_tokens)
        report({"server": [level(args.url, model, n, args.max_tokens) for n in clients]})
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    ours_url = f"http://127.0.0.1:{free_port()}"
    ours = ["uv", "run", "serve", "--model", "default", "--port", ours_url.rsplit(":", 1)[1],
            "--slots", str(args.slots), "--max-queue", str(max(64, 2 * max(clients)))]  # fmt: skip
    peer_python = Path(os.environ.get("MICROGPT_PEER_PYTHON") or DEFAULT_PEER_PYTHON).expanduser()
    peer_bin = peer_python.parent / "transformers"
    use_peer = not args.no_peer and peer_bin.is_file()
    if not args.no_peer and not use_peer:
        print(f"peer skipped: no {peer_bin} (pip install 'transformers[serving]' in the side venv)")
    results: dict[str, list[dict]] = {"microGPT": [], "peer": []}
    with contextlib.ExitStack() as stack:
        stack.enter_context(server(ours, ours_url, work / "ours.log"))
        urls = {"microGPT": (ours_url, model_id(ours_url))}
        if use_peer:
            export = work / "shipped-hf"
            exporting = ["uv", "run", "export-hf", "default", str(export), "--force"]
            subprocess.run(exporting, check=True, cwd=ROOT, capture_output=True)
            peer_url = f"http://127.0.0.1:{free_port()}"
            peer = [str(peer_bin), "serve", "--host", "127.0.0.1", "--port", peer_url.rsplit(":", 1)[1],
                    "--continuous-batching"]  # fmt: skip
            stack.enter_context(server(peer, peer_url, work / "peer.log"))
            urls["peer"] = (peer_url, str(export))
        for url, model in urls.values():
            warm(url, model, clients, args.max_tokens)
        for n in clients:
            for _ in range(args.rounds):
                for name, (url, model) in urls.items():
                    results[name].append(level(url, model, n, args.max_tokens))
    report(results)
    return 0


def report(results: dict[str, list[dict]]) -> None:
    header = "| server | clients | tokens/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | errors |"
    print(header)
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for name, rows in results.items():
        by_clients: dict[int, list[dict]] = {}
        for row in rows:
            by_clients.setdefault(row["clients"], []).append(row)
        for n, runs in by_clients.items():
            med = {
                k: statistics.median(r[k] for r in runs) for k in runs[0] if k not in ("errors", "clients")
            }
            errors = sum(len(r["errors"]) for r in runs)
            print(
                f"| {name} | {n} | {med['tokens_per_s']:,.0f} | {med['ttft_p50_ms']:.0f} ms | "
                f"{med['ttft_p99_ms']:.0f} ms | {med['itl_p50_ms']:.1f} ms | {med['itl_p99_ms']:.1f} ms | "
                f"{errors or ''} |"
            )
            for r in runs:
                for e in r["errors"]:
                    print(f"    error ({name}, {n} clients): {e}", file=sys.stderr)
    print(json.dumps(results))


if __name__ == "__main__":
    sys.exit(main())
