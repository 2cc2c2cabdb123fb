"""`Model` (params, config, tokenizer) and `load_folder`: one model folder on disk, of any layout.

    ours     config.json (GPTConfig + format_version), model.safetensors,
             tokenizer.tiktoken + tokenizer_config.json   (what microgpt-train exports to runs/*/model)
    GPT-2    config.json with "model_type": "gpt2", model.safetensors, and tokenizer.json or
             vocab.json + merges.txt   (Hugging Face's layout, converted by `gpt2.py`)
    Llama    config.json with "model_type": "llama", model.safetensors, tokenizer.json
             (Hugging Face's layout, as SmolLM and Llama 3 ship; converted by `llama.py`)

The tokenizer of a Hugging Face folder. `tokenizer.json` is what transformers' fast tokenizers run:
it carries the split pattern and the special tokens, so it is read whenever the folder has one
(`microgpt_data.tokenizer_json`; `tokenizers` is never imported). A GPT-2 folder without one is read
from vocab.json + merges.txt, which assume GPT-2's own split pattern. The end-of-text token is the
one config.json's `eos_token_id` names (the first, for a list), else tokenizer_config.json's
`eos_token`, else the reader's default (`<|endoftext|>` for vocab.json + merges.txt). Of
transformers' tokenizer_config.json nothing else is read (its other keys change no id), but
`add_prefix_space: true`, which would encode " " + text, is refused.

`load_folder_tokenizer` reads the tokenizer alone, the same way, without the weights (and a tokenizer
folder of ours, which has no config.json). Every error names the file at fault. `model.resolve_model`
finds the folder (a run folder's model, or a Hub repository's snapshot) and `model.load_model` reads
it here; `hub.push_to_hub` reads the folder it uploads here too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microgpt_core import CheckpointError, ConfigError, GPTConfig, load_pretrained
from microgpt_core.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from microgpt_core.jsonfile import read_json_object
from microgpt_core.params import Params
from microgpt_data.errors import TokenizerFileError
from microgpt_data.tokenizer import ENDOFTEXT, Tokenizer
from microgpt_data.tokenizer_files import CONFIG_FILE as TOKENIZER_CONFIG_FILE
from microgpt_data.tokenizer_files import GPT2_MERGES_FILE, GPT2_VOCAB_FILE, RANKS_FILE
from microgpt_data.tokenizer_json import TOKENIZER_JSON_FILE, read_tokenizer_json
from microgpt_infer import gpt2, llama
from microgpt_infer.errors import ModelFileError, ModelNotFoundError, UnsupportedModelError

__all__ = ["Model", "load_folder", "load_folder_config", "load_folder_tokenizer"]


@dataclass(frozen=True)
class Model:
    """A model ready to generate: parameters, their configuration and the tokenizer.

    Attributes:
      params: nested dict of float32 arrays (see `microgpt_core.params`).
      config: the model's `GPTConfig`.
      tokenizer: the `Tokenizer` it was trained with.
      source: the folder it was read from.
    """

    params: Params
    config: GPTConfig
    tokenizer: Tokenizer
    source: Path

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Model(source={str(self.source)!r}, d_model={c.d_model}, n_layers={c.n_layers}, "
            f"n_heads={c.n_heads}, context_length={c.context_length}, vocab_size={c.vocab_size})"
        )


def load_folder(path: Path) -> Model:
    """Reads a model folder of any layout: ours, GPT-2's or Llama's (see the module docstring).

    Raises:
      ModelNotFoundError: `path` is not a folder.
      ModelFileError: a file is missing, corrupted or does not match the others (names the file).
    """
    body = _config_body(path)
    config_path = path / CONFIG_FILE
    if gpt2.is_gpt2_config(body):
        config = gpt2.gpt2_config(body, config_path)
        params = gpt2.load_gpt2_params(path / WEIGHTS_FILE, config)
    elif llama.is_llama_config(body):
        config = llama.llama_config(body, config_path)
        params = llama.load_llama_params(path / WEIGHTS_FILE, config)
    else:
        try:
            params, config = load_pretrained(path)
        except CheckpointError as e:
            raise ModelFileError(str(e)) from None
    tokenizer = _folder_tokenizer(path, body, config)
    return Model(params=params, config=config, tokenizer=tokenizer, source=path)


def load_folder_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer of a model folder of any layout, read as `load_folder` reads it but without the
    weights (config.json is read and checked against it); or of a tokenizer folder of ours
    (tokenizer.tiktoken + tokenizer_config.json and no config.json).

    Raises:
      ModelNotFoundError: `path` is not a folder.
      ModelFileError: a file is missing, corrupted or does not match the others (names the file).
    """
    if path.is_dir() and not (path / CONFIG_FILE).is_file() and (path / RANKS_FILE).is_file():
        return _tokenizer(lambda: Tokenizer.load(path), path)
    body = _config_body(path)
    return _folder_tokenizer(path, body, _config(body, path / CONFIG_FILE))


