"""GPT-2 in Hugging Face's layout: logits equal transformers' on the committed fixture.

The fixture (tests/fixtures/gpt2_tiny/) was made by tests/fixtures/make_gpt2_tiny.py in the side
venv: a tiny random GPT2LMHeadModel saved by transformers, a tiny byte-level BPE, and its logits.
"""

from __future__ import annotations

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from microgpt_core import forward
from microgpt_infer import ModelFileError, UnsupportedModelError, generate, load_model
from microgpt_infer.gpt2 import KEY_TABLE
from tests.infer.conftest import GPT2_TINY

REFERENCE = json.loads((GPT2_TINY / "reference.json").read_text())


@pytest.fixture(scope="module")
def gpt2():
    return load_model(GPT2_TINY)


def test_config_converted(gpt2):
    c = gpt2.config
    assert (c.vocab_size, c.context_length, c.d_model, c.n_layers, c.n_heads, c.d_ff) == (
        270,
        32,
        16,
        2,
        2,
        64,
    )
    assert (c.positional, c.bias, c.final_norm, c.tie_embeddings, c.embed_scale, c.gelu) == (
        "learned", True, True, True, False, "tanh"
    )  # fmt: skip


def test_logits_equal_transformers(gpt2):
    expected = np.load(GPT2_TINY / "logits.npy")  # (2, 12, 270)
    logits = forward(gpt2.params, jnp.asarray(REFERENCE["ids"]), gpt2.config)
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)


def test_tokenizer_ids_equal_transformers(gpt2):
    for text, ids in zip(REFERENCE["texts"], REFERENCE["text_ids"], strict=True):
        assert gpt2.tokenizer.encode(text) == ids
        assert gpt2.tokenizer.decode(ids) == text
    assert gpt2.tokenizer.eot_id == 269


def test_generates_text(gpt2):
    out = generate(gpt2, ["the cat", "héllo"], rng=0, max_new_tokens=8, temperature=0)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_untied_head_is_transposed(tmp_path, gpt2):
    folder = shutil.copytree(GPT2_TINY, tmp_path / "untied")
    tensors = safetensors.numpy.load_file(folder / "model.safetensors")
    head = np.random.default_rng(0).normal(size=tensors["transformer.wte.weight"].shape).astype(np.float32)
    tensors["lm_head.weight"] = head  # nn.Linear layout (V, D)
    safetensors.numpy.save_file(tensors, folder / "model.safetensors")
    _edit(folder, tie_word_embeddings=False)
    untied = load_model(folder)
    assert not untied.config.tie_embeddings
    np.testing.assert_array_equal(np.asarray(untied.params["head"]["w"]), head.T)
    assert KEY_TABLE["head.w"] == ("lm_head.weight", True)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("scale_attn_by_inverse_layer_idx", True, "scale_attn_by_inverse_layer_idx=true"),
        ("reorder_and_upcast_attn", True, "reorder_and_upcast_attn=true"),
        ("scale_attn_weights", False, "scale_attn_weights=false"),
        ("add_cross_attention", True, "cross-attention"),
        ("activation_function", "relu", "activation_function 'relu' is not supported"),
        ("quantization_config", {"quant_method": "bitsandbytes"}, "quantization_config is set"),
        ("n_head", 3, "n_heads"),
        ("n_layer", "2", "'n_layer' must be an integer >= 1"),
    ],
)
def test_unsupported_variants_are_refused(tmp_path, field, value, message):
    folder = shutil.copytree(GPT2_TINY, tmp_path / "variant")
    _edit(folder, **{field: value})
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(folder)
    assert str(folder / "config.json") in str(info.value)
    if field not in ("n_head", "n_layer"):
        assert isinstance(info.value, UnsupportedModelError)


def test_exact_gelu_accepted(tmp_path):
    folder = shutil.copytree(GPT2_TINY, tmp_path / "gelu")
    _edit(folder, activation_function="gelu")
    assert load_model(folder).config.gelu == "exact"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("transformer.h.1.mlp.c_fc.bias"), "missing tensor 'h.1.mlp.c_fc.bias'"),
        (lambda t: t.update({"transformer.h.2.ln_1.weight": np.ones(16, np.float32)}), "unexpected tensor"),
        (
            lambda t: t.update({"transformer.ln_f.bias": np.ones(15, np.float32)}),
            r"'ln_f.bias' has shape \(15,\)",
        ),
        (lambda t: t["transformer.wpe.weight"].__setitem__((0, 0), np.nan), "NaN"),
    ],
    ids=["missing", "extra", "shape", "nan"],
)
def test_bad_weights_name_the_file_and_key(tmp_path, change, message):
    folder = shutil.copytree(GPT2_TINY, tmp_path / "bad")
    tensors = dict(safetensors.numpy.load_file(folder / "model.safetensors"))
    tensors = {k: np.array(v) for k, v in tensors.items()}
    change(tensors)
    safetensors.numpy.save_file(tensors, folder / "model.safetensors")
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(folder)
    assert str(folder / "model.safetensors") in str(info.value)


