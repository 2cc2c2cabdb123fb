"""The slot engine (engine/batching.py, slots.py, requests.py): greedy tokens equal the reference's, a
request gives the same tokens alone or among 15 others, nothing compiles after warm-up, cancelling
frees a slot, a full queue refuses, `stop` drains, a failing loop ends every stream, bad requests
are refused before they reach the device."""

import asyncio
import math
import time

import jax
import numpy as np
import pytest

from microgpt_core import GPTConfig, init_params
from microgpt_core.sampling import SamplingError
from microgpt_core.sampling import generate_tokens as reference_generate
from microgpt_infer.engine import shapes
from microgpt_infer.engine.batching import Engine, default_buckets, default_widths, default_windows
from microgpt_infer.engine.requests import (
    EngineError,
    EngineStopped,
    Failed,
    Finished,
    QueueFull,
    Request,
    Token,
)

GPT2_STYLE = GPTConfig(vocab_size=64, context_length=32, d_model=32, n_layers=2, n_heads=4)
LLAMA_STYLE = GPTConfig(
    vocab_size=64, context_length=32, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
    positional="rope", norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False,
)  # fmt: skip
SHAPES = dict(slots=4, max_len=32, prompt_buckets=(8, 32))  # every engine here: one set of programs
TIMEOUT = 60.0


@pytest.fixture(scope="module", params=[GPT2_STYLE, LLAMA_STYLE], ids=["gpt2", "llama"])
def model(request):
    config = request.param
    return init_params(jax.random.key(1), config), config


@pytest.fixture(scope="module")
def engine(model):
    params, config = model
    engine = Engine(params, config, max_queue=32, **SHAPES)
    engine.warmup()
    yield engine
    assert engine.stop(5.0)


def make_engine(model, **kwargs):
    params, config = model
    return Engine(params, config, **{**SHAPES, **kwargs})


def slowed(engine, seconds):
    """Each decode step of `engine` takes at least `seconds` (so a test can act between steps)."""
    step = engine.programs.step

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return step(*args, **kwargs)

    engine.programs = engine.programs._replace(step=slow)
    return engine


def ids(tokens):
    return [t.id for t in tokens]


def sixteen_requests():
    """Greedy and sampled, every setting, prompts in both buckets, different lengths."""
    rng = np.random.default_rng(7)
    requests = []
    for i in range(16):
        sampled = i % 4 != 0
        requests.append(
            Request(
                prompt=rng.integers(0, 64, 3 + (i * 5) % 20).tolist(),
                max_new_tokens=4 + (i * 3) % 9,
                temperature=(0.7 + 0.1 * i) if sampled else 0.0,
                top_k=[None, 5, 20, None][i % 4],
                top_p=[None, 0.9, None, 0.8][i % 4],
                min_p=[None, None, 0.05, None][i % 4],
                presence_penalty=0.5 if i % 3 == 1 else 0.0,
                frequency_penalty=0.3 if i % 5 == 2 else 0.0,
                repetition_penalty=1.3 if i % 2 else 1.0,
                seed=1000 + i if i != 5 else 2**32 - 1,
                logprobs=i % 4,
            )
        )
    return requests


# ------------------------------------------------------------------------------------------------
def test_greedy_tokens_equal_the_reference(engine, model):
    params, config = model
    prompts = [[5, 9, 2, 4], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [33]]
    padded = np.zeros((3, 11), np.int32)
    for row, prompt in enumerate(prompts):
        padded[row, : len(prompt)] = prompt
    want = reference_generate(
        params, config, padded, np.array([len(p) for p in prompts]), rng=jax.random.key(0),
        max_new_tokens=12, temperature=0,
    ).tokens  # fmt: skip
    for row, prompt in enumerate(prompts):
        tokens, finished = engine.submit(Request(prompt=prompt, max_new_tokens=12, temperature=0)).collect(
            TIMEOUT
        )
        assert ids(tokens) == np.asarray(want[row]).tolist()
        assert (finished.reason, finished.num_tokens, finished.prompt_tokens) == ("length", 12, len(prompt))


def test_a_request_gives_the_same_tokens_alone_or_among_fifteen_others(engine):
    requests = sixteen_requests()
    alone = [engine.submit(r).collect(TIMEOUT) for r in requests]
    streams = [engine.submit(r) for r in requests]  # 16 on 4 slots: queueing and slot reuse
    together = [s.collect(TIMEOUT) for s in streams]
    for request, (tokens, finished), (again, finished_again) in zip(requests, alone, together, strict=True):
        assert again == tokens  # ids, log-probabilities and alternatives, exactly
        assert finished_again.reason == finished.reason == "length"
        assert finished.num_tokens == request.max_new_tokens
        assert all(len(t.top_ids) == len(t.top_logprobs) == request.logprobs for t in tokens)
    assert len({tuple(ids(t)) for t, _ in alone}) > 8  # the settings and seeds do differ


