"""The Hugging Face Hub: download a model repository into the HF cache, and upload a model folder.

`download` is `huggingface_hub.snapshot_download` restricted to the files a model folder holds
(`MODEL_FILES`), with a progress bar per file. The environment is read at call time, not when
`huggingface_hub` was imported: `HF_ENDPOINT`, `HF_HUB_CACHE` (or `HF_HOME`/hub), `HF_TOKEN` and
`HF_HUB_OFFLINE` (cache only: nothing is requested). Every failure becomes a `HubError` that names the
repository and says what to do.

`push_to_hub` creates the repository if needed and uploads one commit holding the weights, the
config, the tokenizer files and a model card (`README.md`, written if the folder has none).
"""

from __future__ import annotations

import os
from pathlib import Path

from microgpt_infer.errors import HubError, ModelFileError

__all__ = ["MODEL_FILES", "download", "push_to_hub", "model_card"]

# Everything a model folder of either layout may hold (model.py): nothing else is fetched or pushed.
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.tiktoken",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "README.md",
)


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def _token(token: str | bool | None) -> str | bool | None:
    if token is None:
        return os.environ.get("HF_TOKEN") or None  # None: huggingface_hub's saved login, if any
    return token


def download(repo_id: str, *, revision: str | None = None, token: str | bool | None = None) -> Path:
    """Fetches a model repository's files into the Hugging Face cache; returns the snapshot folder.

    Files already in the cache at the resolved commit are not downloaded again. With
    `HF_HUB_OFFLINE=1` only the cache is read.

    Raises:
      HubError: the repository or revision does not exist or is private without a valid token, the
        download failed or was cut short, or (offline) the repository is not in the cache.
    """
    import huggingface_hub
    from huggingface_hub import errors

    offline = _truthy("HF_HUB_OFFLINE") or _truthy("TRANSFORMERS_OFFLINE")
    where = f"Hugging Face Hub repo {repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            token=_token(token),
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            cache_dir=_cache_dir(),
            allow_patterns=list(MODEL_FILES),
            local_files_only=offline,
            max_workers=4,
        )
    except errors.GatedRepoError:
        raise HubError(
            f"{where} is gated: accept its terms on the Hub, then set HF_TOKEN to a token of that account"
        ) from None
    except errors.RepositoryNotFoundError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401:
            hint = "the Hub refused the token (401): set HF_TOKEN to a valid token with read access"
            if not _token(token):
                hint = "it is private or does not exist (401 without a token): set HF_TOKEN to a token "
                hint += "with access"
        else:
            hint = "check the spelling (org/name); a private repo needs HF_TOKEN"
        raise HubError(f"{where} not found: {hint}") from None
    except errors.RevisionNotFoundError:
        raise HubError(f"{where}: no such branch, tag or commit; leave revision unset for 'main'") from None
    except errors.LocalEntryNotFoundError:
        reason = "HF_HUB_OFFLINE is set" if offline else "the Hub could not be reached"
        raise HubError(
            f"{where} is not in the Hugging Face cache ({_cache_dir() or 'default location'}) and "
            f"{reason}; connect and unset HF_HUB_OFFLINE to download it once"
        ) from None
    except errors.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        hint = "; set HF_TOKEN to a valid token with read access" if status in (401, 403) else ""
        raise HubError(f"{where}: the Hub answered {_first_line(e)}{hint}") from None
    except (OSError, ConnectionError) as e:  # network errors, cut-off downloads, size mismatches
        raise HubError(
            f"{where}: download failed ({type(e).__name__}: {e}); nothing partial was kept in the cache, "
            "try again"
        ) from None
    except Exception as e:  # httpx's transport errors are not OSErrors
        if type(e).__module__.startswith(("httpx", "httpcore")):
            raise HubError(f"{where}: download failed ({type(e).__name__}: {e}); try again") from None
        raise
    return Path(folder)


def _first_line(e: BaseException) -> str:
    return next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)


def model_card(model_dir: Path, repo_id: str) -> str:
    """A `README.md` for the Hub: metadata, the configuration and how to load the model."""
    from microgpt_infer.model import load_folder  # local import: model imports nothing of hub

    model = load_folder(model_dir)
    c = model.config
    rows = "\n".join(f"| `{k}` | `{v}` |" for k, v in c.to_dict().items())
    return f"""---
library_name: microgpt
pipeline_tag: text-generation
tags:
- microgpt
- jax
- text-generation
---

# {repo_id}

A microGPT language model ({c.n_layers} layers, d_model {c.d_model}, {c.n_heads} heads,
context {c.context_length}, vocabulary {c.vocab_size}), stored as `config.json` + `model.safetensors`
with its tokenizer files.

```python
import jax
from microgpt_infer import generate, load_model

model = load_model("{repo_id}")
print(generate(model, "Once upon a time", rng=jax.random.key(0), max_new_tokens=50))
```

Or from a shell: `pip install microgpt-infer` then `generate --model {repo_id} "Once upon a time"`.

| field | value |
| --- | --- |
{rows}
"""


def push_to_hub(
    model_dir: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload microGPT model",
) -> str:
    """Uploads a model folder to the Hub as one commit; returns the commit's URL.

    The folder is loaded first (so a broken folder is never pushed). Uploaded: the weights, the
    config, the tokenizer files and `README.md` (a generated model card when the folder has none).

    Args:
      model_dir: a folder `load_model` can read (ours or GPT-2 layout).
      repo_id: `org/name` (created if missing, `private` as given; an existing repo is reused).
      private: create the repository private.
      token: Hub token with write access (default `$HF_TOKEN` or the saved login).
      revision: branch to commit to (default "main").
      commit_message: the commit's summary.
    Raises:
      ModelFileError: the folder is not a loadable model (names the file).
      HubError: the Hub refused or failed the upload.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, errors

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFileError(f"{model_dir}: not a folder; push-to-hub uploads a model folder")
    card = model_card(model_dir, repo_id)  # also checks that the folder loads
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(model_dir / name))
        for name in MODEL_FILES
        if name != "README.md" and (model_dir / name).is_file()
    ]
    readme = model_dir / "README.md"
    operations.append(
        CommitOperationAdd(
            path_in_repo="README.md",
            path_or_fileobj=str(readme) if readme.is_file() else card.encode("utf-8"),
        )
    )
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=_token(token))
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)
    except errors.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        hint = " (set HF_TOKEN to a token with write access)" if status in (401, 403) else ""
        raise HubError(
            f"upload of {model_dir} to Hub repo {repo_id!r} failed: {_first_line(e)}{hint}"
        ) from None
    except (OSError, ConnectionError) as e:
        raise HubError(
            f"upload of {model_dir} to Hub repo {repo_id!r} failed: {type(e).__name__}: {e}"
        ) from None
    return str(info.commit_url)
