"""The playground page (`GET /`) in headless Chromium against the real server: it fills the prompt,
presses Send (the page's #autotest=<JSON> mode), streams the answer into #output, and shows what the
API answers for the very same request, with the usage, tokens/s and no script error.

Chromium is driven through the DevTools protocol over a pipe (tests/infer/browser.py). Chromium is
required, not optional: CI installs it (.ci/run); without it this test fails and says so.
"""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest

pytest.importorskip("uvicorn")

from tests.infer.browser import Browser  # noqa: E402
from tests.infer.test_server import MODEL_NAME, Served, http, serve  # noqa: E402

MAX_TOKENS = 12
QUESTION = "What is a list?"


@pytest.fixture(scope="module")
def served(model):
    from microgpt_infer.server.app import create_app

    app = create_app(model, name=MODEL_NAME, slots=2, max_queue=8, windows=(model.config.context_length,))
    server, thread, url = serve(app)
    yield Served(url, app)
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def browser():
    browser = Browser()
    yield browser
    browser.close()


def run_page(browser, served, spec: dict, refused: int | None = None) -> tuple[dict, dict]:
    """The page's fields once its #autotest run ended, and the request body it sent; no script error
    (and no failed load, but the one with the HTTP status `refused`)."""
    tab = browser.open(f"{served.url}/#autotest={urllib.parse.quote(json.dumps(spec))}")
    try:
        state = tab.wait_for(
            "['done', 'error'].includes(document.body?.dataset.state) && document.body.dataset.state"
        )
        fields = tab.evaluate(
            "Object.fromEntries(['output', 'usage', 'tps', 'ttft', 'finish', 'error', 'model', 'messages']"
            ".map((id) => [id, document.getElementById(id).textContent]))"
        )
        fields["state"] = state
        fields["error_hidden"] = tab.evaluate("document.getElementById('error').hidden")
        sent = tab.evaluate("window.lastRequest || null")
        expected = f"status of {refused} " if refused else None
        assert [p for p in tab.problems() if not (expected and expected in p)] == []
    finally:
        tab.close()
    return fields, sent


def api(served, path: str, sent: dict) -> dict:
    """The server's answer to the page's request, not streamed."""
    body = {k: v for k, v in sent.items() if k not in ("stream", "stream_options")}
    status, _, text = http(served, "POST", path, body)
    assert status == 200, text
    return json.loads(text)


def shown_usage(usage: dict) -> str:
    prompt, completion, total = usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]
    return f"{prompt} prompt + {completion} completion = {total} tokens"


def test_chat_streams_what_the_api_answers(browser, served):
    spec = {"mode": "chat", "prompt": QUESTION, "temperature": 0, "max_tokens": MAX_TOKENS, "seed": 3}
    fields, sent = run_page(browser, served, spec)
    assert fields["state"] == "done" and fields["error_hidden"], fields
    assert sent["messages"] == [{"role": "user", "content": QUESTION}]
    assert (sent["model"], sent["temperature"], sent["max_tokens"], sent["seed"]) == (MODEL_NAME, 0, 12, 3)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    answer = api(served, "/v1/chat/completions", sent)
    assert fields["output"] == answer["choices"][0]["message"]["content"]
    assert fields["output"]  # something was streamed
    assert fields["usage"] == shown_usage(answer["usage"])
    assert fields["finish"] == answer["choices"][0]["finish_reason"]
    assert fields["model"] == MODEL_NAME
    assert re.fullmatch(r"\d+ ms", fields["ttft"]) and re.fullmatch(r"\d+\.\d|–", fields["tps"]), fields
    assert fields["messages"] == f"user{QUESTION}assistant{fields['output']}"  # the turn is kept


def test_complete_streams_what_the_api_answers(browser, served):
    spec = {
        "mode": "complete", "prompt": "Once upon a time", "temperature": 0, "max_tokens": MAX_TOKENS,
        "top_k": 5, "repetition_penalty": 1.3, "stop": ["zz"],
    }  # fmt: skip
    fields, sent = run_page(browser, served, spec)
    assert fields["state"] == "done" and fields["error_hidden"], fields
    assert sent["prompt"] == "Once upon a time" and "messages" not in sent
    assert (sent["top_k"], sent["repetition_penalty"], sent["stop"]) == (5, 1.3, ["zz"])
    answer = api(served, "/v1/completions", sent)
    assert fields["output"] == answer["choices"][0]["text"]
    assert fields["usage"] == shown_usage(answer["usage"])


def test_a_server_error_is_shown_in_the_page(browser, served):
    spec = {"mode": "complete", "prompt": "x", "max_tokens": 0}
    fields, sent = run_page(browser, served, spec, refused=400)
    assert fields["state"] == "error" and not fields["error_hidden"]
    body = {**sent, "stream": False, "stream_options": None}
    status, _, text = http(served, "POST", "/v1/completions", body)
    assert status == 400
    message = json.loads(text)["error"]["message"]
    assert fields["error"] == message == "max_tokens must be an integer >= 1, got 0"
    assert fields["output"] == ""


def test_the_page_is_self_contained(served):
    status, headers, page = http(served, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    links = re.findall(r"""(?:src|href|action)\s*=\s*["']?([^"'\s>]*)""", page)
    assert links and all(link.startswith(("data:", "#")) for link in links), links
    assert "<script src" not in page and "@import" not in page and "url(" not in page
    fetched = re.findall(r"""fetch\(\s*([^,)]+)""", page)
    assert fetched and all(f in ('"/v1/models"', "url") for f in fetched), fetched
    for id_ in ("mode", "prompt", "send", "output", "usage", "tps", "ttft", "error", "model", "stop", "seed"):
        assert f'id="{id_}"' in page
