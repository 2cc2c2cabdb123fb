"""The OpenAI-compatible server (microgpt_infer.server), through the real `openai` client, against a
tiny model served by uvicorn in a thread on 127.0.0.1 (one server for the module, 4 slots)."""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

MODEL_NAME = "tiny"


@dataclass
class Served:
    url: str
    app: Any

    @property
    def engine(self):
        return self.app.state.engine

    def client(self):
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="none", timeout=30, max_retries=0)


def http(served: Served, method: str, path: str, body: bytes | dict | None = None, timeout: float = 30):
    """(status, headers, body text) of one raw request; 4xx and 5xx are answers too."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(f"{served.url}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.headers, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def serve(app) -> tuple[uvicorn.Server, threading.Thread, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def served(model):
    from microgpt_infer.server.app import create_app

    full = (model.config.context_length,)  # one attention window: fewer programs to compile
    app = create_app(model, name=MODEL_NAME, slots=4, max_queue=16, windows=full, admissions=(1,))
    server, thread, url = serve(app)
    yield Served(url, app)
    server.should_exit = True
    thread.join(30)
    assert not thread.is_alive()
    assert not app.state.engine._thread.is_alive()  # the lifespan's end stopped the engine


def complete(served, **kwargs):
    kwargs.setdefault("model", MODEL_NAME)
    kwargs.setdefault("prompt", "Once upon")
    return served.client().completions.create(**kwargs)


def test_import_microgpt_infer_needs_no_server_libraries():
    code = "import sys, microgpt_infer, microgpt_infer.cli; print(sorted(m for m in ('starlette', 'uvicorn', 'jinja2') if m in sys.modules))"  # noqa: E501
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_models_health_and_metrics(served):
    models = served.client().models.list()
    assert [m.id for m in models.data] == [MODEL_NAME]
    assert models.data[0].object == "model"
    status, _, body = http(served, "GET", "/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    complete(served, max_tokens=3, seed=1)
    status, headers, text = http(served, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'microgpt_requests_total{endpoint="/v1/completions",status="200"}' in text
    for name in ("prompt_tokens_total", "generation_tokens_total", "requests_running", "requests_queued"):
        assert f"\nmicrogpt_{name} " in text
    assert 'microgpt_time_to_first_token_seconds_bucket{le="+Inf"}' in text
    assert "microgpt_inter_token_latency_seconds_count" in text


def test_completion_shape_seed_and_n(served):
    a = complete(served, max_tokens=8, seed=7, n=3)
    assert a.object == "text_completion" and a.id.startswith("cmpl-") and a.model == MODEL_NAME
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert all(c.finish_reason in ("stop", "length") for c in a.choices)
    assert a.usage.prompt_tokens == len(b"Once upon")  # byte tokenizer; counted once for n choices
    assert a.usage.completion_tokens <= 24
    assert a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens
    b = complete(served, max_tokens=8, seed=7, n=3)
    assert [c.text for c in b.choices] == [c.text for c in a.choices]  # same seed, same text
    one = complete(served, max_tokens=8, seed=8)  # choice i draws with seed + i
    assert one.choices[0].text == a.choices[1].text


def test_prompt_list_and_echo(served):
    out = complete(served, prompt=["ab", "xyz"], max_tokens=2, seed=3, n=2, echo=True)
    assert len(out.choices) == 4
    assert [c.text[:2] for c in out.choices] == ["ab", "ab", "xy", "xy"]
    assert out.usage.prompt_tokens == 5
    ids = complete(served, prompt=[120, 121], max_tokens=2, seed=3, echo=True)
    assert ids.choices[0].text.startswith("xy")


def test_stop_string_is_cut_and_never_sent(served):
    base = complete(served, max_tokens=40, seed=11, temperature=0)
    text = base.choices[0].text
    stop = text[5:7]
    assert len(stop) == 2
    cut = complete(served, max_tokens=40, seed=11, temperature=0, stop=[stop, "\u00ff\u00fe"])
    assert cut.choices[0].text == text[: text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = complete(served, max_tokens=40, seed=11, temperature=0, stop=stop, stream=True)
    pieces = [(c.choices[0].text, c.choices[0].finish_reason) for c in streamed]
    assert "".join(p for p, _ in pieces) == text[: text.find(stop)]
    assert pieces[-1][1] == "stop"


def test_logprobs(served):
    out = complete(served, max_tokens=5, seed=2, logprobs=3)
    lp = out.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
    assert all(
        len(top) <= 3 and max(top.values()) >= v - 1e-5
        for top, v in zip(lp.top_logprobs, lp.token_logprobs, strict=True)
    )
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)


def _reference_prompt_logprobs(model, ids: list[int]) -> list[float]:
    """log p(token t | tokens before it) of the reference model, for t = 1 .. len(ids) - 1."""
    import jax
    import numpy as np

    from microgpt_core import forward

    logits = forward(model.params, np.asarray([ids], np.int32), model.config)[0]  # (T, V)
    log_p = np.asarray(jax.nn.log_softmax(logits.astype("float32"), axis=-1))
    return [float(log_p[t - 1, ids[t]]) for t in range(1, len(ids))]


def test_echo_with_logprobs_scores_the_prompt_as_the_model_does(served, model):
    """What lm-evaluation-harness reads: with echo, `logprobs` covers the prompt (null for its first
    token) and then the generated tokens, whose figures are those of the same request without echo."""
    ids = [79, 110, 99, 101, 32, 117, 112, 111, 110]  # "Once upon", one byte a token
    out = complete(served, prompt=ids, max_tokens=3, seed=2, logprobs=2, echo=True)
    plain = complete(served, prompt=ids, max_tokens=3, seed=2, logprobs=2)
    choice, lp = out.choices[0], out.choices[0].logprobs
    assert choice.text == "Once upon" + plain.choices[0].text
    generated = len(plain.choices[0].logprobs.tokens)
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(ids) + generated
    assert "".join(lp.tokens[: len(ids)]) == "Once upon"  # (random bytes follow: not always UTF-8)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    want = _reference_prompt_logprobs(model, ids)
    assert lp.token_logprobs[1 : len(ids)] == pytest.approx(want, abs=1e-4)
    for top, v in zip(lp.top_logprobs[1:], lp.token_logprobs[1:], strict=True):
        assert 1 <= len(top) <= 2 and max(top.values()) >= v - 1e-5  # two bytes may both print as �
    assert lp.token_logprobs[len(ids) :] == pytest.approx(plain.choices[0].logprobs.token_logprobs, abs=1e-5)

    chunks = list(complete(served, prompt=ids, max_tokens=3, seed=2, logprobs=2, echo=True, stream=True))
    streamed = [v for c in chunks for ch in c.choices if ch.logprobs for v in ch.logprobs.token_logprobs]
    assert streamed[0] is None and streamed[1:] == pytest.approx(lp.token_logprobs[1:], abs=1e-5)
    one = complete(served, prompt="A", max_tokens=1, logprobs=0, echo=True).choices[0].logprobs
    assert one.token_logprobs[0] is None and one.top_logprobs[0] is None and len(one.tokens) == 2
    many = complete(served, prompt=["ab", "xyz"], n=2, max_tokens=1, logprobs=1, echo=True, seed=4)
    for choice, prompt in zip(many.choices, ["ab", "ab", "xyz", "xyz"], strict=True):  # each its own prompt
        assert "".join(choice.logprobs.tokens[: len(prompt)]) == prompt
        assert choice.logprobs.token_logprobs[0] is None and None not in choice.logprobs.token_logprobs[1:]
        assert choice.logprobs.token_logprobs[1 : len(prompt)] == pytest.approx(
            _reference_prompt_logprobs(model, list(prompt.encode())), abs=1e-4
        )


def test_echo_with_max_tokens_0_answers_the_prompt_alone_scored(served, model):
    """OpenAI's legacy way to score a text (older lm-evaluation-harness, vLLM): echo, max_tokens 0."""
    ids = [79, 110, 99, 101, 32, 117, 112, 111, 110]  # "Once upon", one byte a token
    out = complete(served, prompt=ids, max_tokens=0, logprobs=2, echo=True)
    choice, lp = out.choices[0], out.choices[0].logprobs
    assert choice.text == "Once upon" and choice.finish_reason == "length"
    assert out.usage.prompt_tokens == len(ids) and out.usage.completion_tokens == 0
    assert "".join(lp.tokens) == "Once upon" and lp.text_offset == list(range(len(ids)))
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.token_logprobs[1:] == pytest.approx(_reference_prompt_logprobs(model, ids), abs=1e-4)
    generating = complete(served, prompt=ids, max_tokens=1, logprobs=2, echo=True).choices[0].logprobs
    assert lp.token_logprobs[1:] == pytest.approx(generating.token_logprobs[1 : len(ids)], abs=1e-6)
    plain = complete(served, prompt="Hi there", max_tokens=0, echo=True).choices[0]
    assert plain.text == "Hi there" and plain.logprobs is None and plain.finish_reason == "length"

    many = complete(served, prompt=["ab", "xyz"], n=2, max_tokens=0, logprobs=0, echo=True)
    assert [(c.index, c.text) for c in many.choices] == [(0, "ab"), (1, "ab"), (2, "xyz"), (3, "xyz")]
    assert many.usage.prompt_tokens == 5 and many.usage.completion_tokens == 0  # each prompt once
    chunks = list(
        complete(served, prompt=["ab", "xyz"], max_tokens=0, logprobs=1, echo=True, stream=True,
                 stream_options={"include_usage": True})
    )  # fmt: skip
    assert [(c.choices[0].index, c.choices[0].text, c.choices[0].finish_reason) for c in chunks[:-1]] == [
        (0, "ab", "length"), (1, "xyz", "length")
    ]  # fmt: skip
    assert chunks[1].choices[0].logprobs.token_logprobs[1:] == pytest.approx(
        _reference_prompt_logprobs(model, list(b"xyz")), abs=1e-4
    )
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 5
    for body, message in [
        ({"prompt": "a", "max_tokens": 0}, "max_tokens must be an integer >= 1, got 0"),
        ({"prompt": "a", "max_tokens": -1, "echo": True}, "max_tokens must be an integer >= 0, got -1"),
        ({"prompt": "a" * 100, "max_tokens": 0, "echo": True}, "the prompt has 100 tokens"),
    ]:
        status, _, text = http(served, "POST", "/v1/completions", body)
        assert status == 400 and message in json.loads(text)["error"]["message"], (body, text)


