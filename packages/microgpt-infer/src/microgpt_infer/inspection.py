"""What a model does with one text, for the `inspect` command's page: `inspect_text` runs the model
once and measures what the page shows; `page_data` and `render_page` make the self-contained HTML.

One jitted program (`measure`) runs core's `trace` and reduces what it saw on the device, so the
(L, T, V) logit lens never leaves it whole. For tokens x_0 .. x_{T-1}:

    attention   A[l, h, t, s]                            (L, H, T, T) query t by key s (s <= t)
    entropy     mean_t  -Σ_s A[l,h,t,s] ln A[l,h,t,s]     (L, H) nats
    lens        top-k of softmax(logit_lens[l, t])       (L, T, k) ids and probabilities
    next        top-k of softmax(logits[t])              (T, k)
    loss        -ln softmax(logits[t])[x_{t+1}]          (T - 1,) nats: position t's loss on token t+1
    resid_norm  ‖resid_post[l, t]‖₂                      (L, T)

The page (`pages/inspect.html`, vanilla JS, nothing fetched) gets them as one JSON object. Attention
is most of it (12 layers x 12 heads x 256² is 9.4M probabilities), so it travels packed: each head's
causal lower triangle, row by row, as uint16 round(p · 65535) (within 7.7e-6 of p), the high bytes of
all values then the low bytes (so gzip finds runs), gzipped and base64-encoded; the page inflates it
with the browser's `DecompressionStream`.
"""

from __future__ import annotations

import base64
import gzip
import json
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from microgpt_core.config import GPTConfig
from microgpt_core.model import logit_lens, trace
from microgpt_core.params import Params
from microgpt_data.tokenizer import Tokenizer
from microgpt_infer.errors import InferError, PromptTooLongError

__all__ = [
    "ATTENTION_SCALE",
    "LENS_TOP_K",
    "NEXT_TOP_K",
    "PAGE_TEMPLATE",
    "Inspection",
    "inspect_text",
    "measure",
    "pack_attention",
    "page_data",
    "render_page",
    "unpack_attention",
]

LENS_TOP_K = 5  # predictions per logit-lens cell
NEXT_TOP_K = 10  # predictions per position of the next-token distribution
ATTENTION_SCALE = 65535  # an attention probability p travels as the uint16 round(p * ATTENTION_SCALE)
PAGE_TEMPLATE = Path(__file__).resolve().parent / "pages" / "inspect.html"
_PLACEHOLDER = "__INSPECTION_DATA__"  # where the template takes the JSON object, once


class Inspection(NamedTuple):
    """What one text does inside a model (NumPy arrays; shapes for T tokens, L layers, H heads).

    Attributes:
      tokens: (T,) int token ids.
      vocab: id -> text of every id in `tokens`, `lens_ids` and `next_ids`.
      attention: (L, H, T, T) float32, attention[l, h, t, s] = query t's weight on key s.
      entropy: (L, H) float32, each head's attention entropy in nats, mean over query positions.
      lens_ids, lens_probs: (L, T, LENS_TOP_K) the logit lens's most likely tokens and probabilities.
      next_ids, next_probs: (T, NEXT_TOP_K) the model's most likely next tokens and probabilities.
      losses: (T - 1,) float32, position t's cross-entropy on token t + 1, in nats.
      resid_norms: (L, T) float32, the L2 norm of each layer's output (resid_post) per position.
    """

    tokens: np.ndarray
    vocab: dict[int, str]
    attention: np.ndarray
    entropy: np.ndarray
    lens_ids: np.ndarray
    lens_probs: np.ndarray
    next_ids: np.ndarray
    next_probs: np.ndarray
    losses: np.ndarray
    resid_norms: np.ndarray


@partial(jax.jit, static_argnames=("config", "lens_k", "next_k"))
def measure(
    params: Params, tokens: jax.Array, config: GPTConfig, lens_k: int = LENS_TOP_K, next_k: int = NEXT_TOP_K
) -> dict[str, jax.Array]:
    """The module docstring's measures of one row of tokens, in one compiled program.

    Args:
      params: model parameters.
      tokens: (T,) int token ids, 1 <= T <= context_length.
      config: the model's configuration.
      lens_k, next_k: predictions kept per lens cell and per position (at most V).
    Returns:
      a dict of float32 / int32 arrays named as `Inspection`'s fields (all but tokens and vocab).
    """
    logits, seen = trace(params, tokens[None], config)  # (1, T, V), {name: (L, 1, ...)}
    lens = logit_lens(params, seen, config)[:, 0]  # (L, T, V)
    lens_probs, lens_ids = jax.lax.top_k(jax.nn.softmax(lens, axis=-1), lens_k)  # (L, T, k) each
    log_p = jax.nn.log_softmax(logits[0], axis=-1)  # (T, V)
    next_probs, next_ids = jax.lax.top_k(jnp.exp(log_p), next_k)  # (T, k) each
    losses = -jnp.take_along_axis(log_p[:-1], tokens[1:, None], axis=-1)[:, 0]  # (T - 1,)
    attention = seen["attn_pattern"][:, 0]  # (L, H, T, T)
    entropy = jax.scipy.special.entr(attention).sum(-1).mean(-1)  # (L, H): -Σ p ln p, 0 ln 0 = 0
    resid_norms = jnp.linalg.norm(seen["resid_post"][:, 0], axis=-1)  # (L, T)
    return dict(
        attention=attention, entropy=entropy, lens_ids=lens_ids, lens_probs=lens_probs,
        next_ids=next_ids, next_probs=next_probs, losses=losses, resid_norms=resid_norms,
    )  # fmt: skip


