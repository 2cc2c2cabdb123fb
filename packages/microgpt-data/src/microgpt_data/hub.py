"""A Hugging Face Hub dataset, opened for streaming within a bounded time, or one clear error.

``datasets.load_dataset("org/name", streaming=True)`` asks the Hub (``HF_ENDPOINT``, default
``https://huggingface.co``) for ``HEAD /datasets/org/name/resolve/main/README.md``, then
``GET /api/datasets/org/name`` and more. Left alone it retries a server error for about 25 s and
waits without end on a server that accepts the connection and never answers. So first:

1. Offline flags (``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``) fail at once.
2. A probe: the same ``GET /api/datasets/org/name`` that ``datasets`` makes, with a `timeout` (the
   whole request, DNS included, is bounded by a watchdog thread). No answer, a refused connection, a
   429 or a 5xx raise `HubUnavailableError`; 404 (no such dataset) and 401/403 (private or gated)
   raise `DataSourceError`. Each names the dataset and the endpoint.
3. ``datasets``' own opening and first read run in a watchdog thread bounded by
   ``HUB_OPEN_FACTOR * timeout`` seconds (120 s for the default 10 s), since a Hub that answers the
   probe may still stall on the data files; past it, `HubUnavailableError`.

`timeout` is `load_text_dataset`'s ``hub_timeout``, else the ``MICROGPT_HUB_TIMEOUT`` environment
variable (so every command takes it), else 10 s (models, in microgpt-infer, use the same).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from microgpt_core.config import is_real
from microgpt_data.errors import DataSourceError, HubUnavailableError

__all__ = [
    "HUB_OPEN_FACTOR",
    "HUB_TIMEOUT_VAR",
    "hub_endpoint",
    "hub_timeout_seconds",
    "open_hub_dataset",
    "probe_hub_dataset",
]

HUB_OPEN_FACTOR = 12
HUB_TIMEOUT_VAR = "MICROGPT_HUB_TIMEOUT"  # seconds for the probe when no hub_timeout is passed
DEFAULT_HUB_TIMEOUT = 10.0  # as huggingface_hub's own request timeouts; for models (infer) too
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_ADVICE = (
    "To train offline, download it elsewhere and pass a local path (.jsonl/.parquet/.txt or a folder), "
    "or use the built-in corpus: --data pydocs"
)


def hub_endpoint() -> str:
    """The Hub's base URL: ``HF_ENDPOINT``, else ``https://huggingface.co``."""
    return os.environ.get("HF_ENDPOINT", "").strip().rstrip("/") or "https://huggingface.co"


def hub_timeout_seconds(timeout: float | None) -> float:
    """`timeout`, else ``$MICROGPT_HUB_TIMEOUT``, else 10 s; `DataSourceError` unless positive."""
    where, value = "hub_timeout", timeout
    if timeout is None:
        where, value = f"${HUB_TIMEOUT_VAR}", os.environ.get(HUB_TIMEOUT_VAR, "").strip()
        if not value:
            return DEFAULT_HUB_TIMEOUT
        try:
            timeout = float(value)
        except ValueError:
            timeout = None
    if not is_real(timeout) or not 0 < timeout < float("inf"):
        raise DataSourceError(f"{where} must be a positive number of seconds, got {value!r}")
    return float(timeout)


def _token() -> str | None:
    token = os.environ.get("HF_TOKEN", "").strip()
    if token:
        return token
    try:
        from huggingface_hub import get_token  # a `datasets` dependency: the token saved by `hf auth login`
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return get_token()