def test_penalties_through_extra_body(served):
    extra = {"top_k": 5, "min_p": 0.01, "repetition_penalty": 1.3}
    a = complete(served, max_tokens=10, seed=5, presence_penalty=1.0, frequency_penalty=0.5, extra_body=extra)
    b = complete(served, max_tokens=10, seed=5, presence_penalty=1.0, frequency_penalty=0.5, extra_body=extra)
    assert a.choices[0].text == b.choices[0].text


def test_stream_ends_with_usage_and_done(served):
    chunks = list(complete(served, max_tokens=6, seed=4, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)
    whole = complete(served, max_tokens=6, seed=4)
    assert "".join(c.choices[0].text for c in chunks[:-1]) == whole.choices[0].text
    status, headers, body = http(
        served, "POST", "/v1/completions", {"prompt": "a", "max_tokens": 2, "stream": True}
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = body.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""] and all(e.startswith("data: ") for e in events[:-1])


def test_chat(served):
    client = served.client()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    out = client.chat.completions.create(
        model=MODEL_NAME, messages=messages, max_tokens=6, seed=1, logprobs=True, top_logprobs=2
    )
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
    choice = out.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content)
    assert out.usage.prompt_tokens > len("Be brief.Hi")
    chunks = list(
        client.chat.completions.create(
            model=MODEL_NAME,
            messages=messages,
            max_tokens=6,
            seed=1,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == choice.message.content
    assert chunks[-1].usage.completion_tokens == out.usage.completion_tokens


def test_concurrent_streams_equal_their_solo_results(served):
    def solo(seed):
        return complete(served, max_tokens=20, seed=seed, prompt=f"p{seed}").choices[0].text

    def streamed(seed):
        chunks = complete(served, max_tokens=20, seed=seed, prompt=f"p{seed}", stream=True)
        return "".join(c.choices[0].text for c in chunks)

    alone = [solo(seed) for seed in range(8)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(streamed, range(8)))
    assert together == alone


def test_full_queue_is_503_with_retry_after(served):
    engine = served.engine
    engine.max_queue, saved = 0, engine.max_queue
    try:
        status, headers, body = http(served, "POST", "/v1/completions", {"prompt": "a", "max_tokens": 2})
    finally:
        engine.max_queue = saved
    assert status == 503 and headers["Retry-After"]
    assert json.loads(body)["error"]["code"] == "queue_full"
    with pytest.raises(openai.APIStatusError):  # the client sees it as an error too
        engine.max_queue = 0
        try:
            complete(served, max_tokens=2)
        finally:
            engine.max_queue = saved


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "whole"])
def test_a_client_that_disconnects_frees_its_slot(served, stream):
    engine, metrics = served.engine, served.app.state.server.metrics
    step = engine._step
    engine._step = lambda *shape: (time.sleep(0.02), step(*shape))[1]  # slow: 60 tokens take over a second
    try:
        before = metrics.generation_tokens
        host, port = served.url.removeprefix("http://").split(":")
        body = json.dumps({"prompt": "a", "max_tokens": 60, "stream": stream}).encode()
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            received = b""
            while stream and b"data: " not in received:
                received += s.recv(4096)
            deadline = time.monotonic() + 5
            while not engine.metrics().running and time.monotonic() < deadline:
                time.sleep(0.01)  # the request is in a slot
        deadline = time.monotonic() + 5
        while engine.metrics().running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.metrics().running == 0
        time.sleep(0.1)
        assert metrics.generation_tokens - before < 60  # cancelled, not run to its end
    finally:
        engine._step = step