def test_truncated_weights_and_missing_tokenizer(tmp_path):
    folder = shutil.copytree(GPT2_TINY, tmp_path / "cut")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-64])
    with pytest.raises(ModelFileError, match=r"model\.safetensors: truncated or corrupted .*cut short"):
        load_model(folder)
    (folder / "model.safetensors").write_bytes(data)
    (folder / "merges.txt").unlink()
    with pytest.raises(ModelFileError, match=r"merges\.txt does not exist"):
        load_model(folder)


def test_half_precision_weights_load_as_float32(tmp_path, gpt2):
    folder = shutil.copytree(GPT2_TINY, tmp_path / "f16")
    tensors = safetensors.numpy.load_file(folder / "model.safetensors")
    safetensors.numpy.save_file(
        {k: v.astype(np.float16) for k, v in tensors.items()}, folder / "model.safetensors"
    )
    half = load_model(folder)
    assert half.params["embed"]["tokens"].dtype == jnp.float32
    np.testing.assert_allclose(half.params["embed"]["tokens"], gpt2.params["embed"]["tokens"], atol=1e-2)


def test_names_without_prefix_buffers_and_a_tied_head_copy_load(tmp_path, gpt2):
    """Read by core's read_safetensors: "transformer." is optional; the causal-mask buffers (of any
    dtype) and a tied model's lm_head.weight copy are skipped, not refused."""
    folder = shutil.copytree(GPT2_TINY, tmp_path / "variants")
    tensors = safetensors.numpy.load_file(folder / "model.safetensors")
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    tensors["h.0.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), bool))  # old transformers' mask buffer
    tensors["h.1.attn.masked_bias"] = np.array(-1e4, np.float32)
    tensors["lm_head.weight"] = tensors["wte.weight"]
    safetensors.numpy.save_file(tensors, folder / "model.safetensors")
    loaded = load_model(folder)
    np.testing.assert_array_equal(loaded.params["embed"]["tokens"], gpt2.params["embed"]["tokens"])


def test_weights_of_another_dtype_or_far_too_small_name_the_file(tmp_path):
    folder = shutil.copytree(GPT2_TINY, tmp_path / "typed")
    tensors = dict(safetensors.numpy.load_file(folder / "model.safetensors"))
    tensors["transformer.wpe.weight"] = tensors["transformer.wpe.weight"].astype(np.int32)
    safetensors.numpy.save_file(tensors, folder / "model.safetensors")
    with pytest.raises(ModelFileError, match=r"model\.safetensors: tensor 'wpe\.weight' has dtype int32; "):
        load_model(folder)
    _edit(folder, n_layer=10**30)  # refused at once, before 12 names per layer are listed
    with pytest.raises(ModelFileError, match=r"model\.safetensors: \d+ bytes, too small for the model"):
        load_model(folder)


def _edit(folder, **changes):
    """Sets fields of config.json; a field set to ... is removed."""
    body = json.loads((folder / "config.json").read_text())
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not ...}
    (folder / "config.json").write_text(json.dumps(body))


def test_unknown_config_keys_are_named_in_a_warning(tmp_path, caplog):
    folder = shutil.copytree(GPT2_TINY, tmp_path / "typo")
    with caplog.at_level("WARNING", logger="microgpt_infer"):
        load_model(GPT2_TINY)  # what transformers writes: every key known
        assert caplog.messages == []
        _edit(folder, n_layerz=3, _name_or_path="gpt2", task_specific_params={"text-generation": {}})
        model = load_model(folder)
    assert caplog.messages == [
        f"{folder / 'config.json'}: ignoring unknown key 'n_layerz' (did you mean 'n_layer'?)"
    ]
    assert model.config.n_layers == 2  # ignored, as transformers ignores it
    caplog.clear()
    _edit(folder, zzz=1)
    with caplog.at_level("WARNING", logger="microgpt_infer"):
        load_model(folder)
    (message,) = caplog.messages
    assert message.startswith(f"{folder / 'config.json'}: ignoring unknown keys 'n_layerz' (did you mean")
    assert "'zzz'; the known fields of this layout are activation_function, " in message