def test_tokens_report_the_raw_log_probabilities(engine):
    tokens, _ = engine.submit(Request(prompt=[3, 4], max_new_tokens=5, temperature=0, logprobs=20)).collect(
        TIMEOUT
    )
    for token in tokens:
        assert token.top_ids[0] == token.id  # greedy takes the most likely
        assert token.logprob == token.top_logprobs[0]
        assert list(token.top_logprobs) == sorted(token.top_logprobs, reverse=True)
        assert 0.0 < sum(math.exp(v) for v in token.top_logprobs) <= 1.0 + 1e-5


def test_nothing_compiles_after_warmup_whatever_the_load(engine):
    events = []

    def listen(event, duration, **kwargs):
        if event.startswith("/jax/core/compile/") or event.startswith("/jax/compilation_cache/"):
            events.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        engine.warmup()  # already warm: compiles nothing either
        streams = [engine.submit(r) for r in sixteen_requests()]
        streams[3].cancel()
        streams += [
            engine.submit(Request(prompt=[1] * n, max_new_tokens=32 - n, temperature=0.5))
            for n in (1, 8, 9, 31)
        ]
        for stream in streams:
            stream.collect(TIMEOUT)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert events == []


def test_end_of_text_stops_with_reason_stop(engine):
    request = Request(prompt=[7, 8, 9], max_new_tokens=10, temperature=0)
    plain = ids(engine.submit(request).collect(TIMEOUT)[0])
    eot = plain[2]
    first = plain.index(eot)  # the first time the model says it
    tokens, finished = engine.submit(
        Request(prompt=[7, 8, 9], max_new_tokens=10, temperature=0, eot_id=eot)
    ).collect(TIMEOUT)
    assert ids(tokens) == plain[:first]
    assert (finished.reason, finished.num_tokens) == ("stop", first)


def test_async_iteration_gives_the_same_events(engine):
    request = Request(prompt=[2, 7, 1], max_new_tokens=6, temperature=1.0, seed=3, logprobs=2)
    tokens, finished = engine.submit(request).collect(TIMEOUT)

    async def read():
        return [event async for event in engine.submit(request)]

    events = asyncio.run(asyncio.wait_for(read(), TIMEOUT))
    assert events[:-1] == tokens
    assert isinstance(events[-1], Finished) and events[-1].num_tokens == finished.num_tokens


# ------------------------------------------------------------------------------------------------
def test_cancel_frees_the_slot_for_a_waiting_request(model, engine):  # engine: the programs compiled
    slow = slowed(make_engine(model), 0.02)  # a long request runs 31 steps: 0.6 s
    try:
        long = [slow.submit(Request(prompt=[i + 1], max_new_tokens=31, temperature=0)) for i in range(4)]
        waiting = slow.submit(Request(prompt=[9], max_new_tokens=2, temperature=0))
        assert isinstance(long[0].get(TIMEOUT), Token)  # all four hold slots now
        long[0].cancel()
        tokens, finished = waiting.collect(TIMEOUT)
        assert (finished.reason, len(tokens)) == ("length", 2)
        assert slow.metrics().running == 3  # the other long ones still run: the cancelled slot served
        *later, finished = list(long[0])
        assert finished.reason == "cancelled"
        assert finished.num_tokens == 1 + len(later) < 31
    finally:
        assert slow.stop(0.0)
    for stream in long[1:]:
        assert list(stream)[-1].reason == "cancelled"


def test_a_full_queue_refuses_requests(model, engine):
    small = make_engine(model, max_queue=2)
    try:
        with small._device:  # the loop cannot admit while the test holds the device
            streams = [small.submit(Request(prompt=[1], max_new_tokens=2)) for _ in range(2)]
            with pytest.raises(QueueFull, match="max_queue"):
                small.submit(Request(prompt=[1], max_new_tokens=2))
            assert small.metrics().queued == 2 and small.metrics().rejected_requests == 1
        for stream in streams:
            assert stream.collect(TIMEOUT)[1].reason == "length"
    finally:
        assert small.stop(5.0)
    with pytest.raises(EngineStopped):
        small.submit(Request(prompt=[1], max_new_tokens=2))


