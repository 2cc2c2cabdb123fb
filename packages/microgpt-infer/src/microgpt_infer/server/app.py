"""The OpenAI-compatible HTTP app: `create_app(model, ...) -> Starlette`.

    GET  /v1/models              the one model served
    POST /v1/completions         text completions (prompt: str, list of str, token ids), streaming or not
    POST /v1/chat/completions    the model's chat template (microgpt_infer.chat) over `messages`
    GET  /health                 {"status": "ok"} while the engine runs (503 once it failed)
    GET  /metrics                Prometheus text (server/metrics.py)
    GET  /                       the playground page (microgpt_infer/pages/playground.html)

The engine (`microgpt_infer.engine.Engine`) is made and warmed up by `create_app`, and stopped when
the app's lifespan ends (`engine.stop(stop_timeout)`). Its thread does all the generating; the
handlers only await each request's `Stream` (`async for`), so the event loop never blocks (an
echoed prompt's log-probabilities, server/scoring.py, are computed in a worker thread; with
`max_tokens` 0 they are the whole answer, and nothing reaches the engine). A
streaming client that disconnects cancels its engine streams, which frees their slots at the next
step. Every bad request is a 4xx with OpenAI's error body naming the parameter (server/schema.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from microgpt_infer.engine import Engine
from microgpt_infer.folder import Model
from microgpt_infer.server import responses as shapes
from microgpt_infer.server.choices import Choice, Piece, cancel, encode_prompts, pieces, submit, too_long
from microgpt_infer.server.metrics import CountRequests, Metrics
from microgpt_infer.server.schema import Job, RequestError, parse_json, read_chat, read_completion
from microgpt_infer.server.scoring import prompt_logprobs

__all__ = ["PLAYGROUND", "create_app"]

PLAYGROUND = Path(__file__).resolve().parents[1] / "pages" / "playground.html"
ENDPOINTS = ("/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions")
MAX_BODY = 4 * 2**20  # bytes
DISCONNECT_POLL_S = 0.05  # how often a non-streaming request checks that its client is still there
CLIENT_CLOSED = 499  # the status of a request whose client went away (nginx's; nobody reads it)


class Server:
    """What the handlers share: the model, its engine, the limits and the metrics."""

    def __init__(self, model: Model, engine: Engine, name: str, max_tokens_limit: int, max_n: int) -> None:
        self.model, self.engine, self.name = model, engine, name
        self.tokenizer = model.tokenizer
        eot = model.tokenizer.eot_id
        self.eot_id = eot if eot < model.config.vocab_size else None
        self.max_tokens_limit, self.max_n = max_tokens_limit, max_n
        self.metrics = Metrics()
        self.created = int(time.time())
        from microgpt_infer import chat

        self.chat = chat
        self.template = chat.load_chat_template(model.source) if model.source is not None else None

    # -- endpoints ------------------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        card = {"id": self.name, "object": "model", "created": self.created, "owned_by": "microgpt"}
        card["max_model_len"] = self.engine.max_len
        return JSONResponse({"object": "list", "data": [card]})

    async def health(self, request: Request) -> Response:
        if self.engine.error is not None:
            return JSONResponse({"status": "error", "error": repr(self.engine.error)}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def prometheus(self, request: Request) -> Response:
        text = self.metrics.render(self.engine.metrics())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def playground(self, request: Request) -> Response:
        if not PLAYGROUND.is_file():
            raise RequestError("the playground page is not installed", None, status=404, code="not_found")
        return FileResponse(PLAYGROUND, media_type="text/html; charset=utf-8")

    async def completions(self, request: Request) -> Response:
        job = read_completion(await _body(request), max_n=self.max_n)
        self._check_model(job)
        prompts = encode_prompts(self.tokenizer, job.prompts, allow_special=False)
        texts = [self.tokenizer.decode(p) if isinstance(p, list) else p for p in job.prompts]
        if job.max_tokens == 0:
            return await self._echo_only(job, prompts, texts)
        choices = submit(
            self.engine, job, prompts, eot_id=self.eot_id, max_tokens_limit=self.max_tokens_limit, chat=False
        )
        id_ = shapes.new_id("cmpl")
        echo = [texts[c.index // job.n] if job.echo else "" for c in choices]
        scored: list[list] = []  # with echo and logprobs, each prompt's own (scoring.py)
        if job.echo and job.logprobs is not None:
            try:
                scored = await asyncio.to_thread(self._score, prompts, job.logprobs)
            except BaseException:
                cancel(choices)
                raise

        def choice_chunk(choice: Choice, piece: Piece, first: bool) -> dict[str, Any]:
            text = (echo[choice.index] if first else "") + piece.text
            logprobs = None
            if job.logprobs is not None:
                offset = len(echo[choice.index]) + len(choice.text) - len(piece.text)
                tokens = piece.tokens
                if first and job.echo:
                    offset, tokens = 0, [*scored[choice.index // job.n], *tokens]
                logprobs = shapes.completion_logprobs(self.tokenizer, tokens, offset)
            return shapes.completion_choice(choice.index, text, logprobs, piece.finish_reason)

        if job.stream:
            created = int(time.time())
            chunk = lambda c, p, first: shapes.completion(
                id_, self.name, [choice_chunk(c, p, first)], None, created
            )
            last = lambda use: shapes.completion(id_, self.name, [], use, created)
            return self._stream(job, choices, chunk, last)
        if not await self._run(request, job, choices):
            return Response(status_code=CLIENT_CLOSED)
        out = []
        for choice in choices:
            whole = Piece(choice.text, choice.tokens, choice.finish_reason)
            out.append(choice_chunk(choice, whole, True))
        return JSONResponse(shapes.completion(id_, self.name, out, _usage(choices, job.n)))

    async def chat_completions(self, request: Request) -> Response:
        job = read_chat(await _body(request), max_n=self.max_n)
        self._check_model(job)
        try:
            text, stops = self.chat.render_reply_prompt(job.messages, self.template, self.tokenizer.eot_token)
        except self.chat.ChatTemplateError as e:
            raise RequestError(str(e), "messages") from None
        prompts = encode_prompts(self.tokenizer, [text], allow_special=True)
        job = _with_stops(job, stops)
        choices = submit(
            self.engine, job, prompts, eot_id=self.eot_id, max_tokens_limit=self.max_tokens_limit, chat=True
        )
        id_ = shapes.new_id("chatcmpl")
        logprobs = lambda tokens: (
            None if job.logprobs is None else shapes.chat_logprobs(self.tokenizer, tokens)
        )  # fmt: skip
        if job.stream:
            created = int(time.time())

            def chunk(choice: Choice, piece: Piece, first: bool) -> dict[str, Any]:
                delta = {"role": "assistant", "content": piece.text} if first else {"content": piece.text}
                choice_ = shapes.chat_delta(choice.index, delta, logprobs(piece.tokens), piece.finish_reason)
                return shapes.chat_chunk(id_, self.name, created, [choice_])

            last = lambda use: shapes.chat_chunk(id_, self.name, created, [], use)
            return self._stream(job, choices, chunk, last)
        if not await self._run(request, job, choices):
            return Response(status_code=CLIENT_CLOSED)
        out = [shapes.chat_choice(c.index, c.text, logprobs(c.tokens), c.finish_reason) for c in choices]
        return JSONResponse(shapes.chat_completion(id_, self.name, out, _usage(choices, job.n)))

    # -- helpers --------------------------------------------------------------------------
    async def _echo_only(self, job: Job, prompts: list[list[int]], texts: list[str]) -> Response:
        """`max_tokens` 0 with `echo`: each prompt back with no new token (finish reason "length"),
        its log-probabilities when `logprobs` is set; how OpenAI's legacy completions, vLLM and older
        lm-evaluation-harness score a text. Nothing reaches the engine."""
        for ids in prompts:
            if len(ids) > self.engine.max_len:
                raise too_long("prompt", len(ids), self.engine.max_len)
        scored = [] if job.logprobs is None else await asyncio.to_thread(self._score, prompts, job.logprobs)
        out = []
        for index in range(len(prompts) * job.n):
            p = index // job.n
            logprobs = shapes.completion_logprobs(self.tokenizer, scored[p], 0) if scored else None
            out.append(shapes.completion_choice(index, texts[p], logprobs, "length"))
        use = shapes.usage(sum(len(ids) for ids in prompts), 0)
        id_, created = shapes.new_id("cmpl"), int(time.time())
        if not job.stream:
            return JSONResponse(shapes.completion(id_, self.name, out, use, created))

        async def events() -> AsyncIterator[bytes]:
            for choice in out:
                yield shapes.sse(shapes.completion(id_, self.name, [choice], None, created))
            if job.include_usage:
                yield shapes.sse(shapes.completion(id_, self.name, [], use, created))
            yield shapes.sse("[DONE]")

        return _event_stream(events())

    def _score(self, prompts: list[list[int]], k: int) -> list[list]:
        """Each prompt's own log-probabilities (`scoring.prompt_logprobs`), in a worker thread."""
        return [prompt_logprobs(self.model.params, self.model.config, ids, k) for ids in prompts]

    def _check_model(self, job: Job) -> None:
        if job.model is not None and job.model != self.name:
            raise RequestError(
                f"the model {job.model!r} does not exist; this server serves {self.name!r}", "model",
                status=404, code="model_not_found",
            )  # fmt: skip

    async def _run(self, request: Request, job: Job, choices: list[Choice]) -> bool:
        """Reads every choice to its end; False if the client went away first (its choices are
        then cancelled, freeing their slots, as a streaming client's are)."""

        async def drain(choice: Choice) -> None:
            async for _ in pieces(choice, self.tokenizer, job.stops, self.metrics):
                pass

        work = asyncio.ensure_future(asyncio.gather(*(drain(c) for c in choices)))
        try:
            while not (await asyncio.wait({work}, timeout=DISCONNECT_POLL_S))[0]:
                if await request.is_disconnected():
                    work.cancel()
                    return False
            work.result()  # re-raises an engine failure
            return True
        finally:
            cancel(choices)  # a no-op for those that finished

    def _stream(self, job: Job, choices: list[Choice], chunk, last) -> Response:
        """Server-sent events: each piece of each choice as it comes, usage if asked, [DONE]."""

        async def events() -> AsyncIterator[bytes]:
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()

            async def feed(choice: Choice) -> None:
                first = True
                try:
                    async for piece in pieces(choice, self.tokenizer, job.stops, self.metrics):
                        if piece.text or piece.finish_reason or first:
                            await queue.put(shapes.sse(chunk(choice, piece, first)))
                            first = False
                finally:
                    await queue.put(None)

            tasks = [asyncio.create_task(feed(c)) for c in choices]
            try:
                for _ in tasks:
                    while (event := await queue.get()) is not None:
                        yield event
                for task in tasks:
                    task.result()  # re-raises an engine failure
                if job.include_usage:
                    yield shapes.sse(last(_usage(choices, job.n)))
                yield shapes.sse("[DONE]")
            finally:
                cancel(choices)
                for task in tasks:
                    task.cancel()

        return _event_stream(events())


