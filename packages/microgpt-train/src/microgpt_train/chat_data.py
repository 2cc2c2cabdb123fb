"""Chat fine-tuning: conversations rendered by a chat template, the loss on the assistant's tokens.

A run whose `--data` holds conversations (rows of OpenAI-style ``messages``,
`microgpt_data.chats.is_chat_data`) fine-tunes its `--init-from` model into a chat model:

- **The template** is the source's (`microgpt_infer.chat.load_chat_template`: its
  tokenizer_config.json or chat_template.jinja) when it has one, else the project's
  `CHAT_MODEL_TEMPLATE`, whose special tokens (`CHAT_MODEL_TOKENS`) the tokenizer gains
  (`chat_tokenizer`: new ids after its largest). The model's vocabulary grows to hold them, and
  `grow_embeddings` starts each new token's embedding (and output column, for an untied head) at the
  mean of the source's, as Hugging Face's `resize_token_embeddings` starts them near it. The
  tokenizer carries the template, so the exported folder has it in `tokenizer_config.json`.
- **A row** becomes ids and a loss mask (`ChatEncoder`): `render_turns` cuts the conversation into
  what each assistant message adds (its content and the template's end of turn) and the rest; each
  piece is encoded on its own, special tokens allowed, as generation sees it (the prompt encoded up
  to the assistant's turn, the reply token by token); the mask is 1 on the assistant's pieces. An
  assistant message with OpenAI's ``"weight": 0`` is rendered but not trained.
- **Rows it cannot train on** are left out and counted by reason (`REASONS`), and the run says the
  counts before it starts (`count_rows`): not a list of messages, a malformed message, a role other
  than system/user/assistant, a content that is not a string, no assistant turn (to train), longer
  than the context (it could never be seen whole: the loader never splits a conversation that fits
  in a row, `microgpt_data.masked_packing`), or one the template refuses.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from microgpt_data import Tokenizer
from microgpt_infer.chat import (
    CHAT_MODEL_TEMPLATE,
    CHAT_MODEL_TOKENS,
    ROLES,
    ChatTemplateError,
    load_chat_template,
    render_turns,
)

__all__ = [
    "REASONS",
    "ChatEncoder",
    "chat_model",
    "chat_tokenizer",
    "count_rows",
    "describe",
    "grow_embeddings",
]

REASONS = {
    "messages": "without a list of messages",
    "message": "with a malformed message (role, content, and optionally name and weight 0 or 1)",
    "role": f"with a role other than {', '.join(ROLES)}",
    "content": "with a content that is not a string",
    "assistant": "with no assistant turn to train on",
    "long": "longer than the context",
    "template": "refused by the chat template",
}
_KEYS = ("role", "content", "name")  # what the template sees of a message (OpenAI's weight is ours)
_OPTIONAL = ("name", "weight")


def chat_tokenizer(tokenizer: Tokenizer, template: str | None) -> Tokenizer:
    """`tokenizer` carrying `template`, or without one `CHAT_MODEL_TEMPLATE` and its special tokens
    (those it lacks get the ids after its largest)."""
    special = dict(tokenizer.special_tokens)
    if template is None:
        template = CHAT_MODEL_TEMPLATE
        for token in CHAT_MODEL_TOKENS:
            special.setdefault(token, max([*tokenizer.ranks.values(), *special.values()]) + 1)
    return Tokenizer(
        tokenizer.ranks, special, pattern=tokenizer.pattern, name=tokenizer.name,
        eot_token=tokenizer.eot_token, chat_template=template,
    )  # fmt: skip


def grow_embeddings(params: dict, known: int, vocab_size: int, new_ids: Sequence[int]) -> dict:
    """`params` with `vocab_size` token rows (and head columns, for an untied head), the rows of
    `new_ids` set to the mean of the first `known` (the tokens the model was trained on)."""
    out = dict(params)
    table = np.asarray(params["embed"]["tokens"], np.float32)  # (V, D)
    table = np.concatenate([table, np.zeros((vocab_size - len(table), table.shape[1]), np.float32)])
    table[list(new_ids)] = table[:known].mean(axis=0)  # (V', D)
    out["embed"] = {**params["embed"], "tokens": table}
    if "head" in params:
        head = np.asarray(params["head"]["w"], np.float32)  # (D, V)
        head = np.concatenate([head, np.zeros((head.shape[0], vocab_size - head.shape[1]), np.float32)], 1)
        head[:, list(new_ids)] = head[:, :known].mean(axis=1, keepdims=True)  # (D, V')
        out["head"] = {**params["head"], "w": head}
    return out


def chat_model(model: Any) -> Any:
    """The `microgpt_infer.Model` a chat fine-tuning starts from: its tokenizer with the chat
    template (`chat_tokenizer`), its vocabulary and embeddings grown for the new tokens."""
    tokenizer = chat_tokenizer(model.tokenizer, load_chat_template(model.source))
    new_ids = [i for t, i in tokenizer.special_tokens.items() if t not in model.tokenizer.special_tokens]
    vocab_size = max(model.config.vocab_size, tokenizer.vocab_size)
    params = grow_embeddings(model.params, model.tokenizer.vocab_size, vocab_size, new_ids)
    return dataclasses.replace(
        model, params=params, config=model.config.replace(vocab_size=vocab_size), tokenizer=tokenizer
    )


@dataclasses.dataclass(frozen=True)
class ChatEncoder:
    """One row of chat data (its messages as JSON text) -> (ids, mask), for `PackedLoader(encode=)`.

    Attributes:
      tokenizer: the chat model's tokenizer; its `chat_template` renders the rows.
      context: T: a conversation of more tokens is left out.
    """

    tokenizer: Tokenizer
    context: int

    def __call__(self, text: str) -> tuple[list[int], list[int]] | None:
        """(ids, mask) of the row, mask 1 on the tokens the assistant writes; None to leave it out."""
        out = self.encode(text)
        return None if isinstance(out, str) else out

    def encode(self, text: str) -> tuple[list[int], list[int]] | str:
        """(ids, mask), or the key in `REASONS` of why the row is left out."""
        messages = json.loads(text)
        problem = _problem(messages)
        if problem:
            return problem
        eot = self.tokenizer.eot_token
        shown = [{k: m[k] for k in _KEYS if k in m} for m in messages]
        try:
            pieces = render_turns(shown, self.tokenizer.chat_template, bos_token=eot, eos_token=eot)
        except ChatTemplateError:
            return "template"
        trained = iter(m.get("weight", 1) == 1 for m in messages if m["role"] == "assistant")
        ids, mask = [], []
        for piece, by_assistant in pieces:
            piece_ids = self.tokenizer.encode(piece, allow_special=True)
            ids += piece_ids
            mask += [int(by_assistant and next(trained))] * len(piece_ids)
        if len(ids) > self.context:
            return "long"
        return (ids, mask) if any(mask) else "assistant"


def _problem(messages: Any) -> str | None:
    """The `REASONS` key of what is wrong with a row's messages, or None."""
    if not isinstance(messages, list) or not messages:
        return "messages"
    for m in messages:
        if not isinstance(m, dict) or not {"role", "content"} <= set(m) <= {"role", "content", *_OPTIONAL}:
            return "message"
        if m.get("weight", 1) not in (0, 1) or isinstance(m.get("weight"), bool):
            return "message"
        if m["role"] not in ROLES:
            return "role"
        if not isinstance(m["content"], str) or not isinstance(m.get("name", ""), str):
            return "content"
    return None if any(m["role"] == "assistant" for m in messages) else "assistant"


def count_rows(texts: Iterable[str], encoder: ChatEncoder) -> collections.Counter:
    """How many rows `encoder` keeps ("kept") and leaves out, by `REASONS` key."""
    counts: collections.Counter = collections.Counter()
    for text in texts:
        out = encoder.encode(text)
        counts[out if isinstance(out, str) else "kept"] += 1
    return counts


def describe(counts: collections.Counter) -> str:
    """ "3 left out: 2 with no assistant turn to train on, 1 longer than the context" (or "")."""
    dropped = {k: n for k, n in counts.items() if k != "kept"}
    if not dropped:
        return ""
    listed = ", ".join(f"{n} {REASONS[k]}" for k, n in sorted(dropped.items(), key=lambda kv: -kv[1]))
    return f"{sum(dropped.values())} left out ({listed})"
