"""The Hub path against a loopback server (tests/infer/hub_server.py): never the internet."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from microgpt_infer import HubError, load_model, push_to_hub
from microgpt_infer.card import SUMMARY_FILE
from microgpt_infer.hub import MODEL_FILES
from tests.infer.conftest import GPT2_TINY, LLAMA_TINY


def assert_same_params(a, b) -> None:
    import jax

    for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def fetched(hub) -> set[str]:
    """Names of the files whose bytes were downloaded: small ones from /resolve, weights from the CDN."""
    small = {c.rsplit("/", 1)[1] for c in hub.calls("GET") if "/resolve/" in c}
    cdn = [c for c in hub.calls("GET") if c.startswith("GET /cdn/")]
    assert len(cdn) <= 1, cdn
    return small | ({"model.safetensors"} if cdn else set())


def test_download_then_cache_reuse(hub, model_dir, model, capsys):
    hub.add_folder("org/tiny", model_dir)
    loaded = load_model("org/tiny")
    assert_same_params(loaded, model)
    assert loaded.tokenizer == model.tokenizer
    assert "hf_home" in str(loaded.source)  # in the HF cache named by HF_HOME / HF_HUB_CACHE
    assert fetched(hub) == {p.name for p in model_dir.iterdir()}
    assert "%" in capsys.readouterr().err  # tqdm progress bar while downloading

    hub.requests.clear()
    again = load_model("org/tiny")
    assert again.source == loaded.source
    assert fetched(hub) == set()  # no file downloaded again


def test_offline_reads_the_cache_and_requests_nothing(hub, model_dir, monkeypatch):
    hub.add_folder("org/tiny", model_dir)
    first = load_model("org/tiny")
    hub.requests.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_model("org/tiny").source == first.source
    assert hub.calls() == []
    with pytest.raises(HubError, match=r"'org/other' on \S+ is not in the Hugging Face cache .*OFFLINE"):
        load_model("org/other")
    assert hub.calls() == []


def test_missing_repo_is_a_clear_error(hub):
    message = r"'org/missing' on http://127\.0\.0\.1:\d+ not found: check the spelling.*no local folder"
    with pytest.raises(HubError, match=message):
        load_model("org/missing")


def test_private_repo_needs_the_token_from_hf_token(hub, model_dir, monkeypatch):
    hub.add_folder("org/secret", model_dir, private=True)
    with pytest.raises(HubError, match=r"'org/secret' on \S+ not found: it is private .*401.*HF_TOKEN"):
        load_model("org/secret")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(HubError, match=r"'org/secret'.*HF_TOKEN"):
        load_model("org/secret")
    monkeypatch.setenv("HF_TOKEN", hub.token)
    hub.requests.clear()
    assert load_model("org/secret").config.d_model == 32
    for r in hub.requests:  # the token goes to the Hub, never to the CDN host
        assert r.headers.get("Authorization") == (
            None if r.path.startswith("/cdn/") else f"Bearer {hub.token}"
        )


def test_unknown_revision(hub, model_dir):
    hub.add_folder("org/tiny", model_dir)
    with pytest.raises(HubError, match=r"revision 'v9'.*no such branch, tag or commit"):
        load_model("org/tiny", revision="v9")


def test_truncated_download_raises_and_keeps_nothing_broken(hub, model_dir, model):
    hub.add_folder("org/tiny", model_dir)
    hub.truncate.add("model.safetensors")
    with pytest.raises(HubError, match=r"'org/tiny' on \S+: download failed .*(size|Consistency)"):
        load_model("org/tiny")
    hub.truncate.clear()
    assert_same_params(load_model("org/tiny"), model)  # the next try downloads it whole


def test_dropped_connection_is_retried(hub, model_dir, model):
    hub.add_folder("org/tiny", model_dir)
    hub.drop_once.add("model.safetensors")  # half the announced bytes, then the server hangs up
    assert_same_params(load_model("org/tiny"), model)
    assert len([c for c in hub.calls("GET") if c.startswith("GET /cdn/")]) == 2


def test_gpt2_layout_from_the_hub(hub):
    hub.add_folder("openai-community/gpt2-tiny", GPT2_TINY)
    loaded = load_model("openai-community/gpt2-tiny")
    assert loaded.config.n_layers == 2
    assert fetched(hub) == {"config.json", "model.safetensors", "vocab.json", "merges.txt"}  # not logits.npy


def test_push_to_hub_uploads_one_commit_that_loads_back(hub, model_dir, model, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    url = push_to_hub(model_dir, "me/pushed", private=True)
    assert url.startswith(f"{hub.url}/me/pushed/commit/")
    repo = hub.repos["me/pushed"]
    assert repo.private
    assert set(repo.files) == {p.name for p in model_dir.iterdir()} | {"README.md"}
    assert set(repo.files) <= set(MODEL_FILES)
    card = repo.files["README.md"].decode()
    assert card.startswith("---\nlibrary_name: microgpt") and 'load_model("me/pushed")' in card
    posts = [c.split("?")[0] for c in hub.calls("POST")]
    assert posts == [
        "POST /api/repos/create",
        "POST /api/validate-yaml",
        "POST /api/models/me/pushed/preupload/main",
        "POST /api/models/me/pushed/commit/main",
    ]
    assert_same_params(load_model("me/pushed"), model)


def test_push_to_hub_errors(hub, model_dir, model_copy, tmp_path):
    with pytest.raises(HubError, match=r"upload of .* to Hub repo 'me/x' failed: .*HF_TOKEN"):
        push_to_hub(model_dir, "me/x")  # no token
    (model_copy / "model.safetensors").write_bytes(b"garbage")
    from microgpt_infer import ModelFileError, ModelNotFoundError

    with pytest.raises(ModelFileError, match=r"model\.safetensors"):
        push_to_hub(model_copy, "me/x")
    with pytest.raises(ModelNotFoundError, match="nope: no such folder"):
        push_to_hub(tmp_path / "nope", "me/x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFileError, match="not a folder"):
        push_to_hub(tmp_path / "file", "me/x")
    folder = shutil.copytree(model_dir, tmp_path / "summary")
    (folder / SUMMARY_FILE).write_text("[1]")
    with pytest.raises(ModelFileError, match=rf"{SUMMARY_FILE}: must hold a JSON object \(a training"):
        push_to_hub(folder, "me/x")  # read by core's read_json_object
    assert not [c for c in hub.calls("POST") if "commit" in c]


# ------------------------------------------------------------------------------------------------
# A Hub that is down, silent or failing: one HubError naming the endpoint, in bounded time.
FAILURES = ["refused", "silent", "500", "503", "404", "401"]
BOUND_S = 20  # with MICROGPT_HUB_TIMEOUT=0.5: one timeout, no retries of the first requests


@pytest.fixture(params=FAILURES)
def broken_hub(request, tmp_path, monkeypatch, model_dir):
    """(kind, endpoint): the environment points at a Hub that fails in the way `kind` says."""
    from tests.infer.hub_server import HubServer, closed_port_url

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("MICROGPT_HUB_TIMEOUT", "0.5")
    monkeypatch.setenv("HF_TOKEN", "hf_good_token")
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    if request.param == "refused":
        url = closed_port_url()
        monkeypatch.setenv("HF_ENDPOINT", url)
        yield request.param, url
        return
    with HubServer() as fake:
        fake.add_folder("org/tiny", model_dir)
        if request.param == "silent":
            fake.silent = True
        else:
            fake.fail_with = int(request.param)
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        yield request.param, fake.url


def _expected(kind: str) -> str:
    return {
        "refused": r"cannot reach the Hugging Face Hub at {url} \(ConnectError",
        "silent": r"cannot reach the Hugging Face Hub at {url} \(ReadTimeout.*MICROGPT_HUB_TIMEOUT=0.5 s",
        "500": r"the Hub (at {url} )?answered .*500.*try again later",
        "503": r"the Hub (at {url} )?answered .*503.*try again later",
        "404": r"(not found|404)",
        "401": r"(401|HF_TOKEN)",
    }[kind]


def test_download_from_a_broken_hub_is_one_clear_error(broken_hub):
    import re
    import time

    kind, url = broken_hub
    start = time.perf_counter()
    with pytest.raises(HubError) as info:
        load_model("org/tiny")
    assert time.perf_counter() - start < BOUND_S
    message = str(info.value)
    assert "'org/tiny'" in message and url in message and "\n" not in message
    assert re.search(_expected(kind).format(url=re.escape(url)), message), message


def test_push_to_a_broken_hub_is_one_clear_error(broken_hub, model_dir):
    import re
    import time

    kind, url = broken_hub
    start = time.perf_counter()
    with pytest.raises(HubError) as info:
        push_to_hub(model_dir, "me/pushed")
    assert time.perf_counter() - start < BOUND_S
    message = str(info.value)
    assert "'me/pushed'" in message and url in message and "\n" not in message
    expected = {"404": "answered .*404", "401": "answered .*401.*HF_TOKEN"}.get(kind, _expected(kind))
    assert re.search(expected.format(url=re.escape(url)), message), message


def test_the_commands_print_one_error_line_for_a_broken_hub(broken_hub, model_dir, capsys):
    import time

    from microgpt_infer.cli import main, push_main
    from tests.infer.test_cli import one_error_line

    kind, url = broken_hub
    for command, argv in ((main, ["hi", "--model", "org/tiny"]), (push_main, [str(model_dir), "me/pushed"])):
        start = time.perf_counter()
        assert command(argv) == 2
        assert time.perf_counter() - start < BOUND_S
        out, err = capsys.readouterr()
        assert out == "" and url in one_error_line(err)


def test_a_bad_timeout_setting_is_refused(hub, monkeypatch):
    monkeypatch.setenv("MICROGPT_HUB_TIMEOUT", "soon")
    bad = r"MICROGPT_HUB_TIMEOUT must be a positive number of seconds, got 'soon'"
    with pytest.raises(HubError, match=bad):
        load_model("org/tiny")
    assert hub.calls() == []


def test_a_client_factory_of_the_user_is_kept(hub, model_dir, monkeypatch):
    from huggingface_hub.utils import _http

    made = []

    def factory():
        made.append(_http.default_client_factory())
        return made[-1]

    monkeypatch.setattr(_http, "_GLOBAL_CLIENT_FACTORY", _http._GLOBAL_CLIENT_FACTORY)  # restored after
    _http.set_client_factory(factory)
    hub.add_folder("org/tiny", model_dir)
    load_model("org/tiny")
    assert made and _http._GLOBAL_CLIENT_FACTORY is factory
    _http.close_session()


def test_push_writes_the_card_again_for_the_repo_but_keeps_a_card_a_person_wrote(
    hub, model_copy, monkeypatch
):
    from microgpt_infer.card import model_card

    monkeypatch.setenv("HF_TOKEN", hub.token)
    summary = {"step": 8, "eval_loss": 4.2, "sample": "Once upon", "run": {"data": "pydocs", "max_steps": 8}}
    (model_copy / "training_summary.json").write_text(json.dumps(summary))
    local = model_card(
        load_model(model_copy).config, "runs/tiny/model", name="tiny", n_params=1, summary=summary
    )
    (model_copy / "README.md").write_text(local)  # as microgpt-train writes it: the local path
    push_to_hub(model_copy, "me/trained")
    card = hub.repos["me/trained"].files["README.md"].decode()
    assert (
        'load_model("me/trained")' in card and "runs/tiny/model" not in card and "load_pretrained" not in card
    )
    assert "| validation loss (nats/token) | 4.200 |" in card and "the finished run" in card
    assert "training_summary.json" in hub.repos["me/trained"].files
    (model_copy / "README.md").write_text("# My own words\n")
    push_to_hub(model_copy, "me/trained", commit_message="mine")
    assert hub.repos["me/trained"].files["README.md"] == b"# My own words\n"


# ------------------------------------------------------------------------------------------------
# Hugging Face layouts (GPT-2's, Llama's; what export-hf writes) go up and come down as they are.
@pytest.mark.parametrize("fixture", [GPT2_TINY, LLAMA_TINY], ids=["gpt2", "llama"])
def test_push_to_hub_uploads_a_hugging_face_layout_that_loads_back(hub, fixture, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", hub.token)
    folder = shutil.copytree(fixture, tmp_path / "hf", ignore=shutil.ignore_patterns("tied"))
    push_to_hub(folder, "me/hf")
    files = hub.repos["me/hf"].files
    layout_files = {p.name for p in folder.iterdir()} - {"reference.json", "logits.npy"}  # not model files
    assert set(files) == layout_files | {"README.md"}
    card = files["README.md"].decode()
    assert card.startswith("---\nlibrary_name: transformers\n")  # the Hub shows transformers' snippet
    assert 'load_model("me/hf")' in card and 'AutoModelForCausalLM.from_pretrained("me/hf")' in card
    assert "load_pretrained" not in card  # microgpt-core alone reads our layout only
    loaded, local = load_model("me/hf"), load_model(folder)
    assert_same_params(loaded, local)
    assert loaded.tokenizer == local.tokenizer and loaded.config == local.config


def test_llama_layout_from_the_hub(hub):
    hub.add_folder("HuggingFaceTB/llama-tiny", LLAMA_TINY)
    loaded = load_model("HuggingFaceTB/llama-tiny")
    assert (loaded.config.positional, loaded.config.n_kv_heads) == ("rope", 2)
    assert fetched(hub) == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}


def test_push_an_export(hub, model_dir, tmp_path, monkeypatch):
    """export-hf, then push-to-hub: the card is written again for the repo, with both snippets."""
    from microgpt_infer.export_hf import export_hf

    monkeypatch.setenv("HF_TOKEN", hub.token)
    out = export_hf(model_dir, tmp_path / "hf")
    push_to_hub(out, "me/exported")
    files = hub.repos["me/exported"].files
    assert set(files) == {p.name for p in out.iterdir()}
    card = files["README.md"].decode()
    assert str(out) not in card and 'AutoTokenizer.from_pretrained("me/exported")' in card
    assert_same_params(load_model("me/exported"), load_model(model_dir))
