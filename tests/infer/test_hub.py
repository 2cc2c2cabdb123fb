"""The Hub path against a loopback server (tests/infer/hub_server.py): never the internet."""

from __future__ import annotations

import numpy as np
import pytest

from microgpt_infer import HubError, load_model, push_to_hub
from microgpt_infer.hub import MODEL_FILES
from tests.infer.conftest import GPT2_TINY


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
    with pytest.raises(HubError, match=r"'org/other' is not in the Hugging Face cache .*HF_HUB_OFFLINE"):
        load_model("org/other")
    assert hub.calls() == []


def test_missing_repo_is_a_clear_error(hub):
    with pytest.raises(HubError, match=r"'org/missing' not found: check the spelling.*no local folder"):
        load_model("org/missing")


def test_private_repo_needs_the_token_from_hf_token(hub, model_dir, monkeypatch):
    hub.add_folder("org/secret", model_dir, private=True)
    with pytest.raises(HubError, match=r"'org/secret' not found: it is private .*401.*HF_TOKEN"):
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
    with pytest.raises(HubError, match=r"'org/tiny': download failed .*(size|Consistency)"):
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
    from microgpt_infer import ModelFileError

    with pytest.raises(ModelFileError, match=r"model\.safetensors"):
        push_to_hub(model_copy, "me/x")
    with pytest.raises(ModelFileError, match="not a folder"):
        push_to_hub(tmp_path / "nope", "me/x")
    assert not [c for c in hub.calls("POST") if "commit" in c]
