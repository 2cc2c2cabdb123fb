"""`Model` (params, config, tokenizer) and `load_model`: from a folder, a Hub repository or GPT-2.

A model folder is one of:

    ours     config.json (GPTConfig + format_version), model.safetensors,
             tokenizer.tiktoken + tokenizer_config.json   (what microgpt-train exports to runs/*/model)
    GPT-2    config.json with "model_type": "gpt2", model.safetensors, vocab.json + merges.txt
             (Hugging Face's layout, converted by `gpt2.py`)

`load_model(source)` takes such a folder, a training run folder (``runs/<name>``: its ``model/``, or
for a run that has not finished its newest checkpoint's model, with a warning naming the step; see
`microgpt_core.folders`), or a Hub repository id (`org/name`), which is fetched into the Hugging
Face cache by `hub.download` first. Every error names the file at fault.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from microgpt_core import CheckpointError, GPTConfig, load_pretrained
from microgpt_core.checkpoint import parse_json
from microgpt_core.folders import ModelFolderError, find_model_folder, is_run_folder
from microgpt_core.params import Params
from microgpt_data.errors import TokenizerFileError
from microgpt_data.tokenizer import Tokenizer
from microgpt_infer import gpt2
from microgpt_infer.compile_cache import enable_compilation_cache
from microgpt_infer.errors import ModelFileError, ModelNotFoundError

__all__ = ["Model", "load_model", "is_model_dir", "find_default_model", "MODEL_ENV", "HOW_TO_GET_A_MODEL"]

MODEL_ENV = "MICROGPT_MODEL"
CONFIG_FILE = "config.json"
HOW_TO_GET_A_MODEL = (
    "train one with `uv run train` (it exports runs/<name>/model), or pass model= a model folder or a "
    f"Hugging Face Hub repo id (org/name), or set ${MODEL_ENV} to one"
)
# A Hub repository id: "name" or "org/name" (letters, digits, "-", "_", "."), as huggingface_hub checks.
_REPO_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]+$")
_log = logging.getLogger("microgpt_infer")


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


def load_model(
    source: str | os.PathLike[str], revision: str | None = None, *, token: str | bool | None = None
) -> Model:
    """Loads a model from a local folder or a Hugging Face Hub repository.

    Args:
      source: a folder (ours or GPT-2 in Hugging Face's layout), a training run folder (its `model/`,
        else its newest checkpoint, with a logged warning naming the step), or a Hub repo id
        `org/name` (a str). An existing path always wins over a repo id of the same spelling; a
        `Path` is never a repo id.
      revision: Hub branch, tag or commit (Hub ids only; default "main").
      token: Hub token (default: `$HF_TOKEN` or the saved login); False sends none.
    Returns:
      A `Model`.
    Raises:
      ModelNotFoundError: `source` is neither an existing folder nor a repo id.
      ModelFileError: a file is missing, corrupted or does not match the others (names the file).
      HubError: the Hub refused or failed the download (names the repository and what to do).
    """
    enable_compilation_cache()  # before anything compiles (see compile_cache.py)
    path = Path(os.fspath(source)).expanduser()
    if path.exists():
        if revision is not None:
            raise ModelNotFoundError(
                f"revision={revision!r} applies to Hub repo ids, not to the folder {path}"
            )
        return load_folder(model_folder(path))
    text = os.fspath(source)
    looks_like_path = not isinstance(source, str) or text.startswith((".", "/", "~")) or text.count("/") > 1
    if looks_like_path or not _REPO_ID.match(text):
        raise ModelNotFoundError(
            f"{text}: no such folder, and not a Hugging Face Hub repo id (org/name); {HOW_TO_GET_A_MODEL}"
        )
    from microgpt_infer import hub  # huggingface_hub is imported only when a repo is asked for
    from microgpt_infer.errors import HubError

    try:
        folder = hub.download(text, revision=revision, token=token)
    except HubError as e:
        raise HubError(f"{e} (and there is no local folder {path.absolute()})") from None
    return load_folder(folder)


def model_folder(path: Path) -> Path:
    """The model folder that `path` names: itself, or a run folder's model (see the module docstring)."""
    try:
        folder, note = find_model_folder(path)
    except ModelFolderError as e:
        if not path.is_dir() or not is_run_folder(path):
            return path  # load_folder says what is wrong with it
        raise ModelFileError(str(e)) from None
    if note:
        _log.warning(note)
    return folder


def load_folder(path: Path) -> Model:
    """Reads a model folder of either layout (see the module docstring)."""
    if not path.is_dir():
        raise ModelNotFoundError(
            f"{path}: not a folder; a model folder holds {CONFIG_FILE} and model.safetensors"
        )
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise ModelFileError(
            f"{config_path}: file not found; a model folder holds {CONFIG_FILE}, model.safetensors and "
            "tokenizer files"
        )
    body = _read_json(config_path)
    if gpt2.is_gpt2_config(body):
        config = gpt2.gpt2_config(body, config_path)
        params = gpt2.load_gpt2_params(path / "model.safetensors", config)
        tokenizer = _tokenizer(
            lambda: Tokenizer.from_gpt2_files(path / "vocab.json", path / "merges.txt"), path
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


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; `ModelFileError` naming the file for anything else (core's
    `parse_json`: bad UTF-8, bad JSON, a key twice, too deep, an integer too long)."""
    try:
        body = parse_json(path.read_bytes(), str(path))
    except CheckpointError as e:
        raise ModelFileError(str(e)) from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot be read: {e.strerror}") from None
    if not isinstance(body, dict):
        raise ModelFileError(f"{path}: must hold a JSON object, got a JSON {type(body).__name__}")
    return body


def find_default_model(runs_dir: str | os.PathLike[str] = "runs") -> str:
    """The model `generate_text` uses when none is given: `$MICROGPT_MODEL`, else the newest
    `runs/*/model` folder (by the modification time of its config.json).

    Raises:
      ModelNotFoundError: neither exists; the message says how to get a model.
    """
    env = os.environ.get(MODEL_ENV, "").strip()
    if env:
        return env
    candidates = [p for p in Path(runs_dir).glob("*/model") if is_model_dir(p)]
    if candidates:
        return str(max(candidates, key=lambda p: (p / CONFIG_FILE).stat().st_mtime_ns))
    raise ModelNotFoundError(
        f"no model given, ${MODEL_ENV} is not set and there is no {Path(runs_dir) / '*' / 'model'} "
        f"folder under {Path.cwd()}; {HOW_TO_GET_A_MODEL}"
    )
