"""The Hub unreachable, silent or answering errors: one clear error within bounded time, never a hang.

Every stand-in Hub is a thread of this process on 127.0.0.1 (`fake_hub` in conftest.py)."""

from __future__ import annotations

import re
import threading
import time

import pytest

from microgpt_data import DataSourceError, HubUnavailableError, load_text_dataset
from microgpt_data.cli import main
from microgpt_data.hub import HUB_OPEN_FACTOR, hub_timeout_seconds

TIMEOUT = 0.5
PROBE = "/api/datasets/org/name"

FAILURES = [
    ("refused", HubUnavailableError, r"the Hub cannot be reached \(.*refused"),
    ("silent", HubUnavailableError, r"the Hub gave no answer within 0.5 s"),
    (500, HubUnavailableError, "the Hub answered 500; try again later"),
    (503, HubUnavailableError, "the Hub answered 503; try again later"),
    (429, HubUnavailableError, "the Hub answered 429; try again later"),
    (404, DataSourceError, "the Hub answered 404: no such dataset; check the id"),
    (401, DataSourceError, "the Hub answered 401: the dataset is private or gated.*HF_TOKEN"),
    (403, DataSourceError, "the Hub answered 403: the dataset is private or gated"),
]


@pytest.mark.parametrize(("kind", "error", "match"), FAILURES, ids=[str(f[0]) for f in FAILURES])
def test_a_failing_hub_gives_one_error_naming_dataset_and_endpoint_in_bounded_time(
    fake_hub, kind, error, match
):
    """The old probe only opened a TCP connection: a silent server then hung datasets, and a 500 was
    retried for about 25 s."""
    url, requests = fake_hub(kind)
    import datasets  # noqa: F401  (loaded lazily; its import, seconds on a busy machine, is not the Hub's wait)

    start = time.perf_counter()
    with pytest.raises(error) as info:
        load_text_dataset("org/name:cfg", hub_timeout=TIMEOUT)
    assert time.perf_counter() - start < TIMEOUT + 2
    message = str(info.value)
    assert message.startswith(f"Hub dataset 'org/name:cfg' ({url}{PROBE}): ") and "\n" not in message
    assert re.search(match, message), message
    if error is HubUnavailableError:
        assert "--data pydocs" in message  # what to do offline
    if isinstance(kind, int):
        assert requests == [f"GET {PROBE}"]  # the request datasets makes, made once, no retries


@pytest.fixture()
def released():
    """An event the test's stand-in datasets wait on; set at teardown so no thread stays blocked."""
    event = threading.Event()
    yield event
    event.set()


@pytest.mark.parametrize("stage", ["opening", "first-read"])
def test_datasets_stalling_after_a_good_probe_is_bounded(
    fake_hub, monkeypatch, make_dataset, released, stage
):
    import datasets

    fake_hub(200)

    def stalled_rows():
        released.wait()
        yield {"text": "late"}

    def load_dataset(name, config=None, **kwargs):
        if stage == "opening":
            released.wait()
        return datasets.IterableDataset.from_generator(stalled_rows)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    timeout = 0.1
    start = time.perf_counter()
    with pytest.raises(HubUnavailableError, match=r"opening it and reading its first example took more"):
        load_text_dataset("org/name", hub_timeout=timeout)
    assert HUB_OPEN_FACTOR * timeout <= time.perf_counter() - start < HUB_OPEN_FACTOR * timeout + 2


@pytest.mark.parametrize(("kind", "error", "match"), FAILURES[:2] + FAILURES[2:3] + FAILURES[5:6])
def test_train_tokenizer_prints_exactly_one_error_line_and_exits_2(
    fake_hub, monkeypatch, capsys, tmp_path, kind, error, match
):
    fake_hub(kind)
    monkeypatch.setenv("MICROGPT_HUB_TIMEOUT", str(TIMEOUT))
    start = time.perf_counter()
    code = main(["--data", "org/name", "--vocab-size", "300", "--out", str(tmp_path / "t"), "--no-progress"])
    assert code == 2 and time.perf_counter() - start < TIMEOUT + 3
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Hub dataset 'org/name' ("), captured.err
    assert re.search(match, lines[0])
    assert not (tmp_path / "t").exists()


def test_the_timeout_comes_from_the_argument_or_the_environment(monkeypatch):
    monkeypatch.delenv("MICROGPT_HUB_TIMEOUT", raising=False)
    assert hub_timeout_seconds(None) == 10.0
    assert hub_timeout_seconds(0.25) == 0.25
    monkeypatch.setenv("MICROGPT_HUB_TIMEOUT", "1.5")
    assert hub_timeout_seconds(None) == 1.5
    for bad in ("0", "-1", "soon", "inf", "nan"):
        monkeypatch.setenv("MICROGPT_HUB_TIMEOUT", bad)
        with pytest.raises(
            DataSourceError, match=rf"\$MICROGPT_HUB_TIMEOUT must be a positive number .*{bad!r}"
        ):
            hub_timeout_seconds(None)
    for bad in (0, -2.0, True, "3"):
        with pytest.raises(DataSourceError, match="hub_timeout must be a positive number of seconds"):
            hub_timeout_seconds(bad)  # type: ignore[arg-type]
