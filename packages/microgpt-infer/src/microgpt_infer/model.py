"""Model names: `resolve_model` turns any of them into a local model folder, `load_model` reads it.

Every command and function that takes a model or a tokenizer (`load_model`, `load_tokenizer`,
`generate`, `export_hf`, `push_to_hub`, and train's `evaluate --model` and `train --tokenizer`) takes
the same names, resolved here in this order:

1. "default" (the str `DEFAULT_MODEL`): the model this package ships, in `DEFAULT_MODEL_DIR`, trained
   by `uv run train --preset default`. A folder named default is "./default" or a `Path`.
2. An existing path: a model folder of any layout (ours, or GPT-2 or Llama in Hugging Face's; read
   by `folder.load_folder`), or a training run folder (``runs/<name>``: its ``model/``, or for a run
   that has not finished its newest checkpoint's model, with a warning naming the step; see
   `microgpt_infer.run_layout`). An existing path always wins over a Hub id of the same spelling.
3. A name that looks like a path is a local path and never a Hub id: a `Path`, or a str that starts
   with ".", "/" or "~", holds a backslash or more than one "/", or whose first component is an
   existing folder (``runs/nope`` when ``runs/`` exists). It does not exist, so the error says so
   first, with what the nearest existing folder above it holds; nothing is asked of the Hub.
4. Anything else of the form `name` or `org/name` is a Hub repository id, fetched into the Hugging
   Face cache by `hub_client.download` (files only; `revision` applies to these alone).

Every error names the file at fault. When no model is named, `find_default_model` picks
`$MICROGPT_MODEL`, else the shipped model: a run folder is used only when named, never picked because
it is there.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from microgpt_data.tokenizer import Tokenizer
from microgpt_infer import hub_client
from microgpt_infer.compile_cache import enable_compilation_cache
from microgpt_infer.errors import HubError, ModelFileError, ModelNotFoundError
from microgpt_infer.folder import Model, load_folder, load_folder_tokenizer
from microgpt_infer.run_layout import ModelFolderError, find_model_folder, is_run_folder

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_DIR",
    "HOW_TO_GET_A_MODEL",
    "MODEL_ENV",
    "default_model_note",
    "find_default_model",
    "is_default",
    "load_model",
    "load_tokenizer",
    "looks_like_path",
    "resolve_model",
]

MODEL_ENV = "MICROGPT_MODEL"
DEFAULT_MODEL = "default"  # the name of the shipped model (a folder of that name: "./default")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
HOW_TO_GET_A_MODEL = (
    f'a model is "{DEFAULT_MODEL}" (the model microgpt-infer ships), a model folder (`uv run train` '
    "exports runs/<name>/model), a run folder (runs/<name>) or a Hugging Face Hub repo id (org/name); "
    f"generate also reads ${MODEL_ENV}"
)
# A Hub repository id: "name" or "org/name" (letters, digits, "-", "_", "."), as huggingface_hub checks.
_REPO_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]+$")
_SHOWN = 10  # folder names listed when a path does not exist
_log = logging.getLogger("microgpt_infer")


def resolve_model(
    source: str | os.PathLike[str], revision: str | None = None, *, token: str | bool | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:  # fmt: skip
    """The local model folder that a model name stands for (the rules are in the module docstring).

    Args:
      source: "default", a model folder, a run folder, or a Hub repo id (`org/name`, a str).
      revision: Hub branch, tag or commit (Hub ids only; default "main").
      token: Hub token (default: `$HF_TOKEN` or the saved login); False sends none.
      log: called with the note when a run folder's newest checkpoint stands in for its missing
        model (default: a warning on the "microgpt_infer" logger).
    Returns:
      The folder: `DEFAULT_MODEL_DIR`, the folder named (or its run's model folder), or the Hub
      snapshot in the Hugging Face cache. Reading it (`load_folder`) says what is wrong with it.
    Raises:
      ModelNotFoundError: `source` is neither an existing folder nor a repo id, or a path that does
        not exist (no Hub request is made for it), or `revision` is given for a local folder.
      ModelFileError: a run folder holds no model yet.
      HubError: the Hub refused or failed the download (names the repository and what to do).
    """
    if is_default(source):
        if revision is not None:
            raise ModelNotFoundError(
                f'revision={revision!r} applies to Hub repo ids, not to "{DEFAULT_MODEL}"'
            )
        return DEFAULT_MODEL_DIR
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.exists():
        if revision is not None:
            raise ModelNotFoundError(
                f"revision={revision!r} applies to Hub repo ids, not to the folder {path}"
            )
        return _model_folder(path, log)
    if looks_like_path(source):
        raise ModelNotFoundError(f"{text}: no such folder{_nearest_listing(path)}; {HOW_TO_GET_A_MODEL}")
    if not _REPO_ID.match(text):
        raise ModelNotFoundError(
            f"{text}: no such folder, and not a Hugging Face Hub repo id (org/name); {HOW_TO_GET_A_MODEL}"
        )
    try:  # download imports huggingface_hub: only when a repo is asked for
        return hub_client.download(text, revision=revision, token=token)
    except HubError as e:
        raise HubError(f"{e} (and there is no local folder {path.absolute()})") from None


def load_model(
    source: str | os.PathLike[str], revision: str | None = None, *, token: str | bool | None = None
) -> Model:
    """Loads a model from a local folder or a Hugging Face Hub repository.

    Args:
      source: "default" (the str `DEFAULT_MODEL`: the model this package ships; a folder named
        default is "./default" or a `Path`), a folder (ours, or GPT-2 or Llama in Hugging Face's
        layout: `config.json` with `model_type` "gpt2" or "llama"), a training run folder (its `model/`,
        else its newest checkpoint, with a logged warning naming the step), or a Hub repo id
        `org/name` (a str). An existing path always wins over a repo id of the same spelling; a
        `Path`, or a str that looks like a path, is never a repo id (`resolve_model`).
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
    return load_folder(resolve_model(source, revision, token=token))


def load_tokenizer(
    source: str | os.PathLike[str], revision: str | None = None, *, token: str | bool | None = None,
    log: Callable[[str], None] | None = None,
) -> Tokenizer:  # fmt: skip
    """The tokenizer of any model `load_model` takes, read without the model's weights.

    Our tokenizer files, or a Hugging Face layout's tokenizer.json (or GPT-2's vocab.json +
    merges.txt), read as `load_folder` reads them; a tokenizer folder (tokenizer.tiktoken +
    tokenizer_config.json, no config.json: what `Tokenizer.save` and train-tokenizer write) is read
    too. A Hub repository's weights are downloaded with it (`hub_client.download` fetches a model's files).

    Args:
      source, revision, token, log: as for `resolve_model`.
    Returns:
      The `microgpt_data.Tokenizer`.
    Raises:
      ModelNotFoundError, ModelFileError, HubError: as for `load_model` (names the file at fault).
    """
    return load_folder_tokenizer(resolve_model(source, revision, token=token, log=log))


def looks_like_path(source: object) -> bool:
    """Whether a model name is a local path, never a Hub repo id (`resolve_model`'s rule 3): a `Path`,
    or a str that starts with ".", "/" or "~", holds a backslash or more than one "/", or whose first
    component is an existing folder."""
    if not isinstance(source, str):
        return True
    if source.startswith((".", "/", "~")) or "\\" in source or source.count("/") > 1:
        return True
    first, slash, _ = source.partition("/")
    return bool(slash) and Path(first).is_dir()


def _nearest_listing(path: Path) -> str:
    """The note `" (runs/ holds: a, b)"`: the folders in the nearest folder above `path`, or "" when
    that is the filesystem root or the working directory (too broad to help)."""
    for parent in path.parents:
        if parent == parent.parent:  # "/" or "."
            return ""
        if parent.is_dir():
            break
    else:
        return ""
    try:
        names = sorted(p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    except OSError:
        return ""
    if not names:
        return f" ({parent}/ holds no folders)"
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f" ({parent}/ holds: {', '.join(names[:_SHOWN])}{more})"


def _model_folder(path: Path, log: Callable[[str], None] | None) -> Path:
    """The model folder that an existing `path` names: itself, or a run folder's model."""
    try:
        folder, note = find_model_folder(path)
    except ModelFolderError as e:
        if not path.is_dir() or not is_run_folder(path):
            return path  # load_folder says what is wrong with it
        raise ModelFileError(str(e)) from None
    if note:
        (log or _log.warning)(note)
    return folder


def is_default(source: object) -> bool:
    """Whether `source` names the shipped model: the str "default" (a `Path` is always a folder)."""
    return isinstance(source, str) and source == DEFAULT_MODEL


def find_default_model() -> str:
    """The model `generate_text` and the `generate` CLI use when none is named: `$MICROGPT_MODEL`
    when set, else "default", the model this package ships. Nothing under runs/ is picked."""
    return os.environ.get(MODEL_ENV, "").strip() or DEFAULT_MODEL


def default_model_note(source: str) -> str:
    """One line for stderr saying which model `find_default_model` chose, and how to choose another."""
    if os.environ.get(MODEL_ENV, "").strip():
        return f"using ${MODEL_ENV}={source} (name another with --model)"
    return (
        f"using the model microgpt-infer ships ({DEFAULT_MODEL}: {DEFAULT_MODEL_DIR}), trained on "
        f"Python's documentation; name another with --model or ${MODEL_ENV}"
    )
