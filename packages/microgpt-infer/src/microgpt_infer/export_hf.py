"""`export_hf`: a microGPT model in Hugging Face's own layout, for `transformers`' `from_pretrained`.

    uv run export-hf runs/quickstart/model hf/quickstart            # the layout the config fits
    uv run export-hf runs/llama/model hf/llama --layout llama --force

Two of our configurations are models transformers has (`LAYOUTS`):

    gpt2    learned positions, LayerNorm, GELU MLP (tanh or exact), biases, a final norm, no embedding
            scale, one key/value head per query head, no QK-norm   -> GPT2LMHeadModel
    llama   rotary positions, RMSNorm, SwiGLU MLP, no biases, a final norm, no embedding scale, no
            QK-norm (grouped-query attention and any rope_theta allowed)   -> LlamaForCausalLM

Either may tie its head to the embeddings or not. A config that fits neither is refused with every
field that keeps it out of each layout, and the value it would need (`layout_of`).

The folder written holds what `save_pretrained` of the model and of a fast tokenizer would:

    config.json              GPT2Config / LlamaConfig fields (`gpt2.gpt2_hf_config`,
                             `llama.llama_hf_config`): architectures, model_type, dtype float32,
                             bos and eos = our end-of-text id
    model.safetensors        float32, Hugging Face's names (`gpt2.gpt2_state_dict`,
                             `llama.llama_state_dict`, the key tables read backwards); a tied head
                             has no lm_head.weight, as save_pretrained writes it
    tokenizer.json           the tokenizer (`microgpt_data.tokenizer_json.write_tokenizer_json`)
    vocab.json, merges.txt   the same, GPT-2's files (GPT-2 layout, and only for a tokenizer that
                             splits with GPT-2's pattern: the files carry none)
    tokenizer_config.json    transformers' (not ours): tokenizer_class PreTrainedTokenizerFast, the
                             end-of-text token as bos and eos, model_max_length = the context, and
                             chat_template: the source's (`chat.load_chat_template`), else
                             `chat.DEFAULT_CHAT_TEMPLATE`, so that transformers' apply_chat_template
                             and `transformers serve` chat as microgpt's server does (both refuse
                             chat without a template)
    README.md                the model card (`microgpt_infer.card`), with a transformers snippet
    training_summary.json    the source's, when it has one (the card reads it)

No generation_config.json: transformers derives one from config.json. The folder is staged beside
`out_dir`, read back with our own `load_folder` (same config, same weights, same tokenizer, or
nothing is written) and only then swapped in whole (`microgpt_core.files.replace_folder`); a
non-empty `out_dir` is replaced only with `force`, and never the model's own folder or one holding it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from microgpt_core import GPTConfig
from microgpt_core.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from microgpt_core.files import replace_folder, write_atomic
from microgpt_core.jsonfile import read_json_object
from microgpt_core.params import count_params, flatten
from microgpt_data import signals
from microgpt_data.errors import DataError
from microgpt_data.tokenizer import GPT2_PATTERN
from microgpt_data.tokenizer_files import CONFIG_FILE as TOKENIZER_CONFIG_FILE
from microgpt_data.tokenizer_files import write_gpt2_files
from microgpt_data.tokenizer_json import TOKENIZER_JSON_FILE, write_tokenizer_json
from microgpt_infer import card, gpt2, hub, llama
from microgpt_infer.chat import DEFAULT_CHAT_TEMPLATE, ChatTemplateError, load_chat_template
from microgpt_infer.errors import ExportError, ModelFileError
from microgpt_infer.folder import Model, load_folder
from microgpt_infer.model import load_model

__all__ = ["LAYOUTS", "export_hf", "layout_of"]

# What each layout needs of a GPTConfig: field -> the values it may take (the first is the one to set).
LAYOUTS: dict[str, dict[str, tuple[Any, ...]]] = {
    "gpt2": {
        "positional": ("learned",),
        "norm": ("layernorm",),
        "mlp": ("gelu",),
        "gelu": ("tanh", "exact"),
        "bias": (True,),
        "final_norm": (True,),
        "embed_scale": (False,),
        "qk_norm": (False,),
    },
    "llama": {
        "positional": ("rope",),
        "norm": ("rmsnorm",),
        "mlp": ("swiglu",),
        "bias": (False,),
        "final_norm": (True,),
        "embed_scale": (False,),
        "qk_norm": (False,),
    },
}
# Fields a Hugging Face config does not carry: the export reads back without them.
_NOT_EXPORTED = ("dropout", "attention", "compute_dtype")


def _misfits(config: GPTConfig, layout: str) -> list[str]:
    """What keeps `config` out of `layout`: "field=value (has value)" for each field that differs."""
    needs = dict(LAYOUTS[layout])
    misfits = [
        f"{field}={_show(valid[0])} (has {_show(getattr(config, field))})"
        for field, valid in needs.items()
        if getattr(config, field) not in valid
    ]
    if layout == "gpt2" and config.n_kv_heads != config.n_heads:
        misfits.append(
            f"n_kv_heads={config.n_heads}, as n_heads (has {config.n_kv_heads}: GPT-2 has no grouped-query "
            "attention)"
        )
    return misfits


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else repr(value)


def layout_of(config: GPTConfig, layout: str | None = None) -> str:
    """The Hugging Face layout `config` is exported to: `layout` if given and `config` fits it, else
    the one layout it fits.

    Raises:
      ExportError: `layout` is not one of `LAYOUTS`, or `config` does not fit it (or, without
        `layout`, fits neither): the message names every field in the way and the value it needs.
    """
    if layout is not None and layout not in LAYOUTS:
        raise ExportError(f"layout {layout!r} is not one of {sorted(LAYOUTS)}")
    candidates = [layout] if layout is not None else list(LAYOUTS)
    misfits = {name: _misfits(config, name) for name in candidates}
    for name in candidates:
        if not misfits[name]:
            return name
    reasons = "; ".join(f"the {name} layout needs {', '.join(m)}" for name, m in misfits.items())
    fits = "does not fit" if layout is not None else "fits neither Hugging Face layout"
    raise ExportError(
        f"the model {fits} ({reasons}); these are training choices, so train a model with those "
        "values (train's flags of the same names) to export it"
    )


def export_hf(
    model_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, layout: str | None = None,
    force: bool = False,
) -> Path:  # fmt: skip
    """Writes the model at `model_dir` into `out_dir` in Hugging Face's layout (module docstring).

    Args:
      model_dir: anything `load_model` reads: a model folder of any layout, a run folder, a Hub id.
      out_dir: the folder to write; created if missing (its parents too).
      layout: "gpt2" or "llama"; default: the one the model's config fits.
      force: replace `out_dir` if it exists and is not empty (without it, that is an error).
    Returns:
      `out_dir` as a `Path`.
    Raises:
      ModelNotFoundError, ModelFileError, HubError: `model_dir` cannot be read (from `load_model`).
      ExportError: the config fits no layout (or not `layout`), or `out_dir` is in the way.
    """
    model = load_model(model_dir)
    layout = layout_of(model.config, layout)
    out_dir = Path(out_dir).expanduser()
    _check_destination(out_dir, model.source, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = out_dir.with_name(f".{out_dir.name}.export-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with signals.cleanup(lambda: signals.remove_folder(staged)):  # a Ctrl-C of the command removes it
            staged.mkdir()
            _write(staged, model, layout, location=os.fspath(out_dir))
            _check_reads_back(staged, model, out_dir)
            with signals.critical():  # and waits for the swap
                replace_folder(staged, out_dir)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return out_dir


def _check_destination(out_dir: Path, source: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a folder; give a folder to write the export into")
    here, there = out_dir.resolve(), source.resolve()
    if here == there or here in there.parents:
        raise ExportError(
            f"{out_dir}: is the model's own folder {source} or holds it; export into another folder"
        )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ExportError(
            f"{out_dir}: the folder exists and is not empty; choose another, or pass --force (force=True) "
            "to replace it"
        )


def _write(folder: Path, model: Model, layout: str, *, location: str) -> None:
    """Every file of the export (module docstring), into the staging `folder`."""
    config, tokenizer = model.config, model.tokenizer
    eot = tokenizer.eot_id
    hf_config, state_dict = {
        "gpt2": (gpt2.gpt2_hf_config, gpt2.gpt2_state_dict),
        "llama": (llama.llama_hf_config, llama.llama_state_dict),
    }[layout]
    body, tensors = hf_config(config, eot_id=eot), state_dict(model.params, config)
    write_atomic(folder / WEIGHTS_FILE, safetensors.numpy.save(tensors, metadata={"format": "pt"}))
    write_atomic(folder / CONFIG_FILE, _json(body))
    try:
        write_tokenizer_json(tokenizer, folder / TOKENIZER_JSON_FILE)
        if layout == "gpt2" and tokenizer.pattern == GPT2_PATTERN:  # the files carry no pattern
            write_gpt2_files(tokenizer, folder)
    except DataError as e:
        raise ExportError(f"cannot write the tokenizer of {model.source}: {e}") from None
    try:
        chat_template = load_chat_template(model.source)
    except ChatTemplateError as e:
        raise ExportError(f"cannot carry the chat template of {model.source}: {e}") from None
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # tokenizer.json as it is, in transformers 4 and 5
        "bos_token": tokenizer.eot_token,
        "eos_token": tokenizer.eot_token,
        "model_max_length": config.context_length,
        "clean_up_tokenization_spaces": False,
        "chat_template": DEFAULT_CHAT_TEMPLATE if chat_template is None else chat_template,
    }
    write_atomic(folder / TOKENIZER_CONFIG_FILE, _json(tokenizer_config))
    summary = None
    if (model.source / card.SUMMARY_FILE).is_file():
        summary = read_json_object(
            model.source / card.SUMMARY_FILE, error=ModelFileError, holds="a JSON object (a training summary)"
        )
        write_atomic(folder / card.SUMMARY_FILE, (model.source / card.SUMMARY_FILE).read_bytes())
    text = hub.hf_layout_card(
        config, location, name=Path(location).name, n_params=count_params(model.params), summary=summary
    )
    write_atomic(folder / card.CARD_FILE, text.encode("utf-8"))


def _json(body: dict[str, Any]) -> bytes:
    return (json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _check_reads_back(staged: Path, model: Model, out_dir: Path) -> None:
    """The staged folder loads with our own reader into the same config, weights and tokenizer."""
    try:
        back = load_folder(staged)
    except ModelFileError as e:
        raise ExportError(f"the export to {out_dir} does not read back ({e}); nothing was written") from None
    ours = {k: v for k, v in model.config.to_dict().items() if k not in _NOT_EXPORTED}
    theirs = {k: v for k, v in back.config.to_dict().items() if k not in _NOT_EXPORTED}
    differ = sorted(k for k in ours if ours[k] != theirs[k])
    a, b = flatten(model.params), flatten(back.params)
    differ += sorted(k for k in a if k not in b or not np.array_equal(np.asarray(a[k]), np.asarray(b[k])))
    if back.tokenizer != model.tokenizer:
        differ.append("the tokenizer")
    if differ:
        raise ExportError(
            f"the export to {out_dir} reads back different {', '.join(differ)}; nothing was written"
        )
