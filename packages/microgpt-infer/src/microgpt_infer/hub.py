"""Uploading to the Hugging Face Hub: `push_to_hub` and the model card it writes.

`push_to_hub` takes any model name `model.resolve_model` takes ("default", a model folder, a run
folder, a Hub id), creates the repository if needed and uploads one commit holding the weights, the
config, the tokenizer files and a model card (`README.md`, written if the folder has none), for a
folder of any layout `folder.load_folder` reads: ours, or Hugging Face's GPT-2 or Llama layout (what
`export_hf` writes), whose card also shows how to load it with `transformers` (`hf_layout_card`).

Requests go through `hub_client`'s bounded client (every request capped at `MICROGPT_HUB_TIMEOUT`
seconds, uploads not retried), whose `download`, `endpoint` and `MODEL_FILES` are also reached here.
Network errors and the Hub's HTTP errors become a `HubError` naming the repository and the endpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from microgpt_core import GPTConfig
from microgpt_core.checkpoint import CONFIG_FILE
from microgpt_core.jsonfile import read_json_object
from microgpt_core.params import count_params
from microgpt_infer import card, gpt2, llama
from microgpt_infer.errors import HubError, ModelFileError
from microgpt_infer.folder import load_folder
from microgpt_infer.hub_client import (
    MODEL_FILES,
    bound_requests,
    download,
    endpoint,
    first_line,
    hub_token,
    network_error,
    status_hint,
    unreachable,
)
from microgpt_infer.model import resolve_model

__all__ = [
    "MODEL_FILES",
    "download",
    "endpoint",
    "hf_layout_card",
    "push_to_hub",
    "model_card",
]


_TRANSFORMERS_USE = """
## Use with transformers

It is stored in Hugging Face's own layout, so `transformers` reads it too:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained({location})
model = AutoModelForCausalLM.from_pretrained({location})
ids = tokenizer({prompt}, return_tensors="pt").input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=50, do_sample=True)[0]))
```
"""


def hf_layout_card(
    config: GPTConfig, location: str, *, name: str, n_params: int, summary: dict[str, Any] | None = None
) -> str:
    """The card of a folder in Hugging Face's GPT-2 or Llama layout: `microgpt_infer.card`'s, without
    its microgpt-core snippet (`load_pretrained` reads our layout only), and a `transformers` one."""
    text = card.model_card(
        config, location, name=name, n_params=n_params, summary=summary, on_hub=True, library="transformers"
    )
    prompt = ((summary or {}).get("run") or {}).get("sample_prompt", "Once upon a time")
    return text + _TRANSFORMERS_USE.format(location=json.dumps(location), prompt=json.dumps(prompt))


def model_card(model_dir: Path, repo_id: str) -> str:
    """The `README.md` to upload: the folder's own card if a person wrote or edited it, else the card
    of `microgpt_infer.card` for the repo (with the training summary the folder holds, if any; with a
    `transformers` snippet for a folder in Hugging Face's layout)."""
    model = load_folder(model_dir)  # also checks that the folder loads
    readme = model_dir / card.CARD_FILE
    if readme.is_file():
        text = readme.read_text(encoding="utf-8", errors="replace")
        if not card.is_generated(text):
            return text
    summary, path = None, model_dir / card.SUMMARY_FILE
    if path.is_file():
        summary = read_json_object(path, error=ModelFileError, holds="a JSON object (a training summary)")
    n_params = count_params(model.params)
    body = read_json_object(model_dir / CONFIG_FILE, error=ModelFileError)
    if gpt2.is_gpt2_config(body) or llama.is_llama_config(body):
        return hf_layout_card(model.config, repo_id, name=repo_id, n_params=n_params, summary=summary)
    return card.model_card(
        model.config, repo_id, name=repo_id, n_params=n_params, summary=summary, on_hub=True
    )


def push_to_hub(
    model_dir: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload microGPT model",
) -> str:
    """Uploads a model to the Hub as one commit; returns the commit's URL.

    The model's folder is loaded first (so a broken folder is never pushed). Uploaded: the weights,
    the config, the tokenizer files and `README.md` (a generated model card when the folder has none).

    Args:
      model_dir: any model `load_model` takes: "default", a model folder (ours, or Hugging Face's
        GPT-2 or Llama layout), a run folder (its model/, or its newest checkpoint's), a Hub id.
      repo_id: `org/name` (created if missing, `private` as given; an existing repo is reused).
      private: create the repository private.
      token: Hub token with write access (default `$HF_TOKEN` or the saved login).
      revision: branch to commit to (default "main").
      commit_message: the commit's summary.
    Raises:
      ModelNotFoundError: `model_dir` names no model (`model.resolve_model`).
      ModelFileError: the folder is not a loadable model (names the file).
      HubError: the Hub refused or failed the upload.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, errors

    model_dir = resolve_model(model_dir, token=token)
    if not model_dir.is_dir():
        raise ModelFileError(f"{model_dir}: not a folder; push-to-hub uploads a model folder")
    readme = model_card(model_dir, repo_id)  # also checks that the folder loads
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(model_dir / name))
        for name in MODEL_FILES
        if name != card.CARD_FILE and (model_dir / name).is_file()
    ]
    operations.append(CommitOperationAdd(path_in_repo=card.CARD_FILE, path_or_fileobj=readme.encode("utf-8")))
    api = HfApi(endpoint=endpoint(), token=hub_token(token))
    what = f"upload of {model_dir} to Hub repo {repo_id!r} failed"
    bound_requests()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)
    except errors.HfHubHTTPError as e:
        hint = status_hint(e, "write")
        raise HubError(f"{what}: the Hub at {endpoint()} answered {first_line(e)}{hint}") from None
    except Exception as e:
        if network_error(e):
            raise HubError(f"{what}: {unreachable(e)}") from None
        if isinstance(e, OSError):
            raise HubError(f"{what}: {type(e).__name__}: {first_line(e)}") from None
        raise
    return str(info.commit_url)
