"""Reading OpenAI's request bodies: `/v1/completions` and `/v1/chat/completions`, with vLLM's and
llama-server's sampling extensions (`top_k`, `min_p`, `repetition_penalty`).

Every field is checked here for its type; the ranges of the sampling fields are checked by the
engine's `Request` (core's `check_sampling` and `check_penalties`), whose `SamplingError` names the
field, and `param_of` turns that name into the OpenAI parameter. Anything wrong is a `RequestError`:
a 4xx with OpenAI's error body naming the parameter.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from microgpt_infer.row_text import check_stops

__all__ = ["ChatMessage", "Job", "RequestError", "param_of", "parse_json", "read_chat", "read_completion"]

MAX_STOPS = 4  # OpenAI's limit on `stop`
MAX_COMPLETION_LOGPROBS = 5  # /v1/completions `logprobs`
MAX_CHAT_LOGPROBS = 20  # /v1/chat/completions `top_logprobs`
ROLES = ("system", "user", "assistant")
# Fields that would change what is generated in ways this server does not do: refused, not ignored.
UNSUPPORTED = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
    "logit_bias",
    "suffix",
)


class RequestError(Exception):
    """A request the server refuses: HTTP `status` with OpenAI's error body."""

    def __init__(
        self, message: str, param: str | None = None, *, status: int = 400, code: str | None = None,
        headers: dict[str, str] | None = None, type: str = "invalid_request_error",
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code
        self.headers, self.type = headers or {}, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


ChatMessage = dict[str, str]


@dataclass(frozen=True, kw_only=True)
class Job:
    """One parsed request: what to generate, how many times, and how to answer.

    Attributes:
      prompts: completions: each prompt, a str or a list of token ids (each prompt its own choices);
        chat: empty (see `messages`).
      messages: chat: the conversation, each {"role", "content"}.
      n: choices per prompt.
      max_tokens: None: the default (16 for completions, all the room left for chat); 0 only for
        completions with echo: the prompt alone, scored when logprobs is set.
      sampling: `Request` keyword arguments (temperature, top_k, top_p, min_p and the penalties).
      seed: None: a random one; choice i draws with seed + i (mod 2**32).
      logprobs: None: off; else how many alternatives each token reports.
    """

    model: str | None
    prompts: list[str | list[int]] = field(default_factory=list)
    messages: list[ChatMessage] = field(default_factory=list)
    n: int = 1
    max_tokens: int | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    stops: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    logprobs: int | None = None
    echo: bool = False


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a RequestError."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise RequestError(f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object, got {type(body).__name__}")
    return body


def param_of(message: str, chat: bool) -> str | None:
    """The OpenAI parameter a `SamplingError` message names (its first word is the field)."""
    name = message.split(" ", 1)[0]
    renamed = {"max_new_tokens": "max_tokens", "logprobs": "top_logprobs" if chat else "logprobs"}
    if name in renamed:
        return renamed[name]
    if name in ("prompt", "the") or name.startswith("prompt"):
        return "messages" if chat else "prompt"
    return name if name.isidentifier() else None


def read_completion(body: dict[str, Any], *, max_n: int) -> Job:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompts: list = [prompt]
    elif isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        prompts = [list(prompt)]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    elif isinstance(prompt, list) and prompt and all(_token_list(p) for p in prompt):
        prompts = [list(p) for p in prompt]
    else:
        raise RequestError(
            "prompt must be a string, a non-empty list of strings, a list of token ids or a list of "
            f"non-empty lists of token ids, got {_show(prompt)}", "prompt",
        )  # fmt: skip
    logprobs = _optional(body, "logprobs", int)
    if logprobs is not None and not 0 <= logprobs <= MAX_COMPLETION_LOGPROBS:
        raise RequestError(f"logprobs must be in [0, {MAX_COMPLETION_LOGPROBS}], got {logprobs}", "logprobs")
    echo = bool(_optional(body, "echo", bool))
    return _common(body, max_n=max_n, prompts=prompts, logprobs=logprobs, echo=echo)


