"""The prompt's own log-probabilities, for /v1/completions with `echo` and `logprobs`.

OpenAI's legacy completions report, with `echo`, each prompt token's log-probability given the
tokens before it, and the `logprobs` most likely tokens at each place; the first token has nothing
before it, so both are null there. That is how lm-evaluation-harness and similar tools score a
continuation through a completions server (`echo=True, logprobs=1, max_tokens=1`).

One forward pass of the reference model over the prompt, right-padded to a bucket width (a power
of two, as `generate` pads its prompts, so a few programs serve every length): position t's logits
score token t + 1, under the raw distribution, as the engine's `Token`s score generated ones.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from microgpt_core.config import GPTConfig
from microgpt_core.model import forward
from microgpt_core.params import Params
from microgpt_core.sampling import top_logprobs
from microgpt_infer.engine.requests import Token
from microgpt_infer.generation import bucket_width

__all__ = ["prompt_logprobs"]


def prompt_logprobs(params: Params, config: GPTConfig, ids: list[int], k: int) -> list[int | Token]:
    """The prompt `ids` scored: the first id as itself (nothing scores it), then for each later one
    its `Token` (log-probability given the ids before it, and the `k` most likely there)."""
    if not 1 <= len(ids) <= config.context_length:
        raise ValueError(f"a prompt to score needs 1 to {config.context_length} tokens, got {len(ids)}")
    if len(ids) == 1:
        return [ids[0]]
    tokens = np.zeros((1, bucket_width(len(ids), config.context_length)), np.int32)  # (1, W)
    tokens[0, : len(ids)] = ids
    chosen, top_ids, top_values = (np.asarray(a) for a in _scores(params, tokens, config=config, k=k))
    scored = [
        Token(ids[t], float(chosen[t - 1]), tuple(top_ids[t - 1].tolist()), tuple(top_values[t - 1].tolist()))
        for t in range(1, len(ids))
    ]
    return [ids[0], *scored]


@functools.partial(jax.jit, static_argnames=("config", "k"))
def _scores(params: Params, tokens: jax.Array, *, config: GPTConfig, k: int):
    """log softmax(z_t)[token t + 1] and the k best of it, for every position t but the last."""
    logits = forward(params, tokens, config)[0, :-1]  # (W - 1, V): position t predicts token t + 1
    return top_logprobs(logits, tokens[0, 1:], k)  # (W - 1,), (W - 1, k), (W - 1, k)