def test_add_prefix_space_in_tokenizer_config_is_refused(tmp_path):
    folder = shutil.copytree(GPT2_TINY, tmp_path / "prefix")
    config = {"add_prefix_space": False, "model_max_length": 32}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    load_model(folder)
    (folder / "tokenizer_config.json").write_text(json.dumps({"add_prefix_space": True}))
    with pytest.raises(UnsupportedModelError, match=r"tokenizer_config\.json: add_prefix_space=true"):
        load_model(folder)


# ------------------------------------------------------------------------------------------------
# Damaged GPT-2 folders, as a class (tests/infer/damage.py), and every field's JSON type.
GPT2_FILES = ["config.json", "model.safetensors", "vocab.json", "merges.txt"]


def test_every_damaged_file_of_a_gpt2_folder_is_a_model_file_error(tmp_path):
    from tests.infer.damage import check_class

    folder = shutil.copytree(GPT2_TINY, tmp_path / "damaged")
    assert check_class(folder, load_model, (ModelFileError,), GPT2_FILES) == []


# What transformers' GPT2Config fields hold, written out here independently of gpt2.FIELDS.
JSON_KINDS = {
    "bool": ["tie_word_embeddings", "scale_attn_weights", "scale_attn_by_inverse_layer_idx",
             "reorder_and_upcast_attn", "add_cross_attention", "use_cache", "summary_use_proj",
             "summary_proj_to_labels"],
    "count": ["vocab_size", "n_positions", "n_embd", "n_layer", "n_head"],
    "count-or-null": ["n_inner"],
    "number": ["layer_norm_epsilon", "attn_pdrop", "embd_pdrop", "resid_pdrop", "summary_first_dropout",
               "initializer_range"],
    "string": ["activation_function", "summary_type", "transformers_version"],
    "id-or-null": ["bos_token_id", "eos_token_id", "pad_token_id"],
}  # fmt: skip
NOT_A = {
    "bool": [None, 0, 1, "false", "true", "", [], {}, 1.0],
    "count": [None, True, False, 0, -1, 1.5, 16.0, "16", [], {}, [16]],
    "count-or-null": [True, False, 0, -1, 1.5, "64", [], {}],
    "number": [None, True, False, "1e-5", "", [], {}, [0.1], -1],
    "string": [None, True, 0, 1.5, [], {}, ["gelu_new"]],
    "id-or-null": [True, -1, 1.5, "269", [], {}],
}


@pytest.mark.parametrize(
    ("field", "value"),
    [(field, value) for kind, fields in JSON_KINDS.items() for field in fields for value in NOT_A[kind]],
    ids=repr,
)
def test_a_field_of_the_wrong_json_type_is_refused_naming_it(tmp_path, field, value):
    folder = shutil.copytree(GPT2_TINY, tmp_path / "typed")
    _edit(folder, **{field: value})
    with pytest.raises(ModelFileError, match=rf"config\.json: field '{field}' must be ") as info:
        load_model(folder)
    assert json.dumps(value) in str(info.value)


def test_the_string_false_is_not_taken_as_true(tmp_path):
    # bool("false") is True: "tie_word_embeddings": "false" used to load as a tied model
    folder = shutil.copytree(GPT2_TINY, tmp_path / "tie")
    _edit(folder, tie_word_embeddings="false")
    with pytest.raises(ModelFileError, match=r"'tie_word_embeddings' must be true or false, got \"false\""):
        load_model(folder)


def gpt2_tokenizer_json(folder) -> dict:
    """The tokenizer.json of GPT-2's Hub repository (openai-community/gpt2), for the fixture's
    vocabulary: ByteLevel pre-tokenizer with GPT-2's own regex (use_regex), BPE, <|endoftext|> added."""
    vocab = json.loads((folder / "vocab.json").read_text())
    merges = (folder / "merges.txt").read_text().splitlines()[1:]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 269, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": True, "special": True}],
        "normalizer": None, "pre_tokenizer": byte_level,
        "post_processor": {**byte_level, "add_prefix_space": True, "trim_offsets": False},
        "decoder": {**byte_level, "add_prefix_space": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "vocab": vocab,
                  "merges": merges},
    }  # fmt: skip


def test_a_gpt2_folder_with_tokenizer_json_reads_it(tmp_path, gpt2):
    """tokenizer.json (what transformers' fast tokenizer runs) wins over vocab.json + merges.txt."""
    folder = shutil.copytree(GPT2_TINY, tmp_path / "fast")
    (folder / "tokenizer.json").write_text(json.dumps(gpt2_tokenizer_json(folder), ensure_ascii=False))
    (folder / "vocab.json").unlink()
    (folder / "merges.txt").unlink()
    loaded = load_model(folder)
    assert loaded.tokenizer == gpt2.tokenizer
    for text, ids in zip(REFERENCE["texts"], REFERENCE["text_ids"], strict=True):
        assert loaded.tokenizer.encode(text) == ids