def read_chat(body: dict[str, Any], *, max_n: int) -> Job:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(
            f"messages must be a non-empty list of messages, got {_show(messages)}", "messages"
        )
    checked = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(f"messages[{i}] must be an object, got {_show(message)}", "messages")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise RequestError(
                f"messages[{i}].role must be one of {', '.join(ROLES)}, got {_show(role)}", "messages"
            )
        if isinstance(content, list) and all(_text_part(p) for p in content):
            content = "".join(p["text"] for p in content)  # [{"type": "text", "text": ...}, ...]
        if not isinstance(content, str):
            raise RequestError(f"messages[{i}].content must be a string, got {_show(content)}", "messages")
        checked.append({"role": role, "content": content})
    logprobs = None
    if _optional(body, "logprobs", bool):
        logprobs = _optional(body, "top_logprobs", int) or 0
        if not 0 <= logprobs <= MAX_CHAT_LOGPROBS:
            raise RequestError(
                f"top_logprobs must be in [0, {MAX_CHAT_LOGPROBS}], got {logprobs}", "top_logprobs"
            )
    elif _optional(body, "top_logprobs", int) is not None:
        raise RequestError("top_logprobs needs logprobs: true", "top_logprobs")
    return _common(body, max_n=max_n, messages=checked, logprobs=logprobs)


def _common(body: dict[str, Any], *, max_n: int, **fields: Any) -> Job:
    """The fields both endpoints share."""
    for name in UNSUPPORTED:
        if body.get(name) is not None:
            raise RequestError(f"{name} is not supported by this server", name)
    model = _optional(body, "model", str)
    n = _optional(body, "n", int)
    n = 1 if n is None else n
    if not 1 <= n <= max_n:
        raise RequestError(f"n must be in [1, {max_n}], got {n}", "n")
    best_of = _optional(body, "best_of", int)
    if best_of is not None and best_of != n:
        raise RequestError("best_of is not supported (only best_of = n)", "best_of")
    max_tokens = _optional(body, "max_completion_tokens", int)
    name = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, name = _optional(body, "max_tokens", int), "max_tokens"
    lowest = 0 if fields.get("echo") else 1  # echo with 0: the prompt alone, scored (legacy completions)
    if max_tokens is not None and max_tokens < lowest:
        raise RequestError(f"{name} must be an integer >= {lowest}, got {max_tokens}", name)
    sampling: dict[str, Any] = {}
    for key in (
        "temperature",
        "top_p",
        "min_p",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
    ):
        value = _optional(body, key, float)
        if value is not None:
            sampling[key] = value
    top_k = _optional(body, "top_k", int)
    if top_k is not None and top_k not in (-1, 0):  # vLLM's -1 (and 0): no top-k filter
        sampling["top_k"] = top_k
    seed = _optional(body, "seed", int)
    if seed is not None and not 0 <= seed < 2**64:
        raise RequestError(f"seed must be an integer in [0, 2**64), got {seed}", "seed")
    stop = body.get("stop")
    if isinstance(stop, list) and len(stop) > MAX_STOPS:
        raise RequestError(f"stop holds at most {MAX_STOPS} strings, got {len(stop)}", "stop")
    try:
        stops = check_stops(stop)
    except ValueError as e:
        raise RequestError(str(e), "stop") from None
    stream = bool(_optional(body, "stream", bool))
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or not stream):
        why = "an object" if stream else "only allowed with stream: true"
        raise RequestError(f"stream_options must be {why}", "stream_options")
    include_usage = bool(_optional(options or {}, "include_usage", bool, "stream_options.include_usage"))
    return Job(
        model=model, n=n, max_tokens=max_tokens, sampling=sampling, seed=seed, stops=stops, stream=stream,
        include_usage=include_usage, **fields,
    )  # fmt: skip


def _optional(body: dict[str, Any], key: str, kind: type, param: str | None = None) -> Any:
    """body[key] checked to be of `kind` (int: no bool; float: any finite real), or None if absent."""
    value = body.get(key)
    if value is None:
        return None
    if kind is int:
        ok = _is_int(value)
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, kind)
    if not ok:
        what = {int: "an integer", float: "a finite number", bool: "a boolean", str: "a string"}[kind]
        raise RequestError(f"{key} must be {what}, got {_show(value)}", param or key)
    return float(value) if kind is float else value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token_list(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(_is_int(t) for t in value)


def _text_part(part: object) -> bool:
    return isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)


def _show(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, float) or math.isfinite(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