# Errors: every bad request is a 4xx with OpenAI's error body naming the parameter ----------------

BAD = [
    ({"prompt": 3}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "a", "max_tokens": "5"}, "max_tokens"),
    ({"prompt": "a", "max_tokens": 10_000}, "max_tokens"),
    ({"prompt": "a", "max_completion_tokens": -1}, "max_completion_tokens"),
    ({"prompt": "a", "temperature": -1}, "temperature"),
    ({"prompt": "a", "temperature": True}, "temperature"),
    ({"prompt": "a", "top_p": 0}, "top_p"),
    ({"prompt": "a", "top_k": -5}, "top_k"),
    ({"prompt": "a", "min_p": 2}, "min_p"),
    ({"prompt": "a", "presence_penalty": 3}, "presence_penalty"),
    ({"prompt": "a", "frequency_penalty": -2.5}, "frequency_penalty"),
    ({"prompt": "a", "repetition_penalty": 0}, "repetition_penalty"),
    ({"prompt": "a", "seed": -1}, "seed"),
    ({"prompt": "a", "n": 9}, "n"),
    ({"prompt": "a", "n": 0}, "n"),
    ({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"prompt": "a", "stop": [""]}, "stop"),
    ({"prompt": "a", "logprobs": 6}, "logprobs"),
    ({"prompt": "a", "stream": "yes"}, "stream"),
    ({"prompt": "a", "stream_options": {"include_usage": True}}, "stream_options"),
    ({"prompt": "a" * 100}, "prompt"),
    ({"prompt": "a" * 40, "max_tokens": 40}, "prompt"),
    ({"prompt": [300]}, "prompt"),
    ({"prompt": "a", "logit_bias": {"1": 2}}, "logit_bias"),
]


