"""Chat fine-tuning: the template and its token, the loss mask of each row, rows left out and counted,
and a run end to end (the folder carries its template, evaluate reports the run's masked loss)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import jax
import numpy as np
import pytest

from microgpt_core import init_params, save_pretrained
from microgpt_data import Tokenizer
from microgpt_infer import load_tokenizer
from microgpt_infer.chat import CHAT_MODEL_TEMPLATE, load_chat_template, render_chat
from microgpt_infer.export_hf import export_hf
from microgpt_infer.folder import load_folder
from microgpt_train import RunConfigError, evaluate_model, resolve_init_from, train
from microgpt_train.chat_data import ChatEncoder, chat_tokenizer, count_rows, describe, grow_embeddings

from .conftest import TINY_MODEL, tiny_run

SOURCE_MODEL = TINY_MODEL.replace(context_length=64)
QA = [{"role": "user", "content": "What is a list?"}, {"role": "assistant", "content": "A list is a type."}]
BAD = {
    "assistant": [{"role": "user", "content": "no answer"}],
    "role": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}],
    "content": [{"role": "user", "content": ["a", "list"]}, {"role": "assistant", "content": "y"}],
    "messages": None,  # a row without messages
    "message": [{"role": "user", "content": "x", "tool_calls": []}, {"role": "assistant", "content": "y"}],
    "long": [{"role": "user", "content": "long " * 80}, {"role": "assistant", "content": "y"}],
}


@pytest.fixture(scope="module")
def chat(tiny_tokenizer_dir) -> Tokenizer:
    return chat_tokenizer(Tokenizer.load(tiny_tokenizer_dir), None)


def _text(messages) -> str:
    return json.dumps(messages)


def test_a_model_without_a_template_gains_the_projects_and_its_token(tiny_tokenizer_dir, chat):
    plain = Tokenizer.load(tiny_tokenizer_dir)
    assert chat.chat_template == CHAT_MODEL_TEMPLATE and chat.vocab_size == plain.vocab_size + 1
    assert chat.special_tokens == {**plain.special_tokens, "<|im_start|>": plain.vocab_size}
    own = chat_tokenizer(plain, "{{ messages }}")  # a source's own template: no token added
    assert own.chat_template == "{{ messages }}" and own.special_tokens == plain.special_tokens


def test_new_embeddings_start_at_the_mean():
    params = {
        "embed": {"tokens": np.arange(12.0).reshape(4, 3)},
        "head": {"w": np.arange(12.0).reshape(3, 4)},
    }
    grown = grow_embeddings(params, known=3, vocab_size=5, new_ids=[3, 4])
    np.testing.assert_array_equal(grown["embed"]["tokens"][:3], params["embed"]["tokens"][:3])
    np.testing.assert_array_equal(grown["embed"]["tokens"][3:], [[3.0, 4.0, 5.0]] * 2)
    np.testing.assert_array_equal(grown["head"]["w"][:, 4], [1.0, 5.0, 9.0])


def test_the_mask_counts_what_the_assistant_writes_and_nothing_else(chat):
    encoder = ChatEncoder(chat, context=64)
    ids, mask = encoder(_text(QA))
    eot = chat.eot_token
    assert chat.decode(ids) == render_chat(QA, chat.chat_template, eos_token=eot, add_generation_prompt=False)
    assert chat.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "A list is a type." + eot
    twice = [*QA, {"role": "user", "content": "And?"}, {"role": "assistant", "content": "Yes.", "weight": 1}]
    twice[1] = {**twice[1], "weight": 0}  # OpenAI's weight 0: rendered, not trained
    ids, mask = encoder(_text(twice))
    assert chat.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "Yes." + eot


def test_rows_it_cannot_train_on_are_left_out_and_counted(chat):
    encoder = ChatEncoder(chat, context=64)
    rows = [_text(QA)] * 2 + [_text(messages) for messages in BAD.values()]
    assert [encoder(text) is None for text in rows] == [False, False] + [True] * len(BAD)
    counts = count_rows(rows, encoder)
    assert counts == {"kept": 2, **dict.fromkeys(BAD, 1)}
    assert describe(counts).startswith("6 left out (1 with no assistant turn to train on, 1 with a role")


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def chat_data(tmp_path_factory):
    """240 short conversations (a few with a system turn) and one row of each bad kind."""
    rng = random.Random(0)
    rows = []
    for i in range(240):
        kind = rng.choice(["list", "tuple", "dict", "set", "str", "int", "float", "bytes"])
        messages = [{"role": "user", "content": f"What is a {kind}?"},
                    {"role": "assistant", "content": f"A {kind} is a type."}]  # fmt: skip
        rows.append(
            {"messages": ([{"role": "system", "content": "Be brief."}] if i % 4 == 0 else []) + messages}
        )
    rows += [{"messages": messages} if messages is not None else {"text": "x"} for messages in BAD.values()]
    path = tmp_path_factory.mktemp("chat") / "chat.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, tiny_tokenizer_dir, chat_data):
    """A 6-step chat fine-tuning of a tiny model (context 64) without a template, and what it printed."""
    source = tmp_path_factory.mktemp("source")
    save_pretrained(source, init_params(jax.random.key(3), SOURCE_MODEL), SOURCE_MODEL)
    Tokenizer.load(tiny_tokenizer_dir).save(source)
    run = tiny_run(
        tmp_path_factory.mktemp("runs"), init_from=str(source), data=str(chat_data), batch_size=4,
        eval_batches=1, sample_prompt="What is a list?",
    )  # fmt: skip
    lines: list[str] = []
    return train(resolve_init_from(run), log=lines.append), "\n".join(lines)


@pytest.mark.slow
def test_a_chat_fine_tuning_keeps_its_template_in_the_model_folder(chat_run, chat):
    run_dir, printed = chat_run
    assert "conversations to train on" in printed and "6 left out (" in printed
    assert "<|im_start|>assistant\n" in printed  # the sample: a reply to the prompt as a user's turn
    model = load_folder(run_dir / "model")
    assert model.config.vocab_size == 321 and model.tokenizer == chat
    stored = json.loads((run_dir / "model" / "tokenizer_config.json").read_text())
    assert stored["chat_template"] == CHAT_MODEL_TEMPLATE == load_chat_template(run_dir / "model")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["step"] == 0 and records[-1]["eval_loss"] < records[0]["eval_loss"]


@pytest.mark.slow
def test_evaluate_reports_the_runs_masked_loss(chat_run, chat_data):
    run_dir, _ = chat_run
    final = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    result = evaluate_model(run_dir / "model", str(chat_data), batches=1, batch_size=4)
    assert result["loss"] == pytest.approx(final["eval_loss"], rel=1e-6)  # the same eval step and windows
    assert 0 < result["tokens"] < 4 * SOURCE_MODEL.context_length  # the assistant's tokens only


@pytest.mark.slow
def test_export_hf_carries_the_template_and_its_token(chat_run, tmp_path):
    run_dir, _ = chat_run
    out = export_hf(run_dir / "model", tmp_path / "hf")
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == CHAT_MODEL_TEMPLATE
    added = json.loads((out / "tokenizer.json").read_text())["added_tokens"]
    assert {"<|im_start|>": 320}.items() <= {t["content"]: t["id"] for t in added}.items()


def test_chat_data_needs_a_model_to_fine_tune(chat_data, tmp_path, tiny_tokenizer_dir):
    run = tiny_run(tmp_path, data=str(chat_data), tokenizer=str(tiny_tokenizer_dir))
    with pytest.raises(RunConfigError, match=r"holds conversations .*pass --init-from MODEL"):
        train(run, log=lambda *a: None)
    assert not any(tmp_path.iterdir())


CHAT_MODEL_FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "chat_template" / "chat_model.json"


def test_transformers_renders_the_ids_our_chat_model_trains_on():
    """tests/fixtures/make_chat_fixture.py --chat-model: transformers' apply_chat_template on the
    export-hf of a chat fine-tuning of the shipped model. Our render and encoding give its ids, and
    the ids a row trains on (each piece encoded on its own) are those same ids."""
    expected = json.loads(CHAT_MODEL_FIXTURE.read_text(encoding="utf-8"))
    assert expected["templates"]["chat-model"] == CHAT_MODEL_TEMPLATE, "remake the fixture"
    tokenizer = chat_tokenizer(load_tokenizer("default"), None)
    eot = tokenizer.eot_token
    assert expected["bos_token"] == expected["eos_token"] == eot
    for case in expected["cases"]:
        messages, prompt = case["messages"], case["add_generation_prompt"]
        text = render_chat(
            messages, CHAT_MODEL_TEMPLATE, bos_token=eot, eos_token=eot, add_generation_prompt=prompt
        )
        assert text == case["text"]
        assert tokenizer.encode(text, allow_special=True) == case["ids"], case["name"]
        if any(m["role"] == "assistant" for m in messages):
            ids, _ = ChatEncoder(tokenizer, context=256)(json.dumps(messages))
            assert case["ids"][: len(ids)] == ids, case["name"]
