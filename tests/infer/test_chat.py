"""Chat templates: `render_chat` against transformers' `apply_chat_template`, the message checks, the
sandbox, the templates a folder carries, and `generate_chat` / `generate --chat`, which reply through them.

tests/fixtures/chat_template/expected.json was written by tests/fixtures/make_chat_fixture.py in the
side venv (transformers 5.25) from an export of the shipped model: the text and token ids of each
conversation under the export's template (our `DEFAULT_CHAT_TEMPLATE`, written by export-hf) and a
Hub template over several lines with the end-of-text token between turns.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from microgpt_core import SamplingError
from microgpt_infer import InferError, generate, generate_chat, generation, load_model, load_tokenizer
from microgpt_infer.chat import (
    CHAT_MODEL_TEMPLATE,
    CHAT_TEMPLATE_FILE,
    DEFAULT_CHAT_STOP,
    DEFAULT_CHAT_TEMPLATE,
    ChatTemplateError,
    load_chat_template,
    render_chat,
    render_turns,
)
from microgpt_infer.cli import main
from tests.infer.conftest import FIXTURES, LLAMA_TINY, byte_tokenizer, save_model

EXPECTED = json.loads((FIXTURES / "chat_template" / "expected.json").read_text(encoding="utf-8"))
USER = [{"role": "user", "content": "hi"}]


def test_the_fixture_was_made_from_our_default_template():
    assert EXPECTED["templates"]["default"] == DEFAULT_CHAT_TEMPLATE, (
        "DEFAULT_CHAT_TEMPLATE changed: remake the fixture (tests/fixtures/make_chat_fixture.py)"
    )


@pytest.mark.parametrize("case", EXPECTED["cases"], ids=lambda c: f"{c['template']}-{c['name']}")
def test_render_chat_gives_transformers_text_and_ids(case):
    tokenizer = load_tokenizer("default")
    text = render_chat(
        case["messages"], EXPECTED["templates"][case["template"]], bos_token=EXPECTED["bos_token"],
        eos_token=EXPECTED["eos_token"], add_generation_prompt=case["add_generation_prompt"],
    )  # fmt: skip
    assert text == case["text"]
    assert tokenizer.encode(text, allow_special=True) == case["ids"]


MULTI = [
    {"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Ask."},
    {"role": "user", "content": "A list?"}, {"role": "assistant", "content": "[1, 2]"},
    {"role": "user", "content": "Thanks"},
]  # fmt: skip


@pytest.mark.parametrize("name", ["chat-model", "default", "zephyr"])
def test_render_turns_cuts_out_what_each_assistant_message_adds(name):
    template = {"chat-model": CHAT_MODEL_TEMPLATE, **EXPECTED["templates"]}[name]
    pieces = render_turns(MULTI, template, eos_token="<E>")
    assert "".join(text for text, _ in pieces) == render_chat(
        MULTI, template, eos_token="<E>", add_generation_prompt=False
    )
    written = [text for text, by_assistant in pieces if by_assistant]
    assert (
        written
        == {
            "chat-model": ["Ask.<E>", "[1, 2]<E>"],  # the content and the turn's end: what the model writes
            "default": [" Ask.", " [1, 2]"],
            "zephyr": ["Ask.<E>\n", "[1, 2]<E>\n"],  # after its generation prompt "<|assistant|>\n"
        }[name]
    )
    assert not pieces[-1][1]  # the last user turn is not the assistant's


def test_the_chat_model_template_ends_every_turn_with_end_of_text():
    text = render_chat(MULTI[:3], CHAT_MODEL_TEMPLATE, eos_token="<|endoftext|>")
    assert text == (
        "<|im_start|>system\nBe brief.<|endoftext|><|im_start|>assistant\nAsk.<|endoftext|>"
        "<|im_start|>user\nA list?<|endoftext|><|im_start|>assistant\n"
    )


def test_a_template_that_rewrites_earlier_turns_cannot_tell_the_assistant_apart():
    template = "{% for m in messages %}{{ m['content'] if loop.last else '-' }}{% endfor %}"
    with pytest.raises(
        ChatTemplateError, match=r"messages\[1\] \(an assistant turn\).* cannot be told apart"
    ):
        render_turns(MULTI, template)


def test_the_default_template_reads_as_prose():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is a list?"},
        {"role": "assistant", "content": "A sequence."},
        {"role": "user", "content": "And a tuple?"},
    ]
    assert render_chat(messages) == (
        "System: Be brief.\n\nUser: What is a list?\n\nAssistant: A sequence.\n\n"
        "User: And a tuple?\n\nAssistant:"
    )
    assert (
        render_chat(messages[:2], add_generation_prompt=False) == "System: Be brief.\n\nUser: What is a list?"
    )


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([], "messages must be a non-empty list of {role, content} objects, got an empty list"),
        ("hi", "messages must be a non-empty list of {role, content} objects, got str"),
        ([*USER, "hi"], "messages[1] must be an object with role and content, got str"),
        ([{"content": "hi"}], "messages[0].role is missing"),
        ([{"role": "user"}], "messages[0].content is missing"),
        ([*USER, USER[0], {"role": "tool", "content": "x"}],
         "messages[2].role must be one of system, user, assistant, got 'tool'"),
        ([{"role": "user", "content": None}], "messages[0].content must be a string, got null"),
        ([{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
         "messages[0].content must be a string, got list"),
        ([{"role": "user", "content": "hi", "tool_calls": []}],
         "messages[0] has an unknown field 'tool_calls' (fields: role, content, name)"),
        ([{"role": "user", "content": "hi", "name": 3}], "messages[0].name must be a string, got int"),
    ],
)  # fmt: skip
def test_bad_messages_name_the_index_and_field(messages, message):
    with pytest.raises(ChatTemplateError) as e:
        render_chat(messages)
    assert str(e.value) == message
    assert isinstance(e.value, InferError) and isinstance(e.value, ValueError)


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__ }}",  # jinja2 alone renders this as "" silently
        "{{ messages.__class__.__base__ }}",
        "{{ raise_exception.__globals__ }}",
        "{% set x = messages.append({'role': 'user', 'content': 'x'}) %}",  # immutable
        "{{ messages[0].clear() }}",
    ],
)
def test_the_sandbox_refuses_unsafe_templates(template):
    with pytest.raises(ChatTemplateError, match="the chat template failed: SecurityError"):
        render_chat(USER, template)


def test_raise_exception_and_template_errors():
    template = (
        "{% if messages[0]['role'] != 'system' %}{{ raise_exception('a system message first') }}{% endif %}"
    )
    with pytest.raises(
        ChatTemplateError, match="^the chat template refused the messages: a system message first$"
    ):
        render_chat(USER, template)
    with pytest.raises(ChatTemplateError, match=r"does not compile \(line 2\)"):
        render_chat(USER, "ok\n{% for m in messages %}")
    with pytest.raises(ChatTemplateError, match="failed: ZeroDivisionError"):
        render_chat(USER, "{{ 1 // 0 }}")
    with pytest.raises(ChatTemplateError, match="a chat template must be a string, got dict"):
        render_chat(USER, {"default": "x"})


def test_what_a_template_sees():
    template = (
        "{{ bos_token }}{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "{{ m | tojson }}{{ m.name }}{% endfor %}{{ add_generation_prompt }}{{ eos_token }}"
        "{{ strftime_now('%Y') | length }}"
    )
    messages = [{"role": "user", "content": "é <b>", "name": "ann"}, {"role": "user", "content": "no"}]
    assert render_chat(messages, template, bos_token="<s>", eos_token="</s>") == (
        '<s>{"role": "user", "content": "é <b>", "name": "ann"}annTrue</s>4'
    )


def test_a_folders_own_template(tmp_path):
    ours = save_model(tmp_path / "ours")
    assert load_chat_template(ours) is None  # our tokenizer_config.json has no chat_template
    (ours / CHAT_TEMPLATE_FILE).write_text("{{ messages[0]['content'] }}!", encoding="utf-8")
    assert render_chat(USER, load_chat_template(ours)) == "hi!"
    assert load_chat_template(LLAMA_TINY) is None
    hf = tmp_path / "hf"
    hf.mkdir()
    for value, expected in [
        ("{{ eos_token }}", "{{ eos_token }}"),
        ([{"name": "tool_use", "template": "t"}, {"name": "default", "template": "d"}], "d"),
        ({"default": "d", "rag": "r"}, "d"),
        (None, None),
    ]:
        (hf / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "chat_template": value}))
        assert load_chat_template(hf) == expected
    (hf / CHAT_TEMPLATE_FILE).write_text("file wins")  # as transformers 5 reads them
    assert load_chat_template(hf) == "file wins"


def test_a_bad_template_field_names_the_file_and_field(tmp_path):
    file = tmp_path / "tokenizer_config.json"
    for value, message in [
        (3, 'field \'chat_template\' must be a string or a list of {"name", "template"} objects, got 3'),
        (
            [{"name": "rag", "template": "r"}],
            "field 'chat_template' names no 'default' template (it has 'rag')",
        ),
        ({"default": 1}, "field 'chat_template': 'default' must be a string, got 1"),
    ]:
        file.write_text(json.dumps({"chat_template": value}))
        with pytest.raises(ChatTemplateError) as e:
            load_chat_template(tmp_path)
        assert str(e.value) == f"{file}: {message}"
    file.write_text('{"chat_template": ')
    with pytest.raises(ChatTemplateError, match=f"^{file}: "):
        load_chat_template(tmp_path)
    (tmp_path / CHAT_TEMPLATE_FILE).write_bytes(b"\xff")
    with pytest.raises(ChatTemplateError, match=f"^{tmp_path / CHAT_TEMPLATE_FILE}: cannot be read as UTF-8"):
        load_chat_template(tmp_path)


def test_without_jinja2_import_works_and_rendering_says_what_to_install():
    code = (
        "import sys; sys.modules['jinja2'] = None\n"
        "from microgpt_infer.chat import render_chat\nfrom microgpt_infer.errors import InferError\n"
        "try:\n    render_chat([{'role': 'user', 'content': 'hi'}])\n"
        "except InferError as e:\n    print(e)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout == 'chat templates need jinja2: pip install "microgpt-infer[serve]"\n'


# -- generate_chat and `generate --chat` ------------------------------------------------------------
CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
# A template with the end-of-text token closing each turn, as a chat model's (the byte tokenizer has
# no <|im_start|>)
EOT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
GREEDY = dict(rng=0, max_new_tokens=12, temperature=0)


def test_generate_chat_feeds_the_folders_template_with_its_special_tokens(model_dir, tmp_path, monkeypatch):
    folder = Path(shutil.copytree(model_dir, tmp_path / "chat"))
    (folder / CHAT_TEMPLATE_FILE).write_text(EOT_TEMPLATE, encoding="utf-8")
    chat_model = load_model(folder)
    prompts, engine = [], generation.generate_tokens

    def spy(params, config, prompt, lengths, **options):
        prompts.append(np.asarray(prompt)[0, : int(lengths[0])].tolist())
        return engine(params, config, prompt, lengths, **options)

    monkeypatch.setattr(generation, "generate_tokens", spy)
    reply = generate_chat(chat_model, CHAT, **GREEDY)
    text = "system: be brief<|endoftext|>user: hi<|endoftext|>assistant:"
    ids = byte_tokenizer().encode(text, allow_special=True)
    assert prompts == [ids] and ids.count(256) == 2  # the end-of-text token itself, not its spelling
    assert reply == generate(chat_model, text, allow_special=True, **GREEDY)  # no stop strings added
    generate(chat_model, text, rng=0, max_new_tokens=3)  # without allow_special: spelled out, byte by byte
    assert prompts[-1] == list(text.encode())


def test_generate_chat_without_a_template_writes_prose_and_stops_at_the_next_turn(model, monkeypatch):
    assert load_chat_template(model.source) is None
    reply = generate_chat(model, CHAT, rng=1, max_new_tokens=20)
    assert reply == generate(model, render_chat(CHAT), rng=1, max_new_tokens=20, stop=DEFAULT_CHAT_STOP)
    calls = []
    monkeypatch.setattr(generation, "generate", lambda model, text, **options: calls.append((text, options)))
    generate_chat(model, CHAT, stop="x", max_new_tokens=5)
    assert calls == [
        ("System: be brief\n\nUser: hi\n\nAssistant:",
         {"stop": ("x", *DEFAULT_CHAT_STOP), "allow_special": True, "max_new_tokens": 5}),
    ]  # fmt: skip


def test_generate_chat_refuses_bad_messages_and_arguments(model):
    with pytest.raises(ChatTemplateError, match=r"messages\[1\]\.role must be one of system, user"):
        generate_chat(model, [CHAT[0], {"role": "bot", "content": "hi"}])
    with pytest.raises(InferError, match="drop allow_special"):
        generate_chat(model, CHAT, allow_special=False)
    with pytest.raises(InferError, match="model must be a Model"):
        generate_chat(str(model.source), CHAT)
    with pytest.raises(SamplingError, match=r"max_new_tokens must be an integer in \[1, 63\]"):
        generate_chat(model, CHAT, max_new_tokens=0)


def test_generate_chat_command_prints_the_reply_alone(model_dir, model, capsys):
    argv = ["--chat", "hi", "--system", "be brief", "--model", str(model_dir), "--temperature", "0"]
    assert main([*argv, "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out == generate_chat(model, CHAT, **GREEDY) + "\n"
