"""Llama in Hugging Face's layout: logits and token ids equal transformers' on the committed fixture.

The fixture (tests/fixtures/llama_tiny/) was made by tests/fixtures/make_llama_tiny.py in the side
venv: a random LlamaForCausalLM with grouped-query attention, rope_theta 500000, rms_norm_eps 1e-6,
an MLP of width 96 and an untied head, saved by transformers; a Llama 3 style byte-level BPE saved as
tokenizer.json; the model's logits over fixed ids and the tokenizer's ids of a few texts. `tied/` is
a tied, one-key/value-head variant whose config.json has transformers 4's top-level rope_theta.
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
from microgpt_infer.llama import KEY_TABLE, llama_config
from tests.infer.conftest import LLAMA_TIED, LLAMA_TINY

REFERENCE = json.loads((LLAMA_TINY / "reference.json").read_text())
SPECIAL = REFERENCE["special_tokens"]


@pytest.fixture(scope="module")
def llama():
    return load_model(LLAMA_TINY)


@pytest.fixture(scope="module")
def tied():
    return load_model(LLAMA_TIED)


def test_config_converted(llama, tied):
    c = llama.config
    assert (c.vocab_size, c.context_length, c.d_model, c.n_layers, c.n_heads, c.n_kv_heads, c.d_ff) == (
        343, 64, 64, 2, 4, 2, 96
    )  # fmt: skip
    assert (c.positional, c.rope_theta, c.norm, c.norm_eps, c.mlp, c.bias, c.final_norm) == (
        "rope", 500000.0, "rmsnorm", 1e-6, "swiglu", False, True
    )  # fmt: skip
    assert (c.tie_embeddings, c.embed_scale, c.qk_norm) == (False, False, False)
    t = tied.config
    assert (t.d_model, t.n_heads, t.n_kv_heads, t.d_ff, t.rope_theta, t.norm_eps, t.tie_embeddings) == (
        32, 4, 1, 48, 10000.0, 1e-5, True
    )  # fmt: skip
    assert "head" not in tied.params


@pytest.mark.parametrize("folder", [LLAMA_TINY, LLAMA_TIED], ids=["untied-gqa", "tied-mqa"])
def test_logits_equal_transformers(folder):
    model = load_model(folder)
    expected = np.load(folder / "logits.npy")  # (2, 16, 343)
    logits = forward(model.params, jnp.asarray(REFERENCE["ids"]), model.config)
    assert logits.shape == expected.shape
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-4, rtol=0)


def test_token_ids_equal_transformers(llama):
    for text, ids in zip(REFERENCE["texts"], REFERENCE["text_ids"], strict=True):
        assert llama.tokenizer.encode(text) == ids, text
        assert llama.tokenizer.decode(ids) == text
    assert llama.tokenizer.special_tokens == SPECIAL


def test_end_of_text_is_config_eos(llama, tied):
    assert llama.tokenizer.eot_token == "<|end_of_text|>"  # eos_token_id 341
    assert tied.tokenizer.eot_id == SPECIAL["<|end_of_text|>"]  # eos_token_id [341, 342]: the first


def test_end_of_text_from_tokenizer_config_or_config(tmp_path):
    folder = shutil.copytree(LLAMA_TINY, tmp_path / "eos")
    _edit(folder, eos_token_id=None)  # then tokenizer_config.json's eos_token
    body = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**body, "eos_token": "<|eot_id|>"}))
    assert load_model(folder).tokenizer.eot_token == "<|eot_id|>"
    _edit(folder, eos_token_id=SPECIAL["<|begin_of_text|>"])  # config.json wins over tokenizer_config.json
    assert load_model(folder).tokenizer.eot_token == "<|begin_of_text|>"
    _edit(folder, eos_token_id=17)  # an ordinary token cannot end a text
    with pytest.raises(ModelFileError, match=r"config\.json: eos_token_id 17 is not a special token"):
        load_model(folder)


def test_generates_text(llama):
    out = generate(llama, ["the cat", "héllo"], rng=0, max_new_tokens=8, temperature=0)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


# ------------------------------------------------------------------------------------------------
# rope_theta where transformers 5 writes it and where transformers 4 did.
@pytest.mark.parametrize(
    ("changes", "theta"),
    [
        ({"rope_parameters": None, "rope_theta": 250000.0}, 250000.0),  # transformers 4
        ({"rope_parameters": None, "rope_scaling": None, "rope_theta": 123456}, 123456.0),
        ({"rope_parameters": {"rope_type": "default"}, "rope_theta": 250000.0}, 250000.0),
        ({"rope_parameters": {"rope_theta": 70000.0, "rope_type": "default"}, "rope_theta": 9.0}, 70000.0),
        ({"rope_parameters": None, "rope_scaling": {"type": "default", "rope_theta": 5e5}}, 5e5),
        ({"rope_parameters": None}, 10000.0),  # transformers' default
    ],
    ids=["top-level", "integer", "type-only-dict", "dict-wins", "old-type-key", "default"],
)
def test_rope_theta_in_either_form(changes, theta):
    body = {**json.loads((LLAMA_TINY / "config.json").read_text()), **changes}  # null: as if absent
    assert llama_config(body).rope_theta == theta


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 5e5}},
         r'rope_parameters\.rope_type "llama3" is not supported'),
        ({"rope_parameters": None, "rope_scaling": {"type": "linear", "factor": 2.0}, "rope_theta": 1e4},
         r'rope_scaling\.rope_type "linear" is not supported'),
        ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, r'rope_scaling\.rope_type "yarn"'),
        ({"attention_bias": True}, r"attention_bias=true \(biases on the q/k/v/o projections\)"),
        ({"mlp_bias": True}, r"mlp_bias=true \(biases on the MLP projections\)"),
        ({"hidden_act": "gelu"}, r"hidden_act 'gelu' is not supported"),
        ({"head_dim": 32}, r"head_dim 32 is not supported: .* 64 / 4 wide \(head_dim 16\)"),
        ({"quantization_config": {"quant_method": "bitsandbytes"}}, r"quantization_config is set"),
        ({"partial_rotary_factor": 0.5}, r"partial_rotary_factor 0\.5 \(rotary embeddings on part of each"),
        ({"rope_parameters": {"rope_type": "default", "rope_theta": 5e5, "partial_rotary_factor": 0.25}},
         r"rope_parameters\.partial_rotary_factor 0\.25"),
    ],
    ids=["llama3-scaling", "linear-old-form", "yarn", "attention-bias", "mlp-bias", "gelu", "head-dim",
         "quantized", "partial-rotary", "partial-rotary-in-rope-parameters"],
)  # fmt: skip
def test_unsupported_variants_are_refused_naming_the_field(tmp_path, changes, message):
    folder = shutil.copytree(LLAMA_TINY, tmp_path / "variant")
    _edit(folder, **changes)
    with pytest.raises(UnsupportedModelError, match=message) as info:
        load_model(folder)
    assert str(folder / "config.json") in str(info.value)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"num_key_value_heads": 3}, r"num_key_value_heads \(3\) must divide num_attention_heads \(4\)"),
        ({"num_attention_heads": 3, "head_dim": None}, r"hidden_size \(64\) must be divisible by .*\(3\)"),
        ({"rope_parameters": {"rope_theta": "5e5"}}, r"field 'rope_parameters\.rope_theta' must be a finite"),
        ({"rope_parameters": None, "rope_theta": 0.5}, r"rope_theta must be a finite number > 1"),
        ({"rms_norm_eps": 2.0}, r"norm_eps must be a number in \(0, 1\)"),
        ({"hidden_size": None}, r"field 'hidden_size' must be an integer >= 1, got null"),
        ({"hidden_size": ...}, r"field 'hidden_size' is missing; a Llama config\.json has hidden_size"),
        ({"eos_token_id": []}, r"field 'eos_token_id' must be an integer >= 0, a non-empty list of them"),
    ],
    ids=["kv-heads", "heads", "theta-string", "theta-small", "eps", "null", "missing", "empty-eos-list"],
)
def test_inconsistent_configs_are_file_errors_naming_the_field(tmp_path, changes, message):
    folder = shutil.copytree(LLAMA_TINY, tmp_path / "bad")
    _edit(folder, **changes)
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(folder)
    assert str(folder / "config.json") in str(info.value)
    assert not isinstance(info.value, UnsupportedModelError)


def test_an_unknown_model_type_names_the_supported_ones(tmp_path):
    folder = shutil.copytree(LLAMA_TINY, tmp_path / "mistral")
    _edit(folder, model_type="mistral")
    with pytest.raises(ModelFileError, match=r"model_type \"mistral\" is not supported; .*'gpt2' or 'llama'"):
        load_model(folder)


# ------------------------------------------------------------------------------------------------
# Weights.
def test_key_table_transposes_and_fuses_qkv(llama):
    tensors = safetensors.numpy.load_file(LLAMA_TINY / "model.safetensors")
    w_qkv = np.asarray(llama.params["blocks"]["attn"]["w_qkv"])  # (L, D, (H + 2 Hkv) Dh) = (2, 64, 128)
    assert w_qkv.shape == (2, 64, 128)
    q, k, v = (tensors[f"model.layers.1.self_attn.{x}_proj.weight"] for x in "qkv")
    np.testing.assert_array_equal(w_qkv[1], np.concatenate([q.T, k.T, v.T], axis=1))
    np.testing.assert_array_equal(llama.params["head"]["w"], tensors["lm_head.weight"].T)
    np.testing.assert_array_equal(llama.params["blocks"]["mlp"]["w_out"][0], tensors[
        "model.layers.0.mlp.down_proj.weight"].T)  # fmt: skip
    assert KEY_TABLE["blocks.mlp.w_gate"] == ("model.layers.{i}.mlp.gate_proj.weight", True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("model.layers.1.self_attn.k_proj.weight"),
         r"missing tensor 'model\.layers\.1\.self_attn\.k_proj\.weight'"),
        (lambda t: t.update({"model.layers.2.input_layernorm.weight": np.ones(64, np.float32)}),
         "unexpected tensor"),
        (lambda t: t.update({"model.layers.0.self_attn.v_proj.weight": np.ones((64, 64), np.float32)}),
         r"'model\.layers\.0\.self_attn\.v_proj\.weight' has shape \(64, 64\); expected \(32, 64\)"),
        (lambda t: t.pop("lm_head.weight"), r"missing tensor 'lm_head\.weight'"),
        (lambda t: t["model.norm.weight"].__setitem__(0, np.inf), "infinite"),
    ],
    ids=["missing", "extra", "shape", "untied-without-head", "inf"],
)  # fmt: skip
def test_bad_weights_name_the_file_and_key(tmp_path, change, message):
    folder = shutil.copytree(LLAMA_TINY, tmp_path / "bad")
    tensors = {k: np.array(v) for k, v in safetensors.numpy.load_file(folder / "model.safetensors").items()}
    change(tensors)
    safetensors.numpy.save_file(tensors, folder / "model.safetensors")
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(folder)
    assert str(folder / "model.safetensors") in str(info.value)


def test_old_buffers_a_tied_head_copy_and_half_precision_load(tmp_path, tied):
    """Old transformers saved the rotary frequencies; some savers write a tied model's lm_head copy:
    both are skipped, not refused. F16/BF16 weights are widened to float32."""
    folder = shutil.copytree(LLAMA_TIED, tmp_path / "variants")
    tensors = safetensors.numpy.load_file(folder / "model.safetensors")
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = np.ones(4, np.float32)
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    safetensors.numpy.save_file(
        {k: v.astype(np.float16) for k, v in tensors.items()}, folder / "model.safetensors"
    )
    half = load_model(folder)
    assert half.params["embed"]["tokens"].dtype == jnp.float32
    np.testing.assert_allclose(half.params["embed"]["tokens"], tied.params["embed"]["tokens"], atol=1e-2)


def test_a_missing_tokenizer_json_is_named(tmp_path):
    folder = shutil.copytree(LLAMA_TINY, tmp_path / "tok")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelFileError, match=r"tok/tokenizer\.json: file not found"):
        load_model(folder)


def test_a_sentencepiece_tokenizer_json_is_refused_naming_it(tmp_path):
    """Llama 2 and Mistral ship a SentencePiece-style tokenizer.json (Metaspace pieces, byte fallback),
    which our byte-level BPE cannot run."""
    folder = shutil.copytree(LLAMA_TINY, tmp_path / "spm")
    body = json.loads((folder / "tokenizer.json").read_text())
    body["pre_tokenizer"] = None
    body["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        ],
    }
    body["decoder"] = {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]}
    body["model"]["byte_fallback"] = True
    (folder / "tokenizer.json").write_text(json.dumps(body))  # fmt: skip
    with pytest.raises(ModelFileError, match=r"byte_fallback true \(SentencePiece-style BPE") as info:
        load_model(folder)
    assert str(folder / "tokenizer.json") in str(info.value)


def _edit(folder, **changes):
    """Sets fields of config.json; a field set to ... is removed."""
    body = json.loads((folder / "config.json").read_text())
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not ...}
    (folder / "config.json").write_text(json.dumps(body))


def test_unknown_config_keys_are_named_in_a_warning(tmp_path, caplog):
    folder = shutil.copytree(LLAMA_TINY, tmp_path / "typo")
    _edit(folder, rms_norm_epss=1e-5, is_llama_config=True, rope_interleaved=False, partial_rotary_factor=1.0)
    with caplog.at_level("WARNING", logger="microgpt_infer"):
        for known in (LLAMA_TINY, LLAMA_TIED):  # what transformers writes: every key known
            load_model(known)
        assert caplog.messages == []
        model = load_model(folder)
    assert caplog.messages == [
        f"{folder / 'config.json'}: ignoring unknown key 'rms_norm_epss' (did you mean 'rms_norm_eps'?)"
    ]
    assert model.config.norm_eps == 1e-6


# ------------------------------------------------------------------------------------------------
# Damaged Llama folders, as a class (tests/infer/damage.py).
LLAMA_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


def test_every_damaged_file_of_a_llama_folder_is_a_model_file_error(tmp_path):
    from tests.infer.damage import check_class

    folder = shutil.copytree(LLAMA_TINY, tmp_path / "damaged")
    assert check_class(folder, load_model, (ModelFileError,), LLAMA_FILES) == []
