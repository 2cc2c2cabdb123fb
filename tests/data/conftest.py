"""Fixtures for the microgpt_data tests: one small BPE tokenizer, small in-memory datasets, and a
stand-in Hub on 127.0.0.1."""

from __future__ import annotations

import http.server
import socket
import threading
from pydoc_data.topics import topics

import pytest

from microgpt_data import Tokenizer, train_bpe


@pytest.fixture(scope="session")
def small_texts() -> list[str]:
    """About 100 KB of English prose (reference-manual topics), in a fixed order."""
    texts = [topics[key] for key in sorted(topics)]
    return texts[:40]


@pytest.fixture(scope="session")
def small_tokenizer(small_texts) -> Tokenizer:
    """A 512-token byte-level BPE trained on `small_texts` (well under a second)."""
    return train_bpe(small_texts, 512)


def _generate(texts):
    for text in texts:
        yield {"text": text}


def _make_dataset(texts: list[str]):
    import datasets

    return datasets.IterableDataset.from_generator(
        _generate,
        features=datasets.Features({"text": datasets.Value("string")}),
        gen_kwargs={"texts": list(texts)},
    )


@pytest.fixture(scope="session")
def make_dataset():
    """`make_dataset(texts)`: a streaming dataset with one shard per text, like pydocs (so processes
    split it by shard)."""
    return _make_dataset


class _Status(http.server.BaseHTTPRequestHandler):
    """Answers every request with the server's `status` (and a small JSON body); records the paths."""

    def _answer(self) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        body = b'{"id": "org/name"}'
        self.send_response(self.server.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = _answer

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture()
def fake_hub(monkeypatch):
    """`fake_hub(kind)` points ``HF_ENDPOINT`` at a stand-in Hub on 127.0.0.1 and returns its URL and
    the list of requests it received. `kind`: ``"refused"`` (nobody listens), ``"silent"`` (accepts
    the connection, never answers) or an HTTP status every request gets. Offline flags are cleared."""
    started = []

    def start(kind):
        for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN", "MICROGPT_HUB_TIMEOUT"):
            monkeypatch.delenv(variable, raising=False)
        requests: list[str] = []
        if kind == "refused":
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        elif kind == "silent":
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)  # the kernel completes the handshakes; nothing ever reads or answers
            started.append(listener.close)
            port = listener.getsockname()[1]
        else:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Status)
            server.status, server.requests, server.daemon_threads = int(kind), requests, True
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            started.append(lambda server=server: (server.shutdown(), server.server_close()))
            port = server.server_address[1]
        url = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("HF_ENDPOINT", url)
        return url, requests

    yield start
    for stop in started:
        stop()
