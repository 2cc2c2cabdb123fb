"""`export-hf`: our models in Hugging Face's GPT-2 and Llama layouts, checked against the fixtures.

The fixtures (tests/fixtures/gpt2_tiny, tests/fixtures/llama_tiny) were written by transformers'
save_pretrained: an export of the model read from them must have the same tensor names and shapes and
the same config.json fields (less `transformers_version`, which only transformers writes; plus
`torch_dtype` and, for Llama, a top-level `rope_theta`, which transformers 4 reads). Every export
must load back with our own `load_model` into the same model (same logits). That transformers'
`from_pretrained` gives our logits is shown by tests/fixtures/check_export_hf.py in the side venv.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import safe_open

from microgpt_core import SEED_CONFIG, GPTConfig, forward, init_params, save_pretrained
from microgpt_infer import ExportError, load_model
from microgpt_infer.card import CARD_FILE, SUMMARY_FILE, is_generated
from microgpt_infer.chat import CHAT_TEMPLATE_FILE, DEFAULT_CHAT_TEMPLATE, load_chat_template
from microgpt_infer.cli import export_main
from microgpt_infer.export_hf import export_hf, layout_of
from tests.infer.conftest import GPT2_TINY, LLAMA_TIED, LLAMA_TINY, TINY_INFER, byte_tokenizer

# A Llama-style model as microgpt-train makes one: grouped-query attention, rope_theta 50000, untied.
LLAMA_STYLE = GPTConfig(
    vocab_size=257, context_length=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=48,
    positional="rope", rope_theta=50000.0, norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False,
)  # fmt: skip
IDS = jnp.asarray(
    [[0, 5, 31, 17, 42, 120, 7, 99, 255, 256, 101, 13], [12, 3, 44, 5, 6, 7, 8, 9, 10, 11, 12, 13]]
)
# Fields only transformers writes, and those we add for transformers 4.
ONLY_THEIRS = {"transformers_version"}
ONLY_OURS = {"gpt2": {"torch_dtype"}, "llama": {"torch_dtype", "rope_theta"}}


def saved(folder, config, seed=0):
    """A model folder in our layout (as `train` exports it), weights drawn at 10x the init's scale so
    that the logits are far from uniform."""
    params = jax.tree.map(lambda p: p * 10, init_params(jax.random.key(seed), config))
    save_pretrained(folder, params, config)
    byte_tokenizer().save(folder)
    return folder


def tensors(path):
    with safe_open(path, "np") as f:
        return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}  # noqa: SIM118


def config_json(folder):
    return json.loads((folder / "config.json").read_text())


def assert_same_model(a, b):
    assert a.tokenizer == b.tokenizer
    np.testing.assert_array_equal(forward(a.params, IDS % a.config.vocab_size, a.config),
                                  forward(b.params, IDS % b.config.vocab_size, b.config))  # fmt: skip


# ------------------------------------------------------------------------------------------------
# Which layout a config fits.
def test_layout_of_each_config():
    assert layout_of(TINY_INFER) == "gpt2"
    assert layout_of(TINY_INFER.replace(gelu="exact", tie_embeddings=False)) == "gpt2"
    assert layout_of(LLAMA_STYLE) == "llama"
    assert layout_of(LLAMA_STYLE.replace(n_kv_heads=1, tie_embeddings=True), "llama") == "llama"


def test_a_config_that_fits_neither_layout_names_every_field():
    with pytest.raises(ExportError) as info:
        layout_of(SEED_CONFIG)  # sinusoidal positions, embedding scale, no final norm
    message = str(info.value)
    assert "fits neither Hugging Face layout" in message
    for needed in ("positional='learned' (has 'sinusoidal')", "embed_scale=false (has true)",
                   "final_norm=true (has false)", "positional='rope'", "norm='rmsnorm' (has 'layernorm')",
                   "mlp='swiglu' (has 'gelu')", "bias=false (has true)"):  # fmt: skip
        assert needed in message
    with pytest.raises(ExportError, match=r"does not fit \(the gpt2 layout needs n_kv_heads=4, as n_heads"):
        layout_of(TINY_INFER.replace(n_kv_heads=2), "gpt2")
    with pytest.raises(ExportError, match=r"the llama layout needs qk_norm=false \(has true\)"):
        layout_of(LLAMA_STYLE.replace(qk_norm=True))
    with pytest.raises(ExportError, match=r"layout 'gpt3' is not one of \['gpt2', 'llama'\]"):
        layout_of(TINY_INFER, "gpt3")


# ------------------------------------------------------------------------------------------------
# The exports of the fixtures' models have the fixtures' names, shapes and config fields.
@pytest.mark.parametrize(
    ("fixture", "layout"), [(GPT2_TINY, "gpt2"), (LLAMA_TINY, "llama"), (LLAMA_TIED, "llama")],
    ids=["gpt2", "llama-untied", "llama-tied"],
)  # fmt: skip
def test_export_has_the_names_shapes_and_config_fields_transformers_writes(tmp_path, fixture, layout):
    out = export_hf(fixture, tmp_path / "hf")
    assert tensors(out / "model.safetensors") == tensors(fixture / "model.safetensors")
    with safe_open(out / "model.safetensors", "np") as f:
        assert f.metadata() == {"format": "pt"}  # as save_pretrained writes it
    ours, theirs = config_json(out), config_json(fixture)
    # The fields transformers 5.24 writes (tied/ has transformers 4's rope_theta instead: see its script).
    written = config_json(GPT2_TINY if layout == "gpt2" else LLAMA_TINY)
    assert set(ours) == set(written) - ONLY_THEIRS | ONLY_OURS[layout]
    # The same values, but for those transformers writes from its defaults and we from the model.
    differ = {k for k in set(ours) & set(theirs) if ours[k] != theirs[k]}
    assert differ <= {"n_inner", "attn_pdrop", "embd_pdrop", "resid_pdrop", "bos_token_id", "eos_token_id"}
    if layout == "gpt2":
        assert ours["n_inner"] == 4 * theirs["n_embd"] and theirs["n_inner"] is None  # the same width
    else:
        assert ours["rope_parameters"]["rope_theta"] == ours["rope_theta"] == (
            theirs.get("rope_parameters") or {"rope_theta": theirs["rope_theta"]})["rope_theta"]  # fmt: skip
        assert ours["bos_token_id"] == ours["eos_token_id"] == 341  # our one end-of-text token
    back, model = load_model(out), load_model(fixture)
    assert_same_model(back, model)
    reference = json.loads(
        ((LLAMA_TINY if fixture == LLAMA_TIED else fixture) / "reference.json").read_text()
    )
    logits = forward(back.params, jnp.asarray(reference["ids"]), back.config)
    np.testing.assert_allclose(np.asarray(logits), np.load(fixture / "logits.npy"), atol=1e-4, rtol=0)


def test_export_files_and_tokenizer_config(tmp_path):
    gpt2 = export_hf(saved(tmp_path / "gpt2-src", TINY_INFER), tmp_path / "gpt2")
    llama = export_hf(saved(tmp_path / "llama-src", LLAMA_STYLE), tmp_path / "llama")
    common = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", CARD_FILE}
    assert {p.name for p in gpt2.iterdir()} == common | {"vocab.json", "merges.txt"}
    assert {p.name for p in llama.iterdir()} == common
    assert json.loads((llama / "tokenizer_config.json").read_text()) == {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>", "model_max_length": 64, "clean_up_tokenization_spaces": False,
        "chat_template": DEFAULT_CHAT_TEMPLATE,  # the source has none
    }  # fmt: skip
    body = config_json(llama)
    assert body["rope_parameters"] == {"rope_theta": 50000.0, "rope_type": "default"}
    assert (body["num_key_value_heads"], body["head_dim"], body["intermediate_size"]) == (2, 8, 48)
    assert (body["architectures"], body["model_type"], body["dtype"]) == (
        ["LlamaForCausalLM"],
        "llama",
        "float32",
    )
    assert config_json(gpt2)["architectures"] == ["GPT2LMHeadModel"]
    assert "lm_head.weight" not in tensors(gpt2 / "model.safetensors")  # tied, as save_pretrained writes it
    assert "lm_head.weight" in tensors(llama / "model.safetensors")


def test_the_chat_template_is_carried(tmp_path):
    source = saved(tmp_path / "src", TINY_INFER)
    (source / CHAT_TEMPLATE_FILE).write_text("{{ eos_token }}{{ messages[0]['content'] }}", encoding="utf-8")
    out = export_hf(source, tmp_path / "hf")
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == (
        "{{ eos_token }}{{ messages[0]['content'] }}"
    )
    again = export_hf(out, tmp_path / "again")  # a Hugging Face folder's, from tokenizer_config.json
    assert load_chat_template(again) == load_chat_template(source)


@pytest.mark.parametrize("config", [TINY_INFER, TINY_INFER.replace(gelu="exact", tie_embeddings=False),
                                    LLAMA_STYLE, LLAMA_STYLE.replace(n_kv_heads=1, tie_embeddings=True)],
                         ids=["gpt2", "gpt2-exact-untied", "llama", "llama-mqa-tied"])  # fmt: skip
def test_a_model_trained_here_round_trips(tmp_path, config):
    source = saved(tmp_path / "model", config)
    out = export_hf(source, tmp_path / "hf")
    back, model = load_model(out), load_model(source)
    assert back.config == model.config
    assert_same_model(back, model)


def test_a_gpt2_export_of_a_tokenizer_with_another_pattern_has_tokenizer_json_only(tmp_path):
    """vocab.json + merges.txt carry no split pattern (their readers split with GPT-2's), so a
    tokenizer with another one is exported as tokenizer.json alone."""
    from microgpt_data.tokenizer import Tokenizer

    source = saved(tmp_path / "model", TINY_INFER)
    digits = Tokenizer(
        {bytes([b]): b for b in range(256)}, {"<|endoftext|>": 256}, pattern=r"\p{N}{1,3}|[^\p{N}]+"
    )
    digits.save(source)
    out = export_hf(source, tmp_path / "hf")
    assert not (out / "vocab.json").exists() and (out / "tokenizer.json").is_file()
    assert load_model(out).tokenizer == digits


def test_the_card_and_training_summary(tmp_path):
    source = saved(tmp_path / "model", LLAMA_STYLE)
    summary = {"step": 3, "run": {"max_steps": 3, "data": "pydocs", "sample_prompt": "def f("}}
    (source / SUMMARY_FILE).write_text(json.dumps(summary))
    out = export_hf(source, tmp_path / "hf")
    card = (out / CARD_FILE).read_text()
    assert is_generated(card)  # push-to-hub writes it again for the repo id
    assert f'AutoModelForCausalLM.from_pretrained("{out}")' in card and 'tokenizer("def f("' in card
    assert "load_pretrained" not in card  # microgpt-core alone reads our layout only
    assert json.loads((out / SUMMARY_FILE).read_text()) == summary


# ------------------------------------------------------------------------------------------------
# The destination.
def test_a_non_empty_folder_is_replaced_only_with_force(tmp_path):
    source = saved(tmp_path / "model", TINY_INFER)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"hf: the folder exists and is not empty; .*--force"):
        export_hf(source, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    export_hf(source, out, force=True)
    assert not (out / "keep.txt").exists() and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "model"]  # no staging folder left
    (tmp_path / "empty").mkdir()
    assert export_hf(source, tmp_path / "empty" / "nested" / "hf").is_dir()  # parents made; empty is fine


def test_the_model_folder_itself_or_a_file_is_refused(tmp_path):
    source = saved(tmp_path / "runs" / "r" / "model", TINY_INFER)
    for target in (source, tmp_path / "runs", tmp_path):
        with pytest.raises(ExportError, match=r"is the model's own folder .* or holds it"):
            export_hf(tmp_path / "runs" / "r", target, force=True)  # a run folder: its model/
    (tmp_path / "file").write_text("x")
    with pytest.raises(ExportError, match=r"file: exists and is not a folder"):
        export_hf(source, tmp_path / "file")
    assert (source / "config.json").is_file()


def test_a_failed_export_changes_nothing(tmp_path, monkeypatch):
    source = saved(tmp_path / "model", TINY_INFER)
    out = export_hf(source, tmp_path / "hf")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import microgpt_infer.export_hf

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(microgpt_infer.export_hf, "write_tokenizer_json", full_disk)
    with pytest.raises(OSError, match="No space left"):
        export_hf(saved(tmp_path / "other", LLAMA_STYLE), out, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "model", "other"]
    with pytest.raises(ExportError, match="fits neither"):
        export_hf(saved(tmp_path / "seed", SEED_CONFIG.replace(vocab_size=257, d_model=32)), tmp_path / "no")
    assert not (tmp_path / "no").exists()


# ------------------------------------------------------------------------------------------------
# The command.
def test_command_exit_codes(tmp_path, capsys):
    from tests.infer.test_cli import one_error_line, run

    source = saved(tmp_path / "model", LLAMA_STYLE)
    assert export_main([str(source), str(tmp_path / "hf")]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'hf'}\n"
    assert export_main([str(source), str(tmp_path / "hf")]) == 2
    assert "--force" in one_error_line(capsys.readouterr().err)
    assert export_main([str(source), str(tmp_path / "hf"), "--force", "--layout", "llama"]) == 0
    capsys.readouterr()
    assert export_main([str(source), str(tmp_path / "x"), "--layout", "gpt2"]) == 2
    assert "the gpt2 layout needs positional='learned'" in one_error_line(capsys.readouterr().err)
    assert export_main([str(tmp_path / "missing"), str(tmp_path / "y")]) == 2
    assert one_error_line(capsys.readouterr().err)
    assert run(export_main, [str(source)]) == 2  # OUT_DIR missing: argparse
    with pytest.raises(SystemExit) as info:
        export_main(["--help"])
    assert info.value.code == 0 and "--layout" in capsys.readouterr().out
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_installed_command(tmp_path):
    """`export-hf` as installed by the package's [project.scripts]: exit 0 and the folder, then 2."""
    import subprocess
    import sys
    from pathlib import Path

    from tests.infer.test_cli import one_error_line

    exe = Path(sys.executable).parent / "export-hf"
    source = saved(tmp_path / "model", TINY_INFER)
    ok = subprocess.run(
        [str(exe), str(source), str(tmp_path / "hf")], capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0 and ok.stdout == f"{tmp_path / 'hf'}\n", ok.stderr
    argv = [str(exe), str(source), str(tmp_path / "hf"), "--layout", "gpt3"]
    bad = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "layout 'gpt3' is not one of" in one_error_line(bad.stderr)