def load_folder_config(path: Path) -> GPTConfig:
    """The `GPTConfig` of a model folder of any layout, read from its config.json alone (no weights,
    no tokenizer), as `load_folder` converts it.

    Raises:
      ModelNotFoundError: `path` is not a folder.
      ModelFileError: config.json is missing, corrupted or not a model's config (names the file).
    """
    return _config(_config_body(path), path / CONFIG_FILE)


def _config(body: dict[str, Any], config_path: Path) -> GPTConfig:
    """`body` (config.json, parsed) as a `GPTConfig`, whatever the layout."""
    if gpt2.is_gpt2_config(body):
        return gpt2.gpt2_config(body, config_path)
    if llama.is_llama_config(body):
        return llama.llama_config(body, config_path)
    try:
        return GPTConfig.upgrade(body)
    except (ConfigError, TypeError) as e:
        raise ModelFileError(f"{config_path}: {e}") from None


def _config_body(path: Path) -> dict[str, Any]:
    """config.json of the folder `path`, parsed; refuses a `model_type` other than ours, gpt2, llama."""
    if not path.is_dir():
        raise ModelNotFoundError(
            f"{path}: not a folder; a model folder holds {CONFIG_FILE} and {WEIGHTS_FILE}"
        )
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise ModelFileError(
            f"{config_path}: file not found; a model folder holds {CONFIG_FILE}, {WEIGHTS_FILE} and "
            "tokenizer files"
        )
    body = read_json_object(config_path, error=ModelFileError)
    if "model_type" in body and not (gpt2.is_gpt2_config(body) or llama.is_llama_config(body)):
        raise ModelFileError(
            f"{config_path}: model_type {json.dumps(body['model_type'])} is not supported; microgpt-infer "
            "reads microGPT folders (no model_type) and Hugging Face folders of model_type 'gpt2' or 'llama'"
        )
    return body


def _folder_tokenizer(path: Path, body: dict[str, Any], config: GPTConfig) -> Tokenizer:
    """The tokenizer files of a model folder whose config.json is `body`, checked against `config`."""
    if gpt2.is_gpt2_config(body) or llama.is_llama_config(body):
        tokenizer = _hf_tokenizer(path, body, gpt2_files=gpt2.is_gpt2_config(body))
    else:
        tokenizer = _tokenizer(lambda: Tokenizer.load(path), path)
    if tokenizer.vocab_size > config.vocab_size:
        raise ModelFileError(
            f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but {path / CONFIG_FILE} has "
            f"vocab_size {config.vocab_size}; the tokenizer files do not belong to this model"
        )
    return tokenizer


def _tokenizer(read: Callable[[], Tokenizer], path: Path) -> Tokenizer:
    try:
        return read()
    except TokenizerFileError as e:
        message = str(e)
        raise ModelFileError(message if str(path) in message else f"{path}: {message}") from None


