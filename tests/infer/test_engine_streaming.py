"""The engine's streaming: `on_token` sees every step in order, in the calling thread; an exception it
raises or a True it returns stops the loop; Ctrl-C stops a wait at once."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from microgpt_core import GPTConfig, init_params
from microgpt_infer.engine import generate_tokens
from microgpt_infer.engine.generate import _program


def test_streaming_callback_sees_every_token_in_order(tiny_config, tiny_params):
    seen = []
    out = generate_tokens(
        tiny_params,
        tiny_config,
        jnp.asarray([[5, 9], [1, 2]]),
        jnp.asarray([2, 1]),
        rng=jax.random.key(0),
        max_new_tokens=6,
        temperature=0,
        on_token=lambda step, tokens: seen.append((int(step), np.asarray(tokens).tolist())),
    )
    assert [step for step, _ in seen] == list(range(6))
    np.testing.assert_array_equal(np.asarray([tokens for _, tokens in seen]).T, out.tokens)


# --- streaming: the callback runs in the calling thread -----------------------------------------
def stream_run(config, params, on_token, n=6, **kwargs):
    return generate_tokens(params, config, jnp.asarray([[5, 9], [1, 2]]), jnp.asarray([2, 1]),
                           rng=jax.random.key(0), max_new_tokens=n, temperature=0, on_token=on_token,
                           **kwargs)  # fmt: skip


class Refused(Exception):
    pass


@pytest.mark.parametrize("error", [ValueError("bad token 7"), Refused("mine"), KeyboardInterrupt()], ids=repr)
def test_an_exception_in_the_callback_reaches_the_caller_as_itself(tiny_config, tiny_params, error):
    seen = []

    def on_token(step, tokens):
        seen.append(step)
        if step == 2:
            raise error

    with pytest.raises(type(error)) as info:
        stream_run(tiny_config, tiny_params, on_token)
    assert info.value is error and seen == [0, 1, 2]
    from microgpt_infer.engine import streaming

    assert streaming._STREAMS == {}  # the stream is gone and its worker has finished
    assert stream_run(tiny_config, tiny_params, None).tokens.shape == (2, 6)  # and nothing is stuck


def test_the_callback_runs_in_the_calling_thread_and_may_generate(tiny_config, tiny_params):
    import threading

    callers, threads, inner = set(), set(), []

    def on_token(step, tokens):
        threads.add(threading.get_ident())
        inner.append(stream_run(tiny_config, tiny_params, lambda s, t: threads.add(threading.get_ident())))

    def outer():
        callers.add(threading.get_ident())
        return stream_run(tiny_config, tiny_params, on_token)

    out = _with_timeout(outer, 60)  # generating inside on_token used to deadlock
    assert threads == callers and len(inner) == 6
    expected = stream_run(tiny_config, tiny_params, None)
    for result in [out, *inner]:
        np.testing.assert_array_equal(result.tokens, expected.tokens)


def _with_timeout(fn, seconds):
    """fn() in a thread, failing (instead of hanging the suite) if it takes longer than `seconds`."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result(timeout=seconds)


def test_returning_true_stops_every_row_after_that_step(tiny_config, tiny_params):
    full = stream_run(tiny_config, tiny_params, None)
    seen = []
    out = stream_run(tiny_config, tiny_params, lambda step, tokens: seen.append(step) or step == 3)
    assert seen == [0, 1, 2, 3]
    np.testing.assert_array_equal(out.tokens[:, :4], full.tokens[:, :4])
    assert (np.asarray(out.tokens[:, 4:]) == 0).all()
    np.testing.assert_array_equal(out.num_tokens, np.minimum(full.num_tokens, 4))
    for truthy in (1, "yes", [True], np.array([True])):  # only True itself stops (not file.write's int)
        out = stream_run(tiny_config, tiny_params, lambda s, t, v=truthy: v)
        np.testing.assert_array_equal(out.tokens, full.tokens)
    out = stream_run(tiny_config, tiny_params, lambda step, tokens: np.True_)
    assert (np.asarray(out.tokens[:, 1:]) == 0).all()


def test_one_program_serves_every_callback(tiny_config, tiny_params):
    program = _program(tiny_config)
    stream_run(tiny_config, tiny_params, lambda s, t: None)
    stream_run(tiny_config, tiny_params, None)
    before = program._cache_size()
    callbacks = [lambda s, t: None, print, lambda s, t: s == 99, functools.partial(lambda *a: None, 1)]
    for callback in callbacks:
        stream_run(tiny_config, tiny_params, lambda s, t, f=callback: f() if f is print else f(s, t))
    assert program._cache_size() == before


LONG = GPTConfig(
    vocab_size=97, context_length=2048, d_model=32, n_layers=1, n_heads=2, positional="sinusoidal"
)


@pytest.fixture(scope="module")
def long_params():
    return init_params(jax.random.key(0), LONG)


@pytest.mark.parametrize("streaming", [True, False], ids=["on_token", "wait"])
def test_ctrl_c_while_waiting_is_prompt(long_params, streaming):
    """With on_token the loop stops; without, `streaming.wait` returns at once (the loop runs on)."""
    import signal
    import threading
    import time

    from microgpt_infer.engine.streaming import wait

    seen = []
    kwargs = {"on_token": lambda step, tokens: seen.append(step)} if streaming else {}
    prompt, lengths, key = jnp.ones((1, 1), jnp.int32), jnp.asarray([1]), jax.random.key(0)
    run = lambda: wait(
        generate_tokens(
            long_params, LONG, prompt, lengths, rng=key, max_new_tokens=2000, temperature=0, **kwargs
        )
    )
    run()  # compiles, then all 2,000 steps
    start = time.perf_counter()
    run()
    full = time.perf_counter() - start
    del seen[:]
    timer = threading.Timer(full / 4, signal.raise_signal, (signal.SIGINT,))
    with pytest.raises(KeyboardInterrupt):
        start = time.perf_counter()
        timer.start()
        run()
    stopped = time.perf_counter() - start
    timer.join()
    assert stopped < full * 0.75, (stopped, full)
    if streaming:
        assert 0 < len(seen) < 2000 and seen == list(range(len(seen)))
    else:
        jax.block_until_ready(run())  # the abandoned loop finished in the background; nothing is stuck