@pytest.mark.parametrize(("body", "param"), BAD, ids=[f"{p}-{i}" for i, (_, p) in enumerate(BAD)])
def test_bad_completion_names_its_param(served, body, param):
    status, _, text = http(served, "POST", "/v1/completions", body)
    assert status == 400, text
    error = json.loads(text)["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages"),
        (
            {"messages": [{"role": "user", "content": "x"}], "top_logprobs": 21, "logprobs": True},
            "top_logprobs",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "logprobs": 1}, "logprobs"),
    ],
)
def test_bad_chat_names_its_param(served, body, param):
    status, _, text = http(served, "POST", "/v1/chat/completions", body)
    assert status == 400 and json.loads(text)["error"]["param"] == param, text


def test_unknown_model_endpoint_method_and_json(served):
    status, _, text = http(served, "POST", "/v1/completions", {"model": "gpt-9", "prompt": "a"})
    assert status == 404 and json.loads(text)["error"]["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        served.client().completions.create(model="gpt-9", prompt="a")
    status, _, text = http(served, "GET", "/v2/nothing")
    assert status == 404 and json.loads(text)["error"]["code"] == "not_found"
    status, _, text = http(served, "GET", "/v1/completions")
    assert status == 405 and "error" in json.loads(text)
    for raw in (b"{not json", b"[1, 2]", b"\xff\xfe", b""):
        status, _, text = http(served, "POST", "/v1/completions", raw)
        assert status == 400 and json.loads(text)["error"]["type"] == "invalid_request_error"


def test_playground_page_or_a_json_404(served):
    from microgpt_infer.server.app import PLAYGROUND

    status, headers, text = http(served, "GET", "/")
    if PLAYGROUND.is_file():
        assert status == 200 and headers["content-type"].startswith("text/html")
    else:
        assert status == 404 and json.loads(text)["error"]["code"] == "not_found"


def _json_values():
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8)
    containers = lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    )
    return st.recursive(scalars, containers, max_leaves=6)


