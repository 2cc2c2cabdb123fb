"""Byte-level BPE training with Hugging Face ``tokenizers`` (Rust), exported to tiktoken ranks.

Training and encoding are apart: `train_bpe` runs the ``tokenizers`` trainer once and converts its
result into a `Tokenizer` (tiktoken ranks), which is all that encoding ever needs. The conversion keeps
the trainer's ids: the 256 bytes in GPT-2's byte order (``!`` is 0, as in GPT-2's ``vocab.json``),
then one id per merge in merge order, then the special tokens. tiktoken merges the lowest id first,
which is the trainer's merge order, so tiktoken's ids equal the trainer's on any text (tested with
Hypothesis, and on the whole built-in corpus).

Training is deterministic: the same texts and arguments give byte-identical tokenizer files.
``tokenizers`` is imported only inside these functions (the ``bpe`` extra).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from microgpt_core.config import is_integer
from microgpt_data.errors import DataError
from microgpt_data.tokenizer import ENDOFTEXT, GPT2_PATTERN, Tokenizer
from microgpt_data.tokenizer_checks import check_text
from microgpt_data.tokenizer_files import gpt2_byte_decoder
from microgpt_data.tokenizer_json import tokenizer_json

__all__ = ["train_bpe", "to_hf_tokenizer", "check_arguments"]


def _import_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:  # pragma: no cover - depends on the environment
        raise DataError(
            "BPE training needs Hugging Face `tokenizers`: pip install 'microgpt-data[bpe]'"
        ) from None
    return tokenizers


def _pipeline(tokenizers: Any, model: Any, pattern: str) -> Any:
    """A ``tokenizers.Tokenizer`` that splits with `pattern`, then maps bytes to GPT-2's alphabet."""
    pre = tokenizers.pre_tokenizers
    hf = tokenizers.Tokenizer(model)
    try:
        hf.pre_tokenizer = pre.Sequence(
            [
                pre.Split(tokenizers.Regex(pattern), behavior="isolated", invert=False),
                pre.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    except Exception as exc:  # tokenizers raises a bare Exception for a bad regex
        raise DataError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
    hf.decoder = tokenizers.decoders.ByteLevel()
    return hf


def check_arguments(
    vocab_size: int,
    special_tokens: Sequence[str],
    eot_token: str | None,
    *,
    names: tuple[str, str, str] = ("vocab_size", "special_tokens", "eot_token"),
) -> tuple[list[str], str]:
    """Validates `train_bpe`'s sizes and special tokens (before any text is read); returns
    (special_tokens as a list, eot_token). `names` are the three arguments' names in the messages
    (a command passes its flags)."""
    size_name, special_name, eot_name = names
    if isinstance(special_tokens, str):  # a str is a Sequence[str] of its characters: not meant
        raise DataError(f"{special_name} must be a list of strings, got the string {special_tokens!r}")
    special_tokens = list(special_tokens)
    if not special_tokens or len(set(special_tokens)) != len(special_tokens):
        raise DataError(f"{special_name} must be non-empty and distinct, got {special_tokens}")
    for token in special_tokens:
        if not isinstance(token, str) or not token:
            raise DataError(f"{special_name}: every special token must be a non-empty string, got {token!r}")
        check_text(token, f"{special_name} {token!r}")
    eot_token = special_tokens[0] if eot_token is None else eot_token
    if eot_token not in special_tokens:
        raise DataError(f"{eot_name} {eot_token!r} must be one of {special_name} {special_tokens}")
    smallest = 256 + len(special_tokens)
    if not is_integer(vocab_size) or vocab_size < smallest:
        raise DataError(
            f"{size_name} must be an integer >= {smallest} (256 bytes + {len(special_tokens)} special), "
            f"got {vocab_size!r}"
        )
    return special_tokens, eot_token


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    pattern: str = GPT2_PATTERN,
    special_tokens: Sequence[str] = (ENDOFTEXT,),
    eot_token: str | None = None,
    min_frequency: int = 2,
    name: str = "microgpt-bpe",
    show_progress: bool = False,
) -> Tokenizer:
    """Trains a byte-level BPE tokenizer on `texts`.

    Args:
      texts: documents (any iterable of str; read once, streamed into the Rust trainer).
      vocab_size: the largest vocabulary wanted, special tokens included. A small text may run out of
        pairs seen `min_frequency` times first; the tokenizer is then smaller (check ``vocab_size``).
      pattern: the split regex applied before BPE (default GPT-2's).
      special_tokens: spellings (non-empty strings) given the ids after all mergeable tokens, in
        this order.
      eot_token: the end-of-text token (default: the first special token).
      min_frequency: a pair must occur this often to be merged.
      show_progress: show ``tokenizers``' own progress bars.

    Returns:
      A `Tokenizer` whose ids equal the trainer's (see `to_hf_tokenizer`).

    Raises:
      DataError: vocab_size below 256 + specials, no special tokens or an empty one, no text,
        a bad pattern.
      InvalidTextError: a text that is not valid Unicode.
    """
    special_tokens, eot_token = check_arguments(vocab_size, special_tokens, eot_token)
    tokenizers = _import_tokenizers()
    hf = _pipeline(tokenizers, tokenizers.models.BPE(), pattern)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size - len(special_tokens),
        min_frequency=min_frequency,
        show_progress=show_progress,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    seen = {"texts": 0, "chars": 0}

    def checked() -> Iterator[str]:
        for i, text in enumerate(texts):
            check_text(text, f"training text {i}")
            seen["texts"] += 1
            seen["chars"] += len(text)
            yield text

    hf.train_from_iterator(checked(), trainer=trainer)
    if seen["chars"] == 0:
        raise DataError(f"no text to train on ({seen['texts']} texts, all empty)")
    model = json.loads(hf.to_str())["model"]
    decoder = gpt2_byte_decoder()
    ranks = {bytes(decoder[c] for c in token): int(i) for token, i in model["vocab"].items()}
    first_special = max(ranks.values()) + 1
    special = {token: first_special + i for i, token in enumerate(special_tokens)}
    return Tokenizer(ranks, special, pattern=pattern, name=name, eot_token=eot_token)


def to_hf_tokenizer(tokenizer: Tokenizer) -> Any:
    """The same vocabulary as a Hugging Face ``tokenizers.Tokenizer`` (same ids, same merges).

    Built from `tokenizer_json.tokenizer_json`, the body `write_tokenizer_json` writes: for tokenizers
    made by `train_bpe` this is the trainer's own model; for any `Tokenizer` the merges are recovered
    from the ranks (`merges.merges_of`). Special tokens are added as ``tokenizers`` special tokens,
    which (like ``allow_special=True``) it parses inside text.
    """
    tokenizers = _import_tokenizers()
    body = json.dumps(tokenizer_json(tokenizer))
    try:
        return tokenizers.Tokenizer.from_str(body)
    except Exception as exc:  # tokenizers raises a bare Exception (a pattern its regex engine rejects)
        raise DataError(
            f"tokenizers cannot load this tokenizer (pattern {tokenizer.pattern!r}): {exc}"
        ) from None