def _event_stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    """Server-sent events, not to be cached."""
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _usage(choices: list[Choice], n: int) -> dict[str, int]:
    prompts = {c.index // n: c.prompt_tokens for c in choices}  # each prompt once, whatever n (as OpenAI)
    return shapes.usage(sum(prompts.values()), sum(len(c.tokens) for c in choices))


def _with_stops(job: Job, stops: tuple[str, ...]) -> Job:
    from dataclasses import replace

    return replace(job, stops=tuple(dict.fromkeys((*job.stops, *stops))))


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise RequestError(f"the body is larger than {MAX_BODY} bytes", None, status=413)
    return parse_json(raw)


def create_app(
    model: Model, *, name: str = "default", slots: int = 8, max_queue: int = 64, max_len: int | None = None,
    max_tokens_limit: int | None = None, max_n: int = 8, stop_timeout: float = 30.0, warmup: bool = True,
    **engine_options: Any,
) -> Starlette:  # fmt: skip
    """The server's app over a loaded `Model`, its engine started (and compiled, with `warmup`).

    Args:
      model: what `load_model` returns.
      name: the model's id in /v1/models and the `model` field requests must name (or omit).
      slots, max_queue, max_len: the engine's (`Engine`).
      max_tokens_limit: the most tokens one choice may ask for (default: max_len).
      max_n: the most choices one request may ask for.
      stop_timeout: seconds the running requests may finish in when the app shuts down.
      engine_options: the engine's other settings (`Engine`: prompt_buckets, widths, windows,
        admissions).
    """
    engine = Engine(
        model.params, model.config, slots=slots, max_len=max_len, max_queue=max_queue, **engine_options
    )
    if warmup:
        engine.warmup()
    limit = engine.max_len if max_tokens_limit is None else min(int(max_tokens_limit), engine.max_len)
    server = Server(model, engine, name, limit, max_n)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await asyncio.to_thread(engine.stop, stop_timeout)

    routes = [
        Route("/", server.playground, methods=["GET"]),
        Route("/health", server.health, methods=["GET"]),
        Route("/metrics", server.prometheus, methods=["GET"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
    ]
    handlers = {RequestError: _request_error, HTTPException: _http_error}
    counted = [Middleware(CountRequests, metrics=server.metrics, endpoints=ENDPOINTS)]
    app = Starlette(routes=routes, middleware=counted, lifespan=lifespan, exception_handlers=handlers)
    app.state.server, app.state.engine = server, engine
    return app


async def _request_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestError)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


async def _http_error(request: Request, error: Exception) -> Response:
    """Starlette's own 404 (no such endpoint) and 405 (wrong method), in OpenAI's error body."""
    assert isinstance(error, HTTPException)
    what = {
        404: f"no endpoint {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }
    message = what.get(error.status_code, str(error.detail))
    code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
    body = RequestError(message, None, status=error.status_code, code=code).body()
    return JSONResponse(body, status_code=error.status_code, headers=error.headers)
