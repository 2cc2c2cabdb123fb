"""`Model` (params, config, tokenizer) and `load_folder`: one model folder on disk, of either layout.

    ours     config.json (GPTConfig + format_version), model.safetensors,
             tokenizer.tiktoken + tokenizer_config.json   (what microgpt-train exports to runs/*/model)
    GPT-2    config.json with "model_type": "gpt2", model.safetensors, vocab.json + merges.txt
             (Hugging Face's layout, converted by `gpt2.py`)

Every error names the file at fault. `model.load_model` finds the folder (a run folder's model, or a
Hub repository's snapshot) and reads it here; `hub.push_to_hub` reads the folder it uploads here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from microgpt_core import CheckpointError, GPTConfig, load_pretrained
from microgpt_core.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from microgpt_core.jsonfile import read_json_object
from microgpt_core.params import Params
from microgpt_data.errors import TokenizerFileError
from microgpt_data.tokenizer import Tokenizer
from microgpt_data.tokenizer_files import GPT2_MERGES_FILE, GPT2_VOCAB_FILE
from microgpt_infer import gpt2
from microgpt_infer.errors import ModelFileError, ModelNotFoundError

__all__ = ["Model", "is_model_dir", "load_folder"]


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


def is_model_dir(path: Path) -> bool:
    """Whether `path` is a folder with a `config.json` (a model folder of either layout)."""
    return (path / CONFIG_FILE).is_file()


def load_folder(path: Path) -> Model:
    """Reads a model folder of either layout (see the module docstring).

    Raises:
      ModelNotFoundError: `path` is not a folder.
      ModelFileError: a file is missing, corrupted or does not match the others (names the file).
    """
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
    if gpt2.is_gpt2_config(body):
        config = gpt2.gpt2_config(body, config_path)
        params = gpt2.load_gpt2_params(path / WEIGHTS_FILE, config)
        tokenizer = _tokenizer(
            lambda: Tokenizer.from_gpt2_files(path / GPT2_VOCAB_FILE, path / GPT2_MERGES_FILE), path
        )
    elif "model_type" in body:
        raise ModelFileError(
            f"{config_path}: model_type {body['model_type']!r} is not supported; microgpt-infer reads "
            "microGPT folders (no model_type) and GPT-2 folders (model_type 'gpt2')"
        )
    else:
        try:
            params, config = load_pretrained(path)
        except CheckpointError as e:
            raise ModelFileError(str(e)) from None
        tokenizer = _tokenizer(lambda: Tokenizer.load(path), path)
    if tokenizer.vocab_size > config.vocab_size:
        raise ModelFileError(
            f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but {config_path} has vocab_size "
            f"{config.vocab_size}; the tokenizer files do not belong to this model"
        )
    return Model(params=params, config=config, tokenizer=tokenizer, source=path)


def _tokenizer(read, path: Path) -> Tokenizer:
    try:
        return read()
    except TokenizerFileError as e:
        message = str(e)
        raise ModelFileError(message if str(path) in message else f"{path}: {message}") from None