def test_random_bodies_never_break_the_server(served):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    keys = st.sampled_from(
        ["prompt", "messages", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "n",
         "stream", "logprobs", "top_logprobs", "echo", "presence_penalty", "repetition_penalty", "model",
         "stream_options", "max_completion_tokens"]
    )  # fmt: skip
    bodies = st.dictionaries(keys, _json_values(), max_size=6) | _json_values()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=bodies, chat=st.booleans())
    def check(body, chat):
        if isinstance(body, dict):
            body.setdefault("max_tokens", 2)
        raw = json.dumps(body, allow_nan=True).encode()
        path = "/v1/chat/completions" if chat else "/v1/completions"
        status, _, text = http(served, "POST", path, raw)
        assert status < 500, text
        if status >= 400:
            error = json.loads(text)["error"]
            assert set(error) == {"message", "type", "param", "code"} and error["message"]

    check()
    assert http(served, "GET", "/health")[0] == 200
    deadline = time.monotonic() + 5
    while served.engine.metrics().running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert served.engine.metrics().running == 0


def test_serve_help_and_bad_flags():
    from microgpt_infer.server.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    with pytest.raises(SystemExit) as exit_:
        main(["--port", "70000"])
    assert exit_.value.code == 2


def test_serve_command_answers_then_exits_0_on_sigterm(model_dir):
    import os
    import signal

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "microgpt_infer.server.cli",
        "--model",
        str(model_dir),
        "--port",
        str(port),
    ]
    command += ["--slots", "2", "--served-model-name", MODEL_NAME]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        served, deadline = Served(f"http://127.0.0.1:{port}", None), time.monotonic() + 60
        while True:
            try:
                if http(served, "GET", "/health", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, process.communicate(timeout=5)
            time.sleep(0.2)
        assert complete(served, max_tokens=3).choices[0].text is not None
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
