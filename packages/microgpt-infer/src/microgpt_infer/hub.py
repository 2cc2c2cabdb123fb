"""The Hugging Face Hub: download a model repository into the HF cache, and upload a model folder.

`download` is `huggingface_hub.snapshot_download` restricted to the files a model folder holds
(`MODEL_FILES`), with a progress bar per file. The environment is read at call time, not when
`huggingface_hub` was imported: `HF_ENDPOINT`, `HF_HUB_CACHE` (or `HF_HOME`/hub), `HF_TOKEN` and
`HF_HUB_OFFLINE` (cache only: nothing is requested). Every failure becomes a `HubError` that names the
repository and says what to do.

`push_to_hub` creates the repository if needed and uploads one commit holding the weights, the
config, the tokenizer files and a model card (`README.md`, written if the folder has none), for a
folder of any layout `folder.load_folder` reads: ours, or Hugging Face's GPT-2 or Llama layout (what
`export_hf` writes), whose card also shows how to load it with `transformers` (`hf_layout_card`).

Time bound. huggingface_hub 2.4's shared HTTP client has no timeout, and some of its calls pass
``timeout=None`` explicitly (the repository lookup that starts a download, every upload call), so a
Hub that accepts the connection and never answers would hang them forever. Unless you installed a
client factory of your own (`huggingface_hub.set_client_factory`, whose client is then left as it
is), this module installs one: the library's default client plus a request hook that caps every
request's connect, read, write and pool timeouts at `MICROGPT_HUB_TIMEOUT` seconds (default 10; read
at each request). So:

- an unreachable Hub (connection refused, no route) fails at once, a silent one after one timeout
  (the first request, which the library does not retry), both with a `HubError` naming the endpoint;
- a Hub that answers the first requests and then stops mid-download: huggingface_hub retries each
  file request that times out or fails 5 times, sleeping 1, 2, 4, 8 and 8 s between tries, so it
  fails after at most 6 timeouts + 23 s per file (83 s with the default; files download 4 at a time);
- uploads are not retried: each of their requests fails after one timeout.

Network errors and the Hub's HTTP errors never leave this module as a library traceback: every one
becomes a `HubError` naming the repository and the endpoint (`HF_ENDPOINT`, else
https://huggingface.co).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from microgpt_core import GPTConfig, card
from microgpt_core.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from microgpt_core.jsonfile import read_json_object
from microgpt_core.params import count_params
from microgpt_data import tokenizer_files, tokenizer_json
from microgpt_data.errors import DataSourceError
from microgpt_data.hub import HUB_TIMEOUT_VAR, hub_endpoint, hub_timeout_seconds
from microgpt_infer import gpt2, llama
from microgpt_infer.errors import HubError, ModelFileError
from microgpt_infer.folder import load_folder

__all__ = [
    "MODEL_FILES",
    "download",
    "endpoint",
    "hf_layout_card",
    "push_to_hub",
    "model_card",
]

TIMEOUT_ENV = HUB_TIMEOUT_VAR  # seconds a request may wait to connect, or for the next bytes

# Everything a model folder of any layout may hold (folder.py): nothing else is fetched or pushed.
MODEL_FILES = (
    CONFIG_FILE,
    WEIGHTS_FILE,
    tokenizer_files.RANKS_FILE,
    tokenizer_files.CONFIG_FILE,  # ours, or transformers' tokenizer_config.json in its layouts
    tokenizer_files.GPT2_VOCAB_FILE,
    tokenizer_files.GPT2_MERGES_FILE,
    tokenizer_json.TOKENIZER_JSON_FILE,
    card.CARD_FILE,
    card.SUMMARY_FILE,
)


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _cache_dir() -> str | None:
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return None


def endpoint() -> str:
    """The Hub the requests go to: `$HF_ENDPOINT`, else https://huggingface.co."""
    return hub_endpoint()


def _timeout() -> float:
    """`$MICROGPT_HUB_TIMEOUT`, else the default that dataset streaming uses too (data's `hub.py`)."""
    try:
        return hub_timeout_seconds(None)
    except DataSourceError as e:
        raise HubError(str(e)) from None


def _cap_timeouts(request) -> None:
    """httpx request hook: no connect, read, write or pool wait longer than `_timeout()` seconds."""
    limit = _timeout()
    timeouts = request.extensions.get("timeout") or {}
    request.extensions["timeout"] = {
        kind: limit if timeouts.get(kind) is None else min(timeouts[kind], limit)
        for kind in ("connect", "read", "write", "pool")
    }


def _bounded_client_factory():
    """huggingface_hub's default HTTP client, with `_cap_timeouts` among its request hooks."""
    from huggingface_hub.utils import _http

    client = _http.default_client_factory()
    hooks = client.event_hooks
    client.event_hooks = {**hooks, "request": [*hooks.get("request", []), _cap_timeouts]}
    return client


def _bound_requests() -> None:
    """Installs `_bounded_client_factory` unless the user installed a client factory of their own."""
    from huggingface_hub.utils import _http

    _timeout()  # a bad $MICROGPT_HUB_TIMEOUT is refused before any request
    current = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None)
    if current is _http.default_client_factory:  # not ours yet, and not the user's
        _http.set_client_factory(_bounded_client_factory)


