"""`load_model`: a `Model` from the shipped model, a folder, a training run folder or a Hub repository.

`load_model(source)` takes "default" (`DEFAULT_MODEL`: the model this package ships, in
`DEFAULT_MODEL_DIR`, trained by `uv run train --preset default`), a model folder of any layout
(ours, or GPT-2 or Llama in Hugging Face's; read by `folder.load_folder`), a training run folder
(``runs/<name>``: its ``model/``, or for a run that has not finished its newest checkpoint's model,
with a warning naming the step; see `microgpt_core.folders`), or a Hub repository id (`org/name`),
which is fetched into the Hugging Face cache by `hub.download` first. Every error names the file at
fault.

When no model is named, `find_default_model` picks `$MICROGPT_MODEL`, else the shipped model: a
run folder is used only when named, never picked because it is there.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from microgpt_core.folders import ModelFolderError, find_model_folder, is_run_folder
from microgpt_infer import hub
from microgpt_infer.compile_cache import enable_compilation_cache
from microgpt_infer.errors import HubError, ModelFileError, ModelNotFoundError
from microgpt_infer.folder import Model, load_folder

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODEL_DIR",
    "HOW_TO_GET_A_MODEL",
    "MODEL_ENV",
    "default_model_note",
    "find_default_model",
    "is_default",
    "load_model",
]

MODEL_ENV = "MICROGPT_MODEL"
DEFAULT_MODEL = "default"  # the name of the shipped model (a folder of that name: "./default")
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
HOW_TO_GET_A_MODEL = (
    f'pass model= "{DEFAULT_MODEL}" (the model microgpt-infer ships), a model folder (`uv run train` '
    f"exports runs/<name>/model) or a Hugging Face Hub repo id (org/name), or set ${MODEL_ENV} to one"
)
# A Hub repository id: "name" or "org/name" (letters, digits, "-", "_", "."), as huggingface_hub checks.
_REPO_ID = re.compile(r"^(?:[\w.-]+/)?[\w.-]+$")
_log = logging.getLogger("microgpt_infer")


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
    if is_default(source):
        if revision is not None:
            raise ModelNotFoundError(
                f'revision={revision!r} applies to Hub repo ids, not to "{DEFAULT_MODEL}"'
            )
        return load_folder(DEFAULT_MODEL_DIR)
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
    try:  # hub.download imports huggingface_hub: only when a repo is asked for
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