def _hf_tokenizer(path: Path, body: dict[str, Any], *, gpt2_files: bool) -> Tokenizer:
    """The tokenizer of a Hugging Face folder: tokenizer.json, else (GPT-2) vocab.json + merges.txt,
    with the end-of-text token config.json names (see the module docstring)."""
    eos_id = body.get("eos_token_id")
    eos_id = eos_id[0] if isinstance(eos_id, list) else eos_id  # checked: an id, a non-empty list, null
    _check_tokenizer_config(path)
    file = path / TOKENIZER_JSON_FILE
    if file.is_file() or not gpt2_files:
        spelling = _added_token(file, eos_id) if eos_id is not None else _tokenizer_config_eos(path)
        tokenizer = _tokenizer(lambda: read_tokenizer_json(file, eot_token=spelling), path)
    else:
        vocab, merges = path / GPT2_VOCAB_FILE, path / GPT2_MERGES_FILE
        spelling = _tokenizer_config_eos(path) or ENDOFTEXT
        tokenizer = _tokenizer(lambda: Tokenizer.from_gpt2_files(vocab, merges, eot_token=spelling), path)
    if eos_id is None or eos_id == tokenizer.eot_id:
        return tokenizer
    by_id = {i: token for token, i in tokenizer.special_tokens.items()}
    if eos_id not in by_id:
        raise ModelFileError(
            f"{path / CONFIG_FILE}: eos_token_id {eos_id} is not a special token of the tokenizer "
            f"({_tokenizer_files(path)} has {_some(tokenizer.special_tokens)}); the tokenizer files do not "
            "belong to this model"
        )
    t = tokenizer  # vocab.json + merges.txt whose end of text is not <|endoftext|>
    return _tokenizer(
        lambda: Tokenizer(t.ranks, t.special_tokens, pattern=t.pattern, name=t.name, eot_token=by_id[eos_id]),
        path,
    )


def _added_token(file: Path, token_id: int) -> str | None:
    """The spelling of `token_id` among tokenizer.json's added tokens, or None (the reader then
    picks its default, and `_hf_tokenizer` says the id is not special)."""
    if not file.is_file():
        return None  # the reader names the missing file
    body = read_json_object(file, error=ModelFileError, holds="a JSON object (a tokenizer)")
    added = body.get("added_tokens")
    for entry in added if isinstance(added, list) else []:
        if isinstance(entry, dict) and entry.get("id") == token_id and isinstance(entry.get("content"), str):
            return entry["content"]
    return None


def _check_tokenizer_config(path: Path) -> None:
    """Refuses a transformers tokenizer_config.json whose settings would split text other than the
    tokenizer files do: `add_prefix_space: true` (a space put before the text). Its other keys
    (special tokens, chat template, lengths, classes) change no id of `encode` and are not read."""
    file = path / TOKENIZER_CONFIG_FILE
    if file.is_file() and read_json_object(file, error=ModelFileError).get("add_prefix_space") is True:
        raise UnsupportedModelError(
            f"{file}: add_prefix_space=true (a space added before the text) is not supported; microGPT "
            "encodes the text as it is (add_prefix_space=false)"
        )


def _tokenizer_config_eos(path: Path) -> str | None:
    """tokenizer_config.json's `eos_token` (a string, or an AddedToken's `content`), if it has one."""
    file = path / TOKENIZER_CONFIG_FILE
    if not file.is_file():
        return None
    body = read_json_object(file, error=ModelFileError)
    eos = body.get("eos_token")
    if isinstance(eos, dict):  # {"__type": "AddedToken", "content": "</s>", ...} in older files
        eos = eos.get("content")
    if eos is not None and (not isinstance(eos, str) or not eos):
        raise ModelFileError(f"{file}: field 'eos_token' must be a non-empty string, got {json.dumps(eos)}")
    return eos


def _tokenizer_files(path: Path) -> str:
    if (path / TOKENIZER_JSON_FILE).is_file():
        return str(path / TOKENIZER_JSON_FILE)
    return f"{path / GPT2_VOCAB_FILE} + {GPT2_MERGES_FILE}"


def _some(special: dict[str, int], shown: int = 5) -> str:
    items = [f"{token!r} ({i})" for token, i in sorted(special.items(), key=lambda item: item[1])]
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")
