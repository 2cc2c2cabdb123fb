"""generate and generate_text: batching, streaming, stop strings, prompt lengths, model lookup."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from microgpt_core import SamplingError
from microgpt_data.errors import InvalidTextError
from microgpt_infer import InferError, ModelNotFoundError, PromptTooLongError, generate, generate_text
from microgpt_infer.generation import bucket_width
from microgpt_infer.row_text import RowText

PROMPTS = ["a", "hello world", "The quick brown fox jumps over", ""]
N = 12  # one max_new_tokens for (nearly) every test: each new shape or setting is a new compilation


def test_batched_equals_one_by_one_greedy(model):
    batched = generate(model, PROMPTS, rng=0, max_new_tokens=N, temperature=0)
    single = [generate(model, p, rng=0, max_new_tokens=N, temperature=0) for p in PROMPTS]
    assert batched == single
    assert all(isinstance(t, str) for t in batched)


def test_sampling_is_reproducible_per_key(model):
    a = generate(model, "seed", rng=jax.random.key(3), max_new_tokens=N)
    assert a == generate(model, "seed", rng=3, max_new_tokens=N)
    assert a != generate(model, "seed", rng=4, max_new_tokens=N)
    assert generate(model, "seed", rng=0, max_new_tokens=N, top_k=1) == generate(
        model, "seed", rng=5, max_new_tokens=N, temperature=0
    )


def test_streaming_pieces_concatenate_to_the_result(model):
    pieces: dict[int, list[str]] = {0: [], 1: []}
    out = generate(
        model, ["ab", "xyz uvw"], rng=1, max_new_tokens=N, on_token=lambda row, text: pieces[row].append(text)
    )
    assert ["".join(pieces[0]), "".join(pieces[1])] == out
    assert len(pieces[0]) > 1  # streamed in several pieces, not once at the end


def test_stop_strings_cut_before_the_first_occurrence(model):
    full = generate(model, "stop test", rng=0, max_new_tokens=N, temperature=0)
    stop = full[5:7]
    cut = generate(model, "stop test", rng=0, max_new_tokens=N, temperature=0, stop=[stop, "\x00never"])
    assert cut == full[: full.index(stop)]
    streamed = []
    kwargs = dict(rng=0, max_new_tokens=N, temperature=0, stop=stop)
    generate(model, "stop test", **kwargs, on_token=lambda r, t: streamed.append(t))
    assert "".join(streamed) == cut


def test_row_text_decodes_split_characters_and_holds_back_stop_prefixes(model):
    row = RowText(model.tokenizer, stops=("llo",))
    pieces = [row.push(b) for b in "hé".encode()]
    assert pieces == ["h", "", "é"]  # é is two byte tokens: emitted once complete
    assert row.push(ord("l")) == "" and row.push(ord("l")) == ""  # could be the start of "llo"
    assert row.push(ord("o")) == "" and row.done and row.text == "hé"
    row = RowText(model.tokenizer, stops=("llo",))
    assert [row.push(t) for t in b"ll!"] == ["", "", "ll!"]
    assert row.push(model.tokenizer.eot_id) == "" and row.done
    assert row.push(ord("x")) == "" and row.text == "ll!"  # nothing after end-of-text


def test_prompt_too_long_is_refused_or_cropped(model):
    T = model.config.context_length  # 64, byte tokenizer: one token per ASCII character
    long = "".join(chr(97 + i % 26) for i in range(T))
    with pytest.raises(
        PromptTooLongError, match=rf"has {T} tokens; with max_new_tokens={N} .* room for {T - N}"
    ):
        generate(model, long, max_new_tokens=N)
    with pytest.raises(PromptTooLongError, match=r"prompts\[1\]"):
        generate(model, ["ok", long], max_new_tokens=N)
    cropped = generate(model, long, rng=0, max_new_tokens=N, temperature=0, crop_prompt=True)
    assert cropped == generate(model, long[-(T - N) :], rng=0, max_new_tokens=N, temperature=0)


NOT_INTEGERS = [True, False, 2.0, 4.5, None, "4", np.float32(4), float("nan")]
BAD_ARGUMENTS = [
    *[("max_new_tokens", v, SamplingError, r"max_new_tokens must be an integer in \[1, 63\]")
      for v in [0, -1, -(10**30), 64, 65, 10**30, *NOT_INTEGERS]],
    *[("temperature", v, SamplingError, "temperature must be a finite number >= 0")
      for v in [-1.0, -1e-300, float("nan"), float("inf"), -float("inf"), True, "1", None]],
    *[("top_k", v, SamplingError, "top_k must be an integer >= 1 or None")
      for v in [0, -1, True, 2.0, "5", float("inf")]],
    *[("top_p", v, SamplingError, r"top_p must be a number in \(0, 1\] or None")
      for v in [0, 0.0, -0.5, 1.5, float("nan"), float("inf"), True, "0.5"]],
    *[("min_p", v, SamplingError, r"min_p must be a number in \[0, 1\] or None")
      for v in [-0.5, 1.5, float("nan"), float("inf"), True, "0.5"]],
    *[(name, v, SamplingError, rf"{name} must be a number in \[-2, 2\]")
      for name in ("presence_penalty", "frequency_penalty") for v in [-2.5, 3, float("nan"), True, "1"]],
    *[("repetition_penalty", v, SamplingError, "repetition_penalty must be a finite number > 0")
      for v in [0, -1, float("inf"), float("nan"), True, None]],
    *[("stop", v, InferError, r"^stop(\[\d\])? must be")
      for v in ["", [""], ["ok", ""], [3], ["a", None], ("a", b"b"), 5, b"x", {"a"}, {"a": 1}]],
    ("stop", ["a\ud800"], InferError, r"stop\[0\] holds a lone surrogate"),
    *[("rng", v, InferError, "rng must be")
      for v in ["seed", -1, 2**32, 10**29, -(2**63), 1.5, True, np.bool_(True), [1, 2],
                jnp.zeros(3, jnp.uint32), jnp.zeros(2, jnp.float32), jnp.zeros(2, jnp.int32),
                jax.random.split(jax.random.key(0), 2)]],
    ("on_token", 5, InferError, "on_token must be a callable or None"),
    ("crop_prompt", "yes", InferError, "crop_prompt must be True or False"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "value", "error", "message"), BAD_ARGUMENTS, ids=repr)
def test_bad_arguments_are_refused_naming_the_argument(model, name, value, error, message):
    with pytest.raises(error, match=message) as info:
        generate(model, "x", **{"max_new_tokens": 4, name: value})
    assert name in str(info.value)
    if name not in ("on_token", "crop_prompt"):  # generate_text passes the same arguments on
        rng, kwargs = (value, {}) if name == "rng" else (0, {name: value})
        with pytest.raises(error, match=message):
            generate_text(rng, "x", **{"max_new_tokens": 4, **kwargs}, model=model)


def test_numpy_numbers_are_numbers(model):
    # The settings of test_sampling_is_reproducible_per_key, as numpy scalars: the same programs.
    numpy = generate(model, "seed", rng=np.int64(3), max_new_tokens=np.int64(N), temperature=np.float64(1))
    assert numpy == generate(model, "seed", rng=3, max_new_tokens=N)
    assert generate(model, "seed", rng=np.uint32(0), max_new_tokens=N, top_k=np.int64(1)) == (
        generate(model, "seed", rng=0, max_new_tokens=N, top_k=1)
    )
    for seed in (0, 2**32 - 1, np.uint32(2**32 - 1)):  # the ends of the seed range
        assert isinstance(generate(model, "abc", rng=seed, max_new_tokens=N, temperature=0), str)


def test_tiny_temperature_is_greedy(model):
    greedy = generate(model, "abc", rng=0, max_new_tokens=N, temperature=0)
    assert generate(model, "abc", rng=1, max_new_tokens=N, temperature=1e-50) == greedy  # was NaN: garbage


def test_legacy_key_like_the_original_microgpt(model):
    out = generate_text(rng=jax.random.PRNGKey(443), text="Once upon a time", max_new_tokens=N, model=model)
    assert out.startswith("Once upon a time") and len(out) > len("Once upon a time")
    assert out == generate_text(jax.random.key(443), "Once upon a time", N, model=model)


@pytest.mark.parametrize(
    ("prompts", "message"),
    [(5, "prompts must be a str or a list of str, got int"), (b"abc", "got bytes"), (None, "got NoneType"),
     ({"a"}, "got set"), ([], "empty list"), (["a", 3], r"prompts\[1\] must be a str, got int"),
     (("a", None), r"prompts\[1\] must be a str, got NoneType"), ([b"a"], r"prompts\[0\] must be a str")],
    ids=repr,
)  # fmt: skip
def test_prompts_that_are_not_text_are_refused(model, prompts, message):
    with pytest.raises(InferError, match=message):
        generate(model, prompts, max_new_tokens=N)


@pytest.mark.parametrize(
    ("prompts", "which"),
    [("\ud800", "the prompt"), ("ok \udcff end", "the prompt"), (["fine", "a\udfffb"], r"prompts\[1\]")],
)
def test_prompts_with_lone_surrogates_are_refused(model, prompts, which):
    with pytest.raises(InvalidTextError, match=rf"^{which}: .*lone surrogate"):
        generate(model, prompts, max_new_tokens=N)


def test_an_empty_prompt_starts_from_end_of_text(model):
    from microgpt_infer.engine import generate_tokens

    eot = model.tokenizer.eot_id
    prompt, lengths = np.full((1, 16), eot, np.int32), np.array([1], np.int32)
    out = generate_tokens(model.params, model.config, prompt, lengths, rng=jax.random.key(0),
                          max_new_tokens=N, temperature=0, eot_id=eot)  # fmt: skip
    expected = model.tokenizer.decode(np.asarray(out.tokens)[0, : int(out.num_tokens[0])].tolist())
    assert generate(model, "", rng=0, max_new_tokens=N, temperature=0) == expected  # the same program


def test_a_callback_error_reaches_the_caller_as_itself(model):
    error = ValueError("no more, please")

    def on_token(row, text):
        raise error

    with pytest.raises(ValueError, match="no more, please") as info:
        generate(model, ["ab", "cd"], rng=0, max_new_tokens=N, on_token=on_token)
    assert info.value is error
    with pytest.raises(KeyboardInterrupt):
        generate(model, ["ab", "cd"], rng=0, max_new_tokens=N, on_token=lambda *a: _raise(KeyboardInterrupt))


def _raise(error):
    raise error


def print_nothing(row, text):
    print(end="")


def test_generate_inside_on_token(model):
    import concurrent.futures

    inner = []

    def on_token(row, text):
        inner.append(
            generate(model, text, rng=0, max_new_tokens=N, temperature=0, on_token=lambda r, t: None)
        )

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # it used to deadlock: fail, do not hang
        out = pool.submit(generate, model, "ab", rng=0, max_new_tokens=N, temperature=0, on_token=on_token)
        text = out.result(timeout=120)
    assert inner and all(isinstance(t, str) for t in inner)
    assert text == generate(model, "ab", rng=0, max_new_tokens=N, temperature=0)


def test_one_program_for_every_callback(model):
    from microgpt_infer.engine.generate import _program

    program = _program(model.config)
    generate(model, "abc", rng=0, max_new_tokens=N, temperature=0, on_token=lambda r, t: None)
    before = program._cache_size()
    for callback in (lambda r, t: None, lambda r, t: [r, t], lambda r, t: print(end="")):
        generate(model, "abc", rng=0, max_new_tokens=N, temperature=0, on_token=callback)
    assert program._cache_size() == before


def test_the_loop_ends_once_every_row_has_hit_a_stop_string(model, monkeypatch):
    from microgpt_infer import generation

    prompts = ["stop test", "abc"]  # streamed: the one program of the generation with stop strings below
    full = generate(model, prompts, rng=0, max_new_tokens=N, temperature=0, on_token=print_nothing)
    stops = [full[0][:3], full[1][:5]]  # the rows end at steps 2 and 4 (the tiny model repeats itself)
    steps, calls = [], []
    real = generation.generate_tokens

    def spy(*args, on_token=None, **kwargs):
        calls.append(on_token is not None)
        counted = (
            None if on_token is None else (lambda step, tokens: steps.append(step) or on_token(step, tokens))
        )
        return real(*args, on_token=counted, **kwargs)

    monkeypatch.setattr(generation, "generate_tokens", spy)
    cut = generate(model, prompts, rng=0, max_new_tokens=N, temperature=0, stop=stops)
    assert cut == [full[0][: full[0].index(stops[0])], full[1][: full[1].index(stops[1])]]
    assert steps == list(range(len(steps))) and len(steps) < N  # no step after the last row's stop
    generate(model, "x", rng=0, max_new_tokens=N)  # no callback, no stop strings: not streamed
    assert calls == [True, False]


def test_prompt_lengths_in_one_bucket_share_one_compiled_program(model):
    from microgpt_infer.engine.generate import _program

    assert bucket_width(3, 64) == bucket_width(15, 64) == 16 and bucket_width(17, 64) == 32
    assert bucket_width(40, 48) == 48 and bucket_width(50, 48) == 50
    generate(model, "abc", rng=0, max_new_tokens=N, temperature=0)
    program = _program(model.config)
    before = program._cache_size()
    for prompt in ["a", "abcdefgh", "abcdefghijklmno"]:
        generate(model, prompt, rng=0, max_new_tokens=N, temperature=0)
    assert program._cache_size() == before


def test_generate_text_like_the_original(model, model_dir, monkeypatch, tmp_path):
    rng = jax.random.key(0)
    out = generate_text(rng, "Hello", model=model_dir)
    assert out.startswith("Hello")
    assert out == "Hello" + generate(model, "Hello", rng=rng, max_new_tokens=50, temperature=1.0)
    greedy = generate_text(rng, "Hello", N, 0.0, model=model)
    assert greedy == "Hello" + generate(model, "Hello", rng=1, max_new_tokens=N, temperature=0)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MICROGPT_MODEL", str(model_dir))
    assert generate_text(rng, "Hello") == out
    monkeypatch.setenv("MICROGPT_MODEL", str(tmp_path / "missing"))
    with pytest.raises(ModelNotFoundError, match=r"no such folder.*uv run train.*MICROGPT_MODEL"):
        generate_text(rng, "Hello")
    assert generate_text(rng, "Hello", model=model_dir) == out  # model= before $MICROGPT_MODEL