def _watch(fn: Callable[[], Any], seconds: float) -> tuple[bool, Any, BaseException | None]:
    """Runs `fn` in a daemon thread for at most `seconds`: (finished, result, exception)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="microgpt-hub", daemon=True)
    thread.start()
    thread.join(seconds)
    finished = "result" in outcome or "error" in outcome
    return finished, outcome.get("result"), outcome.get("error")


def probe_hub_dataset(spec: str, *, timeout: float) -> None:
    """Raises unless the Hub answers ``GET /api/datasets/<name>`` with success within `timeout` s."""
    import urllib.error  # here: `import microgpt_data` stays light
    import urllib.request

    name = spec.partition(":")[0]
    endpoint = hub_endpoint()
    url = f"{endpoint}/api/datasets/{name}"
    request = urllib.request.Request(url, headers={"User-Agent": "microgpt-data"})
    if token := _token():
        request.add_header("Authorization", f"Bearer {token}")

    def ask() -> int:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    finished, status, error = _watch(ask, timeout + 0.5)  # the thread also bounds a DNS lookup
    where = f"Hub dataset {spec!r} ({url})"
    timed_out = isinstance(error, TimeoutError) or isinstance(getattr(error, "reason", None), TimeoutError)
    if not finished or timed_out:
        raise HubUnavailableError(f"{where}: the Hub gave no answer within {timeout:g} s. {_ADVICE}")
    if error is not None:
        reason = getattr(error, "reason", None) or error
        raise HubUnavailableError(f"{where}: the Hub cannot be reached ({reason}). {_ADVICE}")
    if status in (401, 403):
        raise DataSourceError(
            f"{where}: the Hub answered {status}: the dataset is private or gated, or does not exist; "
            "log in (HF_TOKEN, or `hf auth login`) with access to it, or check the id"
        )
    if status == 404:
        raise DataSourceError(f"{where}: the Hub answered 404: no such dataset; check the id")
    if status == 429 or status >= 500:
        raise HubUnavailableError(f"{where}: the Hub answered {status}; try again later. {_ADVICE}")
    if not 200 <= status < 300:
        raise DataSourceError(f"{where}: the Hub answered {status}")


def open_hub_dataset(
    spec: str,
    *,
    timeout: float,
    open_dataset: Callable[[], Any],
    not_found: type[BaseException] | tuple[type[BaseException], ...] = (),
) -> Any:
    """`open_dataset()` (the caller's ``datasets.load_dataset(..., streaming=True)``, so that only
    `microgpt_data.sources` imports ``datasets``) once its first example has been read, all within
    the bounds of the module docstring. `not_found`: the exception classes that mean "no such
    dataset" (``datasets.exceptions.DatasetNotFoundError``)."""
    offline = [
        var for var in _OFFLINE_VARS if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
    ]
    if offline:  # streaming reads remote files: offline there is nothing to try
        raise HubUnavailableError(
            f"{spec!r} looks like a Hugging Face Hub dataset id (no local path of that name exists), but "
            f"{' and '.join(offline)} {'is' if len(offline) == 1 else 'are'} set and streaming needs the "
            f"Hub. {_ADVICE}"
        )
    probe_hub_dataset(spec, timeout=timeout)

    def open_and_read() -> tuple[Any, bool]:
        ds = open_dataset()
        return ds, next(iter(ds), None) is not None

    limit = HUB_OPEN_FACTOR * timeout
    finished, result, error = _watch(open_and_read, limit)
    where = f"Hub dataset {spec!r} ({hub_endpoint()})"
    if not finished:
        raise HubUnavailableError(
            f"{where}: opening it and reading its first example took more than {limit:g} s "
            f"({HUB_OPEN_FACTOR} x hub_timeout). {_ADVICE}"
        )
    if error is None:
        ds, any_example = result
        if not any_example:
            raise DataSourceError(f"{where} holds no examples in its train split")
        return ds
    if isinstance(error, DataSourceError):
        raise error
    if isinstance(error, not_found):
        raise DataSourceError(
            f"{where} was not found ({_one_line(error)}); check the id, or log in (HF_TOKEN) if it is "
            "private or gated"
        ) from None
    if not isinstance(error, Exception):
        raise error  # KeyboardInterrupt, SystemExit
    kind = type(error).__name__
    if isinstance(error, ConnectionError | TimeoutError) or "Connect" in kind or "Timeout" in kind:
        raise HubUnavailableError(f"cannot stream {where}: {_one_line(error)}. {_ADVICE}") from None
    raise DataSourceError(f"cannot load {where}: {kind}: {_one_line(error)}") from None


def _one_line(error: BaseException) -> str:
    """The error's message on one line (commands print exactly one ``error:`` line)."""
    return " ".join(str(error).split())
