"""generate and generate_text: batching, streaming, stop strings, prompt lengths, model lookup."""

from __future__ import annotations

import jax
import pytest

from microgpt_core import SamplingError
from microgpt_infer import InferError, ModelNotFoundError, PromptTooLongError, generate, generate_text
from microgpt_infer.generation import _RowText, bucket_width

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
    row = _RowText(model, stops=("llo",))
    pieces = [row.push(b) for b in "hé".encode()]
    assert pieces == ["h", "", "é"]  # é is two byte tokens: emitted once complete
    assert row.push(ord("l")) == "" and row.push(ord("l")) == ""  # could be the start of "llo"
    assert row.push(ord("o")) == "" and row.done and row.text == "hé"
    row = _RowText(model, stops=("llo",))
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


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_new_tokens": 0}, SamplingError, "max_new_tokens must be an integer in"),
        ({"max_new_tokens": 64}, SamplingError, r"\[1, 63\]"),
        ({"temperature": -1.0}, SamplingError, "temperature"),
        ({"top_k": 0}, SamplingError, "top_k"),
        ({"top_p": 1.5}, SamplingError, "top_p"),
        ({"stop": [""]}, InferError, "stop strings"),
        ({"rng": "seed"}, InferError, "rng must be"),
    ],
)
def test_bad_arguments(model, kwargs, error, message):
    with pytest.raises(error, match=message):
        generate(model, "x", **{"max_new_tokens": 4, **kwargs})


def test_bad_prompts(model):
    with pytest.raises(InferError, match="empty list"):
        generate(model, [])
    with pytest.raises(InferError, match=r"prompts\[1\] must be a str"):
        generate(model, ["a", 3])
    with pytest.raises(InferError, match="model must be a Model"):
        generate("not a model", "x")


def test_prompt_lengths_in_one_bucket_share_one_compiled_program(model):
    from microgpt_core.sampling import _generation_program

    assert bucket_width(3, 64) == bucket_width(15, 64) == 16 and bucket_width(17, 64) == 32
    assert bucket_width(40, 48) == 48 and bucket_width(50, 48) == 50
    generate(model, "abc", rng=0, max_new_tokens=N, temperature=0)
    program = _generation_program(model.config)
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
    monkeypatch.delenv("MICROGPT_MODEL", raising=False)
    with pytest.raises(ModelNotFoundError, match=r"uv run train.*MICROGPT_MODEL"):
        generate_text(rng, "Hello")
    monkeypatch.setenv("MICROGPT_MODEL", str(model_dir))
    assert generate_text(rng, "Hello") == out
