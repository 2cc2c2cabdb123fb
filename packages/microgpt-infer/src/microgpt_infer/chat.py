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
    "CHAT_TEMPLATE_FILE",
    "DEFAULT_CHAT_STOP",
    "DEFAULT_CHAT_TEMPLATE",
    "ROLES",
    "ChatTemplateError",
    "load_chat_template",
    "render_chat",
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
    if template is not None and not isinstance(template, str):
        raise ChatTemplateError(f"a chat template must be a string, got {_kind(template)}")
    compiled = _compile(DEFAULT_CHAT_TEMPLATE if template is None else template)
    try:
        return compiled.render(
            messages=checked, bos_token=bos_token, eos_token=eos_token,
            add_generation_prompt=bool(add_generation_prompt),
        )  # fmt: skip
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