def _network_error(e: BaseException | None) -> bool:
    """Whether `e` is a transport failure (refused, reset, timed out, DNS, proxy, TLS) of any client."""
    names = {"TransportError", "TimeoutException", "NetworkError", "ConnectionError", "Timeout"}
    return e is not None and (
        isinstance(e, ConnectionError | TimeoutError)
        or any(c.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "requests", "urllib3")
               and c.__name__ in names for c in type(e).__mro__)
    )  # fmt: skip


def _unreachable(e: BaseException) -> str:
    return (
        f"cannot reach the Hugging Face Hub at {endpoint()} ({type(e).__name__}: {_first_line(e)}); check "
        f"the network and HF_ENDPOINT (each request waits at most ${TIMEOUT_ENV}={_timeout():g} s)"
    )


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
    where += f" on {endpoint()}"
    _bound_requests()
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            token=_token(token),
            endpoint=endpoint(),
            cache_dir=_cache_dir(),
            allow_patterns=list(MODEL_FILES),
            local_files_only=offline,
            max_workers=4,
            etag_timeout=_timeout(),
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
    except errors.LocalEntryNotFoundError as e:
        cached = f"{where} is not in the Hugging Face cache ({_cache_dir() or 'default location'})"
        cause = e.__cause__
        if offline:
            reason = "HF_HUB_OFFLINE is set; connect and unset HF_HUB_OFFLINE to download it once"
        elif _network_error(cause):
            reason = _unreachable(cause)
        elif isinstance(cause, errors.HfHubHTTPError):
            reason = f"the Hub answered {_first_line(cause)}{_status_hint(cause, 'read')}"
        else:
            reason = "the Hub could not be reached; try again"
        raise HubError(f"{cached} and {reason}") from None
    except errors.HfHubHTTPError as e:
        raise HubError(f"{where}: the Hub answered {_first_line(e)}{_status_hint(e, 'read')}") from None
    except Exception as e:
        if _network_error(e):  # after huggingface_hub's own retries
            raise HubError(f"{where}: download failed: {_unreachable(e)}") from None
        if isinstance(e, OSError):  # cut-off downloads, size mismatches, a full disk
            raise HubError(
                f"{where}: download failed ({type(e).__name__}: {_first_line(e)}); nothing partial was kept "
                "in the cache, try again"
            ) from None
        raise
    return Path(folder)


def _status_hint(e, access: str) -> str:
    """What to do about an HTTP error status from the Hub."""
    status = e.response.status_code if getattr(e, "response", None) is not None else None
    if status in (401, 403):
        return f"; set HF_TOKEN to a valid token with {access} access"
    if status == 404:
        return "; check the repo id (org/name) and HF_ENDPOINT"
    if status is not None and status >= 500:
        return "; the Hub failed: try again later"
    return ""


def _first_line(e: BaseException) -> str:
    return next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)


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
    """The card of a folder in Hugging Face's GPT-2 or Llama layout: `microgpt_core.card`'s, without
    its microgpt-core snippet (`load_pretrained` reads our layout only), and a `transformers` one."""
    text = card.model_card(
        config, location, name=name, n_params=n_params, summary=summary, on_hub=True, library="transformers"
    )
    prompt = ((summary or {}).get("run") or {}).get("sample_prompt", "Once upon a time")
    return text + _TRANSFORMERS_USE.format(location=json.dumps(location), prompt=json.dumps(prompt))


def model_card(model_dir: Path, repo_id: str) -> str:
    """The `README.md` to upload: the folder's own card if a person wrote or edited it, else the card
    of `microgpt_core.card` for the repo (with the training summary the folder holds, if any; with a
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
    """Uploads a model folder to the Hub as one commit; returns the commit's URL.

    The folder is loaded first (so a broken folder is never pushed). Uploaded: the weights, the
    config, the tokenizer files and `README.md` (a generated model card when the folder has none).

    Args:
      model_dir: a folder `load_model` can read (ours, or Hugging Face's GPT-2 or Llama layout).
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
    readme = model_card(model_dir, repo_id)  # also checks that the folder loads
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(model_dir / name))
        for name in MODEL_FILES
        if name != card.CARD_FILE and (model_dir / name).is_file()
    ]
    operations.append(CommitOperationAdd(path_in_repo=card.CARD_FILE, path_or_fileobj=readme.encode("utf-8")))
    api = HfApi(endpoint=endpoint(), token=_token(token))
    what = f"upload of {model_dir} to Hub repo {repo_id!r} failed"
    _bound_requests()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.create_commit(repo_id, operations, commit_message=commit_message, revision=revision)
    except errors.HfHubHTTPError as e:
        hint = _status_hint(e, "write")
        raise HubError(f"{what}: the Hub at {endpoint()} answered {_first_line(e)}{hint}") from None
    except Exception as e:
        if _network_error(e):
            raise HubError(f"{what}: {_unreachable(e)}") from None
        if isinstance(e, OSError):
            raise HubError(f"{what}: {type(e).__name__}: {_first_line(e)}") from None
        raise
    return str(info.commit_url)