def test_stop_finishes_the_running_and_cancels_the_queued(model, engine):
    slow = slowed(make_engine(model), 0.005)
    running = [slow.submit(Request(prompt=[1, 2], max_new_tokens=20, temperature=0)) for _ in range(4)]
    queued = [slow.submit(Request(prompt=[1, 2], max_new_tokens=20, temperature=0)) for _ in range(2)]
    for stream in running:
        assert isinstance(stream.get(TIMEOUT), Token)
    assert slow.stop(TIMEOUT)
    for stream in running:
        finished = list(stream)[-1]
        assert (finished.reason, finished.num_tokens, finished.prompt_tokens) == ("length", 20, 2)
        assert len(finished.token_gaps) == 19 and finished.time_to_first_token > 0
    for stream in queued:
        assert list(stream) == [Finished("cancelled", 0, 2)]


def test_stop_cancels_what_runs_past_the_timeout(model, engine):
    slow = slowed(make_engine(model), 0.02)
    stream = slow.submit(Request(prompt=[1], max_new_tokens=31))
    assert isinstance(stream.get(TIMEOUT), Token)
    start = time.monotonic()
    assert slow.stop(0.05)
    assert time.monotonic() - start < 2.0
    finished = list(stream)[-1]
    assert finished.reason == "cancelled" and finished.num_tokens < 31


def test_a_failing_loop_ends_every_stream_and_stops_the_engine(model, engine):
    broken = make_engine(model)

    def fail(*args, **kwargs):
        raise RuntimeError("device on fire")

    broken.programs = broken.programs._replace(step=fail)
    streams = [broken.submit(Request(prompt=[1], max_new_tokens=5)) for _ in range(6)]
    for stream in streams[1:]:
        last = list(stream.events(TIMEOUT))[-1]
        assert isinstance(last, Failed) and "device on fire" in str(last.error)
    with pytest.raises(EngineError, match="device on fire"):
        streams[0].collect(TIMEOUT)
    with pytest.raises(EngineStopped, match="failed"):
        broken.submit(Request(prompt=[1], max_new_tokens=5))
    assert isinstance(broken.error, RuntimeError)
    assert broken.stop(5.0)


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"prompt": []}, "prompt"),
        ({"prompt": "hello"}, "prompt"),
        ({"prompt": [1, -2]}, "prompt"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"min_p": 1.5}, "min_p"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"frequency_penalty": float("nan")}, "frequency_penalty"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"seed": -1}, "seed"),
        ({"seed": 2**32}, "seed"),
        ({"seed": True}, "seed"),
        ({"logprobs": 21}, "logprobs"),
        ({"eot_id": -1}, "eot_id"),
    ],
)
def test_a_bad_request_is_refused_naming_the_field(fields, name):
    with pytest.raises(SamplingError, match=name):
        Request(**{"prompt": [1, 2], **fields})


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"prompt": [1, 64]}, "prompt"),
        ({"eot_id": 64}, "eot_id"),
        ({"prompt": [1] * 20, "max_new_tokens": 13}, "max_new_tokens"),
    ],
)
def test_a_request_that_does_not_fit_the_model_is_refused(engine, fields, name):
    with pytest.raises(SamplingError, match=name):
        engine.submit(Request(**{"prompt": [1, 2], **fields}))


def test_engine_arguments_are_checked(model):
    params, config = model
    with pytest.raises(ValueError, match="slots"):
        Engine(params, config, slots=0)
    with pytest.raises(ValueError, match="max_len"):
        Engine(params, config, max_len=33)
    with pytest.raises(ValueError, match="prompt_buckets"):
        Engine(params, config, prompt_buckets=(8, 64))
    with pytest.raises(ValueError, match="widths"):
        Engine(params, config, slots=4, widths=(2, 5))
    with pytest.raises(ValueError, match="windows"):
        Engine(params, config, windows=(0,))
    assert default_buckets(32) == (16, 32) and default_buckets(100) == (16, 32, 64, 100)
    assert (
        default_widths(1) == (1,) and default_widths(16) == (2, 4, 8, 16) and default_widths(6) == (2, 4, 6)
    )
    assert default_windows(256) == (64, 128, 256) and default_windows(2) == (1, 2)


