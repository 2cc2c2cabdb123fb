"""Shared fixtures: tiny configurations and their parameters, built once per session."""

from __future__ import annotations

import http.server
import signal
import socket
import threading

import jax
import pytest
from hypothesis import HealthCheck, settings

from microgpt_core import GPTConfig, init_params

# Property tests compile a new program for every new shape: keep examples few and never time them.
# Derandomized, so CI runs the same examples every time (a failure reproduces on every machine).
settings.register_profile(
    "microgpt",
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("microgpt")


@pytest.fixture(autouse=True, scope="session")
def _ctrl_c_as_in_a_terminal():
    """Python's own Ctrl-C for the session, even when a script started the suite in the background
    (`pytest &`, `nohup`: SIGINT ignored from the start, which this process and the commands it starts
    would keep, as they should), so that the tests of Ctrl-C see one."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


@pytest.fixture(autouse=True)
def _signal_handlers_left_as_found(request, _ctrl_c_as_in_a_terminal):
    """Every test leaves SIGINT's and SIGTERM's handlers and the wakeup descriptor as it found them: the
    suite runs in worker processes (pytest-xdist), where a handler left behind breaks whichever test
    that worker runs next. A test that changes them fails here, naming what it left; they are put back."""
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    wakeup = signal.set_wakeup_fd(-1)
    left = [signal.Signals(sig).name for sig, handler in handlers.items() if signal.getsignal(sig) != handler]
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    if wakeup != -1:
        left.append("the wakeup descriptor")
    if left:
        pytest.fail(f"{request.node.nodeid} left {', '.join(left)} changed", pytrace=False)


TINY = GPTConfig(vocab_size=97, context_length=32, d_model=32, n_layers=2, n_heads=4)


@pytest.fixture(scope="session")
def tiny_config() -> GPTConfig:
    """2 layers, d_model 32, 4 heads, learned positions, biases, final norm, tied embeddings."""
    return TINY


@pytest.fixture(scope="session")
def tiny_params(tiny_config):
    return init_params(jax.random.key(0), tiny_config)


# Jitted entry points shared by every test, so a (config, shape) pair compiles once per session.
@pytest.fixture(scope="session")
def jit_forward():
    from microgpt_core import forward

    return jax.jit(forward, static_argnames=("config", "train"))


@pytest.fixture(scope="session")
def jit_forward_cached():
    from microgpt_core import forward_cached

    return jax.jit(forward_cached, static_argnames=("config",))


# Small sets to draw configurations from: every new shape is a new XLA compilation.
def config_strategy(st, *, attention=None, positional=None):
    """A Hypothesis strategy of tiny GPTConfigs over every combination of the options (imported
    lazily so conftest imports stay cheap); n_kv_heads is drawn among the divisors of n_heads."""
    configs = st.builds(
        GPTConfig,
        vocab_size=st.sampled_from([13, 64]),
        context_length=st.just(16),
        d_model=st.sampled_from([16, 32]),
        n_layers=st.sampled_from([1, 2]),
        n_heads=st.sampled_from([1, 2, 4]),
        positional=st.just(positional) if positional else st.sampled_from(["learned", "sinusoidal", "rope"]),
        rope_theta=st.sampled_from([10000.0, 500000.0]),
        attention=st.just(attention) if attention else st.sampled_from(["math", "fused"]),
        norm=st.sampled_from(["layernorm", "rmsnorm"]),
        qk_norm=st.booleans(),
        bias=st.booleans(),
        final_norm=st.booleans(),
        tie_embeddings=st.booleans(),
        embed_scale=st.booleans(),
        mlp=st.sampled_from(["gelu", "swiglu"]),
        gelu=st.sampled_from(["tanh", "exact"]),
    )
    return configs.flatmap(
        lambda c: st.sampled_from([h for h in (1, 2, 4) if c.n_heads % h == 0]).map(
            lambda kv: c.replace(n_kv_heads=kv)
        )
    )


# A stand-in Hub for the commands that read Hub datasets (data, train).
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


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A loopback Hub that serves and takes model repositories (tests/infer/hub_server.py's `FakeHub`:
    `hub.add_folder(repo_id, folder)`, every request logged in `hub.requests`), with the environment
    pointing at it and the Hugging Face cache in `tmp_path`."""
    from tests.infer.hub_server import HubServer

    with HubServer() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        for name in ("HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            monkeypatch.delenv(name, raising=False)
        yield fake