def inspect_text(params: Params, config: GPTConfig, tokenizer: Tokenizer, text: str) -> Inspection:
    """Encodes `text` and measures it (`measure`): the data of the `inspect` page.

    Raises:
      InferError: the text is empty (no tokens).
      PromptTooLongError: it has more tokens than the model's context_length (says both).
      InvalidTextError: it is not valid Unicode (a lone surrogate).
    """
    ids = tokenizer.encode(text)
    if not ids:
        raise InferError("the text is empty; give at least one character to inspect")
    if len(ids) > config.context_length:
        raise PromptTooLongError(
            f"the text has {len(ids)} tokens; the model's context_length is {config.context_length}. "
            "Shorten it"
        )
    tokens = np.asarray(ids, np.int32)  # (T,)
    V = config.vocab_size
    found = jax.device_get(measure(params, tokens, config, min(LENS_TOP_K, V), min(NEXT_TOP_K, V)))
    shown = np.unique(np.concatenate([tokens, found["lens_ids"].ravel(), found["next_ids"].ravel()]))
    vocab = {int(i): tokenizer.decode([int(i)]) for i in shown}
    return Inspection(tokens=tokens, vocab=vocab, **{k: np.asarray(v) for k, v in found.items()})


def pack_attention(attention: np.ndarray) -> str:
    """(L, H, T, T) probabilities -> the page's base64 text (the module docstring's packing)."""
    T = attention.shape[-1]
    rows, cols = np.tril_indices(T)  # (T(T+1)/2,) each: row by row, keys 0..t of query t
    quanta = np.rint(np.clip(attention[..., rows, cols], 0, 1) * ATTENTION_SCALE).astype("<u2")
    planes = quanta.reshape(-1).view(np.uint8).reshape(-1, 2).T  # (2, N): low bytes, high bytes
    packed = gzip.compress(np.ascontiguousarray(planes[::-1]).tobytes(), compresslevel=6, mtime=0)
    return base64.b64encode(packed).decode("ascii")


def unpack_attention(text: str, n_layers: int, n_heads: int, length: int) -> np.ndarray:
    """`pack_attention`'s inverse: the (L, H, T, T) probabilities, zero above the diagonal."""
    planes = np.frombuffer(gzip.decompress(base64.b64decode(text)), np.uint8).reshape(2, -1)
    quanta = planes[0].astype(np.uint16) << 8 | planes[1]  # (N,)
    rows, cols = np.tril_indices(length)
    attention = np.zeros((n_layers, n_heads, length, length), np.float32)
    attention[..., rows, cols] = quanta.reshape(n_layers, n_heads, -1) / ATTENTION_SCALE
    return attention


def page_data(inspection: Inspection, config: GPTConfig, *, text: str, model: str) -> dict[str, Any]:
    """The page's JSON object: `inspection` as lists (probabilities to 5 decimals), attention packed.

    Args:
      inspection: from `inspect_text`.
      config: the model's configuration (its sizes are shown).
      text: the text inspected (shown as the page's title).
      model: the model's name or folder (shown).
    """
    fields = ("n_layers", "n_heads", "n_kv_heads", "d_model", "d_ff", "vocab_size", "context_length")

    def rounded(array: np.ndarray, decimals: int = 5) -> list:
        return np.round(array.astype(np.float64), decimals).tolist()

    L, H, T, _ = inspection.attention.shape
    return {
        "text": text,
        "model": model,
        "config": {name: getattr(config, name) for name in fields},
        "tokens": inspection.tokens.tolist(),
        "vocab": {str(i): piece for i, piece in inspection.vocab.items()},
        "lens": {"ids": inspection.lens_ids.tolist(), "probs": rounded(inspection.lens_probs)},
        "next": {"ids": inspection.next_ids.tolist(), "probs": rounded(inspection.next_probs)},
        "loss": rounded(inspection.losses, 4),
        "resid_norm": rounded(inspection.resid_norms, 3),
        "entropy": rounded(inspection.entropy, 4),
        "attention": {
            "shape": [L, H, T],
            "scale": ATTENTION_SCALE,
            "packing": "causal lower triangle row by row, uint16 high-byte plane then low, gzip, base64",
            "data": pack_attention(inspection.attention),
        },
    }


def render_page(data: dict[str, Any], template: str | None = None) -> str:
    """The HTML page: `template` (default `PAGE_TEMPLATE`) with `data` as JSON in its one placeholder.

    Every "<", ">" and "&" of the JSON is written as a \\u escape (JSON allows it in strings, the only
    place they occur), so no text can close the <script> element that holds it.
    """
    template = PAGE_TEMPLATE.read_text(encoding="utf-8") if template is None else template
    if template.count(_PLACEHOLDER) != 1:
        raise InferError(f"the page template must hold {_PLACEHOLDER} exactly once")
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char in "<>&":
        payload = payload.replace(char, f"\\u{ord(char):04x}")
    return template.replace(_PLACEHOLDER, payload)
