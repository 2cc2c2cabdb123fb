"""The Hugging Face Hub client: the time bound on every request, and `download` of a model repository.

`download` is `huggingface_hub.snapshot_download` restricted to the files a model folder holds
(`MODEL_FILES`), with a progress bar per file. The environment is read at call time, not when
`huggingface_hub` was imported: `HF_ENDPOINT`, `HF_HUB_CACHE` (or `HF_HOME`/hub), `HF_TOKEN` and
`HF_HUB_OFFLINE` (cache only: nothing is requested). Every failure becomes a `HubError` that names the
repository and says what to do. Uploading is `hub.push_to_hub`'s, over the same client.

Time bound. huggingface_hub 2.4's shared HTTP client has no timeout, and some of its calls pass
``timeout=None`` explicitly (the repository lookup that starts a download, every upload call), so a
Hub that accepts the connection and never answers would hang them forever. Unless you installed a
client factory of your own (`huggingface_hub.set_client_factory`, whose client is then left as it
is), `bound_requests` installs one: the library's default client plus a request hook that caps every
request's connect, read, write and pool timeouts at `MICROGPT_HUB_TIMEOUT` seconds (default 10; read
at each request). So:

- an unreachable Hub (connection refused, no route) fails at once, a silent one after one timeout
  (the first request, which the library does not retry), both with a `HubError` naming the endpoint;
- a Hub that answers the first requests and then stops mid-download: huggingface_hub retries each
  file request that times out or fails 5 times, sleeping 1, 2, 4, 8 and 8 s between tries, so it
  fails after at most 6 timeouts + 23 s per file (83 s with the default; files download 4 at a time);
- uploads are not retried: each of their requests fails after one timeout.

Network errors and the Hub's HTTP errors never leave these modules as a library traceback: every one
becomes a `HubError` naming the repository and the endpoint (`HF_ENDPOINT`, else
https://huggingface.co).
"""

from __future__ import annotations

import os
from pathlib import Path

from microgpt_core.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from microgpt_data import tokenizer_files, tokenizer_json
from microgpt_data.errors import DataSourceError
from microgpt_data.hub import HUB_TIMEOUT_VAR, hub_endpoint, hub_timeout_seconds
from microgpt_infer import card
from microgpt_infer.errors import HubError

__all__ = [
    "MODEL_FILES",
    "TIMEOUT_ENV",
    "bound_requests",
    "download",
    "endpoint",
    "first_line",
    "hub_token",
    "network_error",
    "request_timeout",
    "status_hint",
    "unreachable",
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


def request_timeout() -> float:
    """`$MICROGPT_HUB_TIMEOUT`, else the default that dataset streaming uses too (data's `hub.py`)."""
    try:
        return hub_timeout_seconds(None)
    except DataSourceError as e:
        raise HubError(str(e)) from None


def _cap_timeouts(request) -> None:
    """httpx request hook: no connect, read, write or pool wait longer than `request_timeout()` seconds."""
    limit = request_timeout()
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


def bound_requests() -> None:
    """Installs `_bounded_client_factory` unless the user installed a client factory of their own."""
    from huggingface_hub.utils import _http

    request_timeout()  # a bad $MICROGPT_HUB_TIMEOUT is refused before any request
    current = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None)
    if current is _http.default_client_factory:  # not ours yet, and not the user's
        _http.set_client_factory(_bounded_client_factory)


def network_error(e: BaseException | None) -> bool:
    """Whether `e` is a transport failure (refused, reset, timed out, DNS, proxy, TLS) of any client."""
    names = {"TransportError", "TimeoutException", "NetworkError", "ConnectionError", "Timeout"}
    return e is not None and (
        isinstance(e, ConnectionError | TimeoutError)
        or any(c.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "requests", "urllib3")
               and c.__name__ in names for c in type(e).__mro__)
    )  # fmt: skip


def unreachable(e: BaseException) -> str:
    return (
        f"cannot reach the Hugging Face Hub at {endpoint()} ({type(e).__name__}: {first_line(e)}); check "
        f"the network and HF_ENDPOINT (each request waits at most ${TIMEOUT_ENV}={request_timeout():g} s)"
    )


def hub_token(token: str | bool | None) -> str | bool | None:
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
    bound_requests()
    try:
        folder = huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            token=hub_token(token),
            endpoint=endpoint(),
            cache_dir=_cache_dir(),
            allow_patterns=list(MODEL_FILES),
            local_files_only=offline,
            max_workers=4,
            etag_timeout=request_timeout(),
        )
    except errors.GatedRepoError:
        raise HubError(
            f"{where} is gated: accept its terms on the Hub, then set HF_TOKEN to a token of that account"
        ) from None
    except errors.RepositoryNotFoundError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401:
            hint = "the Hub refused the token (401): set HF_TOKEN to a valid token with read access"
            if not hub_token(token):
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
        elif network_error(cause):
            reason = unreachable(cause)
        elif isinstance(cause, errors.HfHubHTTPError):
            reason = f"the Hub answered {first_line(cause)}{status_hint(cause, 'read')}"
        else:
            reason = "the Hub could not be reached; try again"
        raise HubError(f"{cached} and {reason}") from None
    except errors.HfHubHTTPError as e:
        raise HubError(f"{where}: the Hub answered {first_line(e)}{status_hint(e, 'read')}") from None
    except Exception as e:
        if network_error(e):  # after huggingface_hub's own retries
            raise HubError(f"{where}: download failed: {unreachable(e)}") from None
        if isinstance(e, OSError):  # cut-off downloads, size mismatches, a full disk
            raise HubError(
                f"{where}: download failed ({type(e).__name__}: {first_line(e)}); nothing partial was kept "
                "in the cache, try again"
            ) from None
        raise
    return Path(folder)


def status_hint(e, access: str) -> str:
    """What to do about an HTTP error status from the Hub."""
    status = e.response.status_code if getattr(e, "response", None) is not None else None
    if status in (401, 403):
        return f"; set HF_TOKEN to a valid token with {access} access"
    if status == 404:
        return "; check the repo id (org/name) and HF_ENDPOINT"
    if status is not None and status >= 500:
        return "; the Hub failed: try again later"
    return ""


def first_line(e: BaseException) -> str:
    return next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
