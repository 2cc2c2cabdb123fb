"""OpenAI's response shapes: completions, chat completions, their stream chunks, log-probabilities.

Plain dicts, as the `openai` client's types (`Completion`, `ChatCompletion`, `ChatCompletionChunk`)
read them. Log-probabilities are those of the model's raw distribution (engine `Token`).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from microgpt_data.tokenizer import Tokenizer
from microgpt_infer.engine.requests import Token

__all__ = [
    "chat_choice",
    "chat_chunk",
    "chat_completion",
    "chat_delta",
    "chat_logprobs",
    "completion",
    "completion_choice",
    "completion_logprobs",
    "new_id",
    "sse",
    "usage",
]


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event: `data: {json}` and a blank line."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _text(tokenizer: Tokenizer, token_id: int) -> str:
    return tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")


def completion_logprobs(tokenizer: Tokenizer, tokens: list[Token | int], offset: int) -> dict[str, Any]:
    """/v1/completions `logprobs`: tokens, token_logprobs, top_logprobs (token -> logprob) and
    text_offset (each token's start in the choice's text, from `offset`). A bare id is a token that
    nothing scored (an echoed prompt's first): null log-probabilities."""
    ids = [t if isinstance(t, int) else t.id for t in tokens]
    texts = [_text(tokenizer, i) for i in ids]
    offsets = []
    for text in texts:
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": texts,
        "token_logprobs": [None if isinstance(t, int) else t.logprob for t in tokens],
        "top_logprobs": [
            None
            if isinstance(t, int)
            else {_text(tokenizer, i): lp for i, lp in zip(t.top_ids, t.top_logprobs, strict=True)}
            for t in tokens
        ],
        "text_offset": offsets,
    }


def chat_logprobs(tokenizer: Tokenizer, tokens: list[Token]) -> dict[str, Any]:
    """/v1/chat/completions `logprobs`: {"content": [{token, logprob, bytes, top_logprobs}]}."""

    def entry(token_id: int, logprob: float) -> dict[str, Any]:
        raw = tokenizer.token_bytes(token_id)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

    return {
        "content": [
            {
                **entry(t.id, t.logprob),
                "top_logprobs": [entry(i, lp) for i, lp in zip(t.top_ids, t.top_logprobs, strict=True)],
            }
            for t in tokens
        ],
        "refusal": None,
    }


def completion(
    id_: str,
    model: str,
    choices: list[dict[str, Any]],
    use: dict[str, int] | None,
    created: int | None = None,
) -> dict[str, Any]:
    """A `text_completion` (also each stream chunk, whose choices hold the new text)."""
    return _envelope("text_completion", id_, model, choices, use, created)


def completion_choice(index: int, text: str, logprobs: Any, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def chat_completion(
    id_: str, model: str, choices: list[dict[str, Any]], use: dict[str, int]
) -> dict[str, Any]:
    return _envelope("chat.completion", id_, model, choices, use)


def chat_choice(index: int, content: str, logprobs: Any, finish_reason: str) -> dict[str, Any]:
    return {
        "index": index,
        "message": {"role": "assistant", "content": content, "refusal": None},
        "logprobs": logprobs,
        "finish_reason": finish_reason,
    }


def chat_chunk(
    id_: str, model: str, created: int, choices: list[dict[str, Any]], use: dict[str, int] | None = None
) -> dict[str, Any]:
    return _envelope("chat.completion.chunk", id_, model, choices, use, created)


def _envelope(
    kind: str,
    id_: str,
    model: str,
    choices: list[dict[str, Any]],
    use: dict[str, int] | None,
    created: int | None = None,
) -> dict[str, Any]:
    """OpenAI's body around the choices: id, object, created (now by default), model, and the usage
    when given."""
    body = {
        "id": id_,
        "object": kind,
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": choices,
        "system_fingerprint": None,
    }
    if use is not None:
        body["usage"] = use
    return body


def chat_delta(index: int, delta: dict[str, Any], logprobs: Any, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