# Narrower steps ----------------------------------------------------------------------------------
def test_the_kept_step_shapes_give_the_full_steps_rows_on_fresh_slots(engine, model):
    # Checked again here on other random slots than warmup's: each kept (width, window) step
    # computes its rows exactly as the full step does.
    config = model[1]
    assert (4, 32) in engine.verified_shapes
    assert len(engine.verified_shapes) > 1  # XLA's CPU kernels on this machine: width >= 2 agrees
    params, weights = engine._params, engine._weights
    fresh = lambda: shapes.random_slots(np.random.default_rng(9), config=config, slots=4, max_len=32, below=8)  # noqa: E731

    def run(width, window):
        state, draw = engine.programs.step(
            params, weights, fresh(), config=config, top_k=engine.top_k, width=width, window=window
        )
        return [np.asarray(a)[:width] for a in (*state.caches.k, state.tokens, state.counts, *draw)]

    full = run(4, 32)
    for width, window in engine.verified_shapes:
        for got, want in zip(run(width, window), full, strict=True):
            np.testing.assert_array_equal(got, want[:width])


def test_a_step_shape_that_rounds_differently_is_never_used(model, engine):  # engine: compiled
    fresh = make_engine(model)
    step = fresh.programs.step

    def off_by_one_ulp_when_narrow(*args, width, **kwargs):
        state, draw = step(*args, width=width, **kwargs)
        if width < 4:
            draw = draw._replace(logprobs=jax.numpy.nextafter(draw.logprobs, 0.0))
        return state, draw

    fresh.programs = fresh.programs._replace(step=off_by_one_ulp_when_narrow)
    fresh.warmup()
    try:
        assert {width for width, _ in fresh.verified_shapes} == {4}  # the windows still agree
        assert (4, 8) in fresh.verified_shapes
        tokens, _ = fresh.submit(Request(prompt=[1, 2, 3], max_new_tokens=3, temperature=0)).collect(TIMEOUT)
        assert len(tokens) == 3
    finally:
        assert fresh.stop(5.0)


def test_steps_are_as_narrow_as_the_busy_slots_allow(model, engine):  # engine: compiled
    fresh = make_engine(model)
    fresh.warmup()
    shapes, step = [], fresh.programs.step

    def recorded(*args, width, window, **kwargs):
        shapes.append((width, window))
        return step(*args, width=width, window=window, **kwargs)

    fresh.programs = fresh.programs._replace(step=recorded)
    try:
        fresh.submit(Request(prompt=[1, 2, 3], max_new_tokens=8, temperature=0)).collect(TIMEOUT)
        # token 0 comes from the prefill; steps feed positions 3..9: window 8, then 16
        assert shapes == [(2, 8)] * 6 + [(2, 16)]
    finally:
        assert fresh.stop(5.0)


def test_an_admission_shape_that_rounds_differently_is_never_used(model, engine):  # engine: compiled
    fresh = make_engine(model)
    admit = fresh.programs.admit

    def off_by_one_ulp_when_batched(params, state, rows, *args, **kwargs):
        state, draw = admit(params, state, rows, *args, **kwargs)
        if rows.shape[0] > 1:
            draw = draw._replace(logprobs=jax.numpy.nextafter(draw.logprobs, 0.0))
        return state, draw

    fresh.programs = fresh.programs._replace(admit=off_by_one_ulp_when_batched)
    fresh.warmup()
    try:
        assert fresh.verified_admissions == ((1, 8), (1, 32))
    finally:
        assert fresh.stop(5.0)


def test_queued_requests_are_admitted_together_by_prompt_width(model, engine):  # engine: compiled
    assert set(engine.verified_admissions) == {(1, 8), (1, 32), (4, 8), (4, 32)}
    fresh = make_engine(model)
    fresh.warmup()
    batches, admit = [], fresh.programs.admit

    def recorded(params, state, rows, prompts, *args, **kwargs):
        batches.append((np.asarray(rows).tolist(), prompts.shape[1]))
        return admit(params, state, rows, prompts, *args, **kwargs)

    fresh.programs = fresh.programs._replace(admit=recorded)
    try:
        with fresh._device:  # holds the loop while the five requests queue
            streams = [
                fresh.submit(Request(prompt=[1] * n, max_new_tokens=2, temperature=0))
                for n in (3, 20, 5, 8, 9)
            ]
        for stream in streams:
            stream.collect(TIMEOUT)
        # slots 0-3 free: widths 8 (slots 0, 2, 3; padded to a batch of 4 with slot N = 4) and 32
        # (slot 1); the fifth waits for a free slot
        assert batches[:2] == [([0, 2, 3, 4], 8), ([1, 4, 4, 4], 32)] or batches[:2] == [
            ([0, 2, 3, 4], 8),
            ([1], 32),
        ]
        assert len(batches) == 3 and batches[2][1] == 32
    finally:
        assert fresh.stop(5.0)
