"""Chat templates: a list of messages rendered into the one text a model continues.

Hugging Face's convention, as transformers' `apply_chat_template` runs it: a model folder carries a
Jinja template (`load_chat_template`), rendered in a sandbox with the variables

    messages               [{"role": "system" | "user" | "assistant", "content": str}, ...]
    bos_token, eos_token   the tokenizer's spellings (text, not ids)
    add_generation_prompt  True: end with what opens the assistant's next turn
    raise_exception(msg)   a template's own refusal (a `ChatTemplateError` carrying `msg`)

and transformers' helpers (the `tojson` filter, `strftime_now`, `{% break %}`/`{% continue %}`). The
text is then encoded with special tokens allowed, as transformers' tokenizer does: a template's
``{{ eos_token }}`` becomes that token's id, not its spelling.

A base model (the shipped one, anything `train` makes) has no template; `DEFAULT_CHAT_TEMPLATE` is a
plain one that reads as prose, which a model trained on text continues:

    System: You answer in one sentence.

    User: What is a list?

    Assistant:

Each message is "Role: content", the turns are separated by a blank line, and the generation prompt
is "Assistant:" with no trailing space (the model's first token then carries its own leading space,
as the BPE split wants). No special token appears: an end-of-text between turns would tell a base
model a new document began. Such a model ends its turn by writing the next "User:" itself, so stop
generation at `DEFAULT_CHAT_STOP`. `export-hf` writes this template into an export that has none, so
transformers (`apply_chat_template`, `transformers serve`) chats with it the same way.

A chat model (one `train` fine-tuned on conversations, from a model without a template of its own)
gets `CHAT_MODEL_TEMPLATE`, ChatML's layout with the end-of-text token closing every turn:

    <|im_start|>system\nYou answer in one sentence.<|endoftext|><|im_start|>user\nWhat is a
    list?<|endoftext|><|im_start|>assistant\n

Its tokenizer gains `CHAT_MODEL_TOKENS` (``<|im_start|>``) as a special token. Ending a turn with
end-of-text lets every reader stop where the model's turn ends with nothing more to configure: our
engine and server at the tokenizer's end-of-text, transformers at the export's `eos_token_id`. The
model folder carries the template in `tokenizer_config.json` (Hugging Face's `chat_template` key),
which `load_chat_template` reads. `render_turns` cuts a conversation into the pieces an assistant
wrote and the rest: training counts the loss on the first only.

The sandbox is jinja2's `ImmutableSandboxedEnvironment` (templates come from downloaded folders:
untrusted code); here an unsafe attribute (``__class__``, ``__subclasses__``...) is an error at once,
not the empty value jinja2 gives it. jinja2 is imported only when a template is rendered: it comes
with the ``serve`` extra (``pip install "microgpt-infer[serve]"``).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from microgpt_core.jsonfile import read_json_object
from microgpt_data.tokenizer_files import CONFIG_FILE as TOKENIZER_CONFIG_FILE
from microgpt_infer.errors import InferError

__all__ = [
    "CHAT_MODEL_TEMPLATE",
    "CHAT_MODEL_TOKENS",
    "CHAT_TEMPLATE_FILE",
    "DEFAULT_CHAT_STOP",
    "DEFAULT_CHAT_TEMPLATE",
    "ROLES",
    "ChatTemplateError",
    "load_chat_template",
    "render_chat",
    "render_reply_prompt",
    "render_turns",
]

ROLES = ("system", "user", "assistant")
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # transformers 5 writes it beside tokenizer_config.json
_FIELD = "chat_template"  # tokenizer_config.json's field: a str, or named templates
_OPTIONAL_KEYS = ("name",)  # OpenAI's participant name, passed to the template as it is
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if not loop.first %}{{ '\\n\\n' }}{% endif %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\\n\\nAssistant:' }}{% endif %}"
)
DEFAULT_CHAT_STOP = ("\nUser:", "\nSystem:")  # where a base model starts the next turn itself
CHAT_MODEL_TOKENS = ("<|im_start|>",)  # the special tokens CHAT_MODEL_TEMPLATE needs of a tokenizer
CHAT_MODEL_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
_NO_JINJA = 'chat templates need jinja2: pip install "microgpt-infer[serve]"'


class ChatTemplateError(InferError):
    """Bad chat messages (names the index and field), a template file or field that is not a template
    (names the file and field), or a template that fails or refuses to render (its message)."""


def load_chat_template(folder: str | os.PathLike[str]) -> str | None:
    """The chat template a model folder carries, or None when it has none.

    `chat_template.jinja` when the folder has one (transformers 5 writes it), else the `chat_template`
    field of `tokenizer_config.json`: a string, or named templates (a list of ``{"name", "template"}``
    as transformers writes them, or a ``{name: template}`` object), of which "default" is taken.

    Raises:
      ChatTemplateError: the file is not UTF-8 or not JSON, or the field is not a template (names both).
    """
    folder = Path(folder)
    file = folder / CHAT_TEMPLATE_FILE
    if file.is_file():
        try:
            return file.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ChatTemplateError(f"{file}: cannot be read as UTF-8 text ({e})") from None
    config = folder / TOKENIZER_CONFIG_FILE
    if not config.is_file():
        return None
    value = read_json_object(config, error=ChatTemplateError).get(_FIELD)
    where = f"{config}: field '{_FIELD}'"
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, dict) and set(v) == {"name", "template"} for v in value):
        value = {v["name"]: v["template"] for v in value}
    if isinstance(value, dict):
        if "default" not in value:
            names = ", ".join(repr(name) for name in value) or "none"
            raise ChatTemplateError(f"{where} names no 'default' template (it has {names})")
        if not isinstance(value["default"], str):
            raise ChatTemplateError(
                f"{where}: 'default' must be a string, got {json.dumps(value['default'])}"
            )
        return value["default"]
    raise ChatTemplateError(
        f'{where} must be a string or a list of {{"name", "template"}} objects, got {json.dumps(value)[:80]}'
    )


def render_chat(
    messages: Sequence[dict[str, Any]], template: str | None = None, *, bos_token: str = "",
    eos_token: str = "", add_generation_prompt: bool = True,
) -> str:  # fmt: skip
    """The text of a conversation under a chat template, as transformers' `apply_chat_template` renders it.

    Args:
      messages: a non-empty list of ``{"role": "system" | "user" | "assistant", "content": str}``
        (and optionally "name": str).
      template: Jinja source (`load_chat_template`); None: `DEFAULT_CHAT_TEMPLATE`.
      bos_token, eos_token: the tokenizer's spellings, as the template sees them.
      add_generation_prompt: end with the opening of the assistant's turn.
    Returns:
      The text; encode it with special tokens allowed (`Tokenizer.encode(text, allow_special=True)`).
    Raises:
      ChatTemplateError: a message is malformed (names its index and field), the template does not
        compile, refuses (`raise_exception`), reaches outside the sandbox, or fails.
      InferError: jinja2 is not installed.
    """
    checked = _check_messages(messages)
    return _render(_template(template), checked, bos_token, eos_token, bool(add_generation_prompt))


def render_reply_prompt(
    messages: Sequence[dict[str, Any]], template: str | None, eot_token: str
) -> tuple[str, tuple[str, ...]]:
    """What a model continues to write the assistant's next message, and the stop strings that reply
    needs besides end-of-text: `render_chat` with the generation prompt, the tokenizer's end-of-text
    spelling `eot_token` as both bos_token and eos_token (a chat model's turns end with it), and
    `DEFAULT_CHAT_STOP` under the default template (`template` None), where a base model starts the
    next turn itself. `generate_chat` and `serve`'s chat endpoint both use it.
    """
    text = render_chat(messages, template, bos_token=eot_token, eos_token=eot_token)
    return text, (DEFAULT_CHAT_STOP if template is None else ())


def render_turns(
    messages: Sequence[dict[str, Any]], template: str | None = None, *, bos_token: str = "",
    eos_token: str = "",
) -> list[tuple[str, bool]]:  # fmt: skip
    """The text of a whole conversation (no generation prompt) in pieces: (text, True) for what each
    assistant message adds after the generation prompt (its content and the template's end of turn:
    what a model learns to write), (text, False) for the rest. The pieces join to `render_chat`'s text.

    Assistant turn i is told apart as transformers' trainers did before `{% generation %}` blocks:
    render(messages[:i], add_generation_prompt=True) must be a prefix of render(messages[:i + 1]),
    which must be a prefix of the whole; the difference is the turn.

    Args: as for `render_chat`.
    Raises:
      ChatTemplateError: as `render_chat`, or the template does not render a conversation turn by
        turn so (it rewrites earlier turns later, or its generation prompt is not the turn's start).
    """
    checked = _check_messages(messages)
    compiled = _template(template)
    render = lambda n, prompt: _render(compiled, checked[:n], bos_token, eos_token, prompt)  # noqa: E731
    whole, pieces, done = render(len(checked), False), [], 0
    for i, message in enumerate(checked):
        if message["role"] != "assistant":
            continue
        before, through = render(i, True), render(i + 1, False)
        if not (through.startswith(before) and whole.startswith(through) and len(before) >= done):
            raise ChatTemplateError(
                f"the chat template does not render messages[{i}] (an assistant turn) as the text before "
                "it and its generation prompt, then its own: the assistant's tokens cannot be told apart"
            )
        pieces += [(whole[done : len(before)], False), (whole[len(before) : len(through)], True)]
        done = len(through)
    pieces.append((whole[done:], False))
    return [(text, written) for text, written in pieces if text]


def _template(template: object) -> Any:
    if template is not None and not isinstance(template, str):
        raise ChatTemplateError(f"a chat template must be a string, got {_kind(template)}")
    return _compile(DEFAULT_CHAT_TEMPLATE if template is None else template)


def _render(compiled: Any, messages: list, bos_token: str, eos_token: str, prompt: bool) -> str:
    try:
        return compiled.render(
            messages=messages, bos_token=bos_token, eos_token=eos_token, add_generation_prompt=prompt
        )
    except ChatTemplateError:  # raise_exception's
        raise
    except Exception as e:  # a template is untrusted code: any failure of it (TemplateError...) is its own
        raise ChatTemplateError(f"the chat template failed: {type(e).__name__}: {e}") from None


def _check_messages(messages: object) -> list[dict[str, str]]:
    """Copies of the messages, checked: each a dict of a known role and a str content."""
    if not isinstance(messages, (list, tuple)) or not messages:
        got = "an empty list" if isinstance(messages, (list, tuple)) else type(messages).__name__
        raise ChatTemplateError(f"messages must be a non-empty list of {{role, content}} objects, got {got}")
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ChatTemplateError(
                f"messages[{i}] must be an object with role and content, got {_kind(message)}"
            )
        for key in ("role", "content"):
            if key not in message:
                raise ChatTemplateError(f"messages[{i}].{key} is missing")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise ChatTemplateError(f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise ChatTemplateError(f"messages[{i}].content must be a string, got {_kind(content)}")
        for key in message:
            if key not in ("role", "content", *_OPTIONAL_KEYS):
                raise ChatTemplateError(
                    f"messages[{i}] has an unknown field {key!r} (fields: role, content, name)"
                )
            if key in _OPTIONAL_KEYS and not isinstance(message[key], str):
                raise ChatTemplateError(f"messages[{i}].{key} must be a string, got {_kind(message[key])}")
        checked.append(dict(message))
    return checked


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


@functools.lru_cache(maxsize=16)
def _compile(template: str) -> Any:
    """The compiled template (cached: a server renders one template many times)."""
    jinja2 = _jinja2()
    try:
        return _environment().from_string(template)
    except jinja2.TemplateError as e:
        line = f" (line {e.lineno})" if getattr(e, "lineno", None) else ""
        raise ChatTemplateError(f"the chat template does not compile{line}: {e}") from None


def _jinja2() -> Any:
    try:
        import jinja2
        import jinja2.sandbox
    except ImportError:
        raise InferError(_NO_JINJA) from None
    return jinja2


@functools.cache
def _environment() -> Any:
    """transformers' environment: the immutable sandbox, trim_blocks and lstrip_blocks, loop controls,
    `raise_exception`, `tojson` (without HTML escapes) and `strftime_now`; unsafe attributes raise."""
    jinja2 = _jinja2()

    class Sandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
        def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
            raise jinja2.sandbox.SecurityError(
                f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe"
            )

    def raise_exception(message: object) -> None:
        raise ChatTemplateError(f"the chat template refused the messages: {message}")

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:  # fmt: skip
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    env = Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env
