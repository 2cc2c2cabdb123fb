"""The server's Prometheus metrics (text exposition format 0.0.4), written by hand.

    microgpt_requests_total{endpoint, status}       counter   answered HTTP requests
    microgpt_prompt_tokens_total                    counter   prompt tokens of finished generations
    microgpt_generation_tokens_total                counter   tokens generated
    microgpt_requests_running / _queued             gauge     the engine's slots in use, its queue
    microgpt_time_to_first_token_seconds            histogram from submission to the first token
    microgpt_inter_token_latency_seconds            histogram between consecutive tokens

The timings are the engine's (`Finished.time_to_first_token`, `Finished.token_gaps`); the requests are
counted by `CountRequests`, the app's ASGI middleware.
"""

from __future__ import annotations

import bisect
import collections
import threading
from typing import Any

from microgpt_infer.engine.batching import EngineMetrics
from microgpt_infer.engine.requests import Finished

__all__ = ["CountRequests", "Histogram", "Metrics"]

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """Cumulative buckets (upper bounds `bounds`, then +Inf), a sum and a count."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last is +Inf
        self.sum, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, total = [], 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {total}')
        return [*out, f"{name}_sum {self.sum!r}", f"{name}_count {self.count}"]


class Metrics:
    """Counters the handlers update (from the event loop, or any thread: a lock guards them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: collections.Counter[tuple[str, int]] = collections.Counter()
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)

    def request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[endpoint, status] += 1

    def finished(self, event: Finished) -> None:
        with self._lock:
            self.prompt_tokens += event.prompt_tokens
            self.generation_tokens += event.num_tokens
            if event.time_to_first_token is not None:
                self.ttft.observe(event.time_to_first_token)
            for gap in event.token_gaps:
                self.itl.observe(gap)

    def render(self, engine: EngineMetrics) -> str:
        """The exposition text, with the engine's gauges at this moment."""
        m = "microgpt_"
        with self._lock:
            lines = [
                f"# HELP {m}requests_total HTTP requests answered, by endpoint and status.",
                f"# TYPE {m}requests_total counter",
            ]
            for (endpoint, status), n in sorted(self.requests.items()):
                lines.append(f'{m}requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
            for name, kind, value, what in (
                (
                    "prompt_tokens_total",
                    "counter",
                    self.prompt_tokens,
                    "Prompt tokens of finished generations.",
                ),
                ("generation_tokens_total", "counter", self.generation_tokens, "Tokens generated."),
                ("requests_running", "gauge", engine.running, "Requests in the engine's decode slots."),
                ("requests_queued", "gauge", engine.queued, "Requests waiting for a slot."),
                (
                    "requests_rejected_total",
                    "counter",
                    engine.rejected_requests,
                    "Requests refused: full queue.",
                ),
            ):
                lines += [f"# HELP {m}{name} {what}", f"# TYPE {m}{name} {kind}", f"{m}{name} {value}"]
            for name, histogram, what in (
                ("time_to_first_token_seconds", self.ttft, "Seconds from submission to the first token."),
                ("inter_token_latency_seconds", self.itl, "Seconds between consecutive tokens."),
            ):
                lines += [
                    f"# HELP {m}{name} {what}",
                    f"# TYPE {m}{name} histogram",
                    *histogram.lines(m + name),
                ]
        return "\n".join(lines) + "\n"


class CountRequests:
    """ASGI middleware: counts every HTTP answer in `metrics.requests`, by endpoint (one of
    `endpoints`, else "other") and status."""

    def __init__(self, app: Any, metrics: Metrics, endpoints: tuple[str, ...]) -> None:
        self.app, self.metrics, self.endpoints = app, metrics, endpoints

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        endpoint = scope["path"] if scope["path"] in self.endpoints else "other"

        async def counted(message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.request(endpoint, message["status"])
            await send(message)

        await self.app(scope, receive, counted)
