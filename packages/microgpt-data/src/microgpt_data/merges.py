"""BPE merges and tiktoken ranks, both ways, and GPT-2's byte alphabet (pure Python).

Hugging Face files (``vocab.json`` + ``merges.txt``, ``tokenizer.json``) describe a byte-level BPE as a
vocabulary ``{token: id}`` and an ordered list of merges ``(left, right)``, every byte spelled as one
printable character of GPT-2's alphabet (``"Ġ"`` for a space). tiktoken needs only *ranks*,
``bytes -> id``, and merges, in each piece of text, the adjacent pair whose concatenation has the
lowest id, until no pair is a token:

    parts ← the piece's bytes;   while some adjacent (a, b) has a + b ∈ ranks:
        merge the leftmost such pair of lowest ranks[a + b]

- `ranks_from_merges`: vocabulary + merges -> ranks (the 256 bytes, then one token per merge; the
  merged tokens' ids must rise in merge order, since tiktoken merges lowest id first).
- `merges_of`: ranks -> merges: `merge_of` recovers the pair BPE joins last to make a token (run the
  loop above on the token's own bytes, stopped before its own rank: two parts are left).
- `check_merge_paths`: the listed merges are the ones tiktoken takes (see its docstring).

Nothing here imports ``tokenizers``: `bpe.to_hf_tokenizer`, `tokenizer_json` and `tokenizer_files` use
these functions alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from microgpt_core.config import is_integer
from microgpt_data.errors import DataError, TokenizerFileError

__all__ = [
    "gpt2_byte_decoder",
    "gpt2_byte_encoder",
    "spell",
    "check_id",
    "bpe_parts",
    "merge_of",
    "merges_of",
    "ranks_from_merges",
    "check_merge_paths",
    "ID_LIMIT",
    "SPECIAL_SPELLING",
]

ID_LIMIT = 2**32  # tiktoken's ids are 32-bit unsigned


def gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-ins for bytes (``"Ġ"`` for a space), mapped back to the byte values.

    ``vocab.json``/``merges.txt`` files (GPT-2's and Hugging Face ``tokenizers``' byte-level BPE) spell
    every byte as one printable character; this undoes that spelling.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    byte_values, chars, extra = list(printable), list(printable), 0
    for b in range(256):
        if b not in printable:
            byte_values.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(byte_values, chars, strict=True)}


def gpt2_byte_encoder() -> dict[int, str]:
    """Byte value -> its character in GPT-2's alphabet (the inverse of `gpt2_byte_decoder`)."""
    return {b: c for c, b in gpt2_byte_decoder().items()}


_ENCODER = gpt2_byte_encoder()


def spell(token: bytes) -> str:
    """`token` in GPT-2's byte alphabet: ``b" the"`` -> ``"Ġthe"``."""
    return "".join(_ENCODER[b] for b in token)


def check_id(value: object, where: str) -> None:
    """`TokenizerFileError` unless `value` is an integer id in [0, 2**32) (not a bool, float or str)."""
    if not is_integer(value) or not 0 <= value < ID_LIMIT:
        raise TokenizerFileError(
            f"{where} must be an integer in [0, 2**32), got {type(value).__name__} {value!r:.40}"
        )


def bpe_parts(ranks: dict[bytes, int], token: bytes, limit: int | None = None) -> list[bytes]:
    """tiktoken's merge loop on `token`'s bytes, merging only pairs whose rank is below `limit`
    (None: every pair in `ranks`); the parts that are left."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, best_rank = -1, limit
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = i, rank
        if best < 0:
            break
        parts[best : best + 2] = [parts[best] + parts[best + 1]]
    return parts


def merge_of(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The pair that BPE merged to make `token`: lowest-rank-first merging of its bytes, stopped
    before `token`'s own rank, leaves exactly two parts. `DataError` when it does not."""
    parts = bpe_parts(ranks, token, ranks[token])
    if len(parts) != 2:
        raise DataError(
            f"token {token!r} (id {ranks[token]}) cannot be reached by merging lower-ranked tokens"
        )
    return parts[0], parts[1]


def merges_of(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Every merge of `ranks`, in rank order: `merge_of` of each token longer than one byte."""
    ordered = sorted((token for token in ranks if len(token) > 1), key=ranks.__getitem__)
    return [merge_of(ranks, token) for token in ordered]


# How special tokens are spelled in GPT-2 style vocabularies: <|endoftext|>, <s>, </s>, <pad>, [CLS].
SPECIAL_SPELLING = re.compile(r"<[^<>\s]+>|\[[^\[\]\s]+\]")


def ranks_from_merges(
    vocab: dict[str, int], merges: Iterable[tuple[str, str, str]], *, vocab_where: str
) -> tuple[dict[bytes, int], dict[str, int], list[tuple[str, str]]]:
    """(ranks, unmerged, listed) from a byte-level BPE's vocabulary and merges; ids are kept.

    Args:
      vocab: ``{token in GPT-2's alphabet: id}``, as parsed (ids and tokens are checked here).
      merges: ``(where, left, right)`` in merge order; `where` locates the merge in messages
        (``"merges.txt:12"``, ``"tokenizer.json: model.merges[10]"``).
      vocab_where: names the vocabulary in messages (``"vocab.json"``, ``"tokenizer.json: model.vocab"``).
    Returns:
      ranks: the 256 single bytes and the result of each merge, ``bytes -> id``;
      unmerged: every other vocabulary entry (special tokens such as ``<|endoftext|>``), for the caller
        to judge;
      listed: every merge as ``(left, right)``, in order (for `check_merge_paths`).
    Raises:
      TokenizerFileError: an empty token, an id that is not an integer in [0, 2**32) or repeats, a
        missing single byte, a merge of tokens the vocabulary lacks, a merge result outside it or
        outside the byte alphabet, or merged ids that do not rise in merge order.
    """
    for token, token_id in vocab.items():
        if not token:
            raise TokenizerFileError(f"{vocab_where}: holds an empty token; every token is non-empty")
        check_id(token_id, f"{vocab_where}: the id of {token!r}")
    if len(set(vocab.values())) != len(vocab):
        seen: set[int] = set()
        repeated = sorted({i for i in vocab.values() if i in seen or seen.add(i)})
        raise TokenizerFileError(f"{vocab_where}: ids must be unique; repeated ids include {repeated[:5]}")
    decoder = gpt2_byte_decoder()
    ranks: dict[bytes, int] = {}
    for char, byte in decoder.items():
        if char not in vocab:
            raise TokenizerFileError(f"{vocab_where} lacks the single-byte token {char!r} (byte {byte})")
        ranks[bytes([byte])] = vocab[char]
    mergeable = set(decoder)
    previous = max(ranks.values())
    listed: list[tuple[str, str]] = []
    for where, left, right in merges:
        for part in (left, right):
            if part not in vocab:
                raise TokenizerFileError(f"{where}: merge part {part!r} is not in {vocab_where}")
        merged = left + right
        listed.append((left, right))
        if merged not in vocab:
            raise TokenizerFileError(f"{where}: merge result {merged!r} is not in {vocab_where}")
        token_id = vocab[merged]
        if merged in mergeable:
            continue  # the same bytes reached by another merge: tiktoken keeps the first
        if token_id <= previous:
            raise TokenizerFileError(
                f"{where}: id {token_id} of {merged!r} does not rise in merge order; "
                "tiktoken merges lowest id first, so ids must follow the merges"
            )
        try:
            token = bytes(decoder[c] for c in merged)
        except KeyError:
            raise TokenizerFileError(f"{where}: token {merged!r} is not in GPT-2's byte alphabet") from None
        previous = token_id
        mergeable.add(merged)
        ranks[token] = token_id
    unmerged = {token: i for token, i in vocab.items() if token not in mergeable}
    return ranks, unmerged, listed


def check_merge_paths(
    ranks: dict[bytes, int], listed: list[tuple[str, str]], *, where: Callable[[int], str]
) -> None:
    """`TokenizerFileError` unless tiktoken's merges are the listed ones, taken in the listed order.

    ``tokenizers`` merges, in a piece, the adjacent pair listed first among the merges; tiktoken the
    pair whose concatenation has the lowest id. They agree on every text when, for each token t in
    id order, the pair tiktoken joins last to make t (`merge_of`) is listed before any merge that
    makes a later token: then both take the same merge at every step. (A file with one merge per
    token, as ``tokenizers``' trainer and `merges_of` write, needs that pair to be t's merge; one that
    lists every split of each token, as Llama 3's converted file does, needs it among t's splits.)
    Then a piece that is itself a token also merges into that one token, so tiktoken's shortcut
    (a piece found in the ranks is one token) agrees whether or not ``ignore_merges`` is set.
    `where(i)` names the i-th listed merge in messages.
    """
    position: dict[tuple[str, str], int] = {}
    first: dict[str, int] = {}
    for i, pair in enumerate(listed):
        position.setdefault(pair, i)
        first.setdefault(pair[0] + pair[1], i)
    ordered = sorted((token for token in ranks if len(token) > 1), key=ranks.__getitem__)
    names = [spell(token) for token in ordered]
    for k, token in enumerate(ordered):
        limit = first[names[k + 1]] if k + 1 < len(ordered) else len(listed)
        parts = bpe_parts(ranks, token, ranks[token])
        if len(parts) != 2:
            raise TokenizerFileError(
                f"{where(first[names[k]])}: token {names[k]!r} (id {ranks[token]}) cannot be made by "
                "merging tokens of lower ids, which tiktoken needs (it merges lowest id first)"
            )
        cut = len(parts[0])  # one character per byte in GPT-2's alphabet
        pair = (names[k][:cut], names[k][cut:])
        at = position.get(pair)
        if at is None or at >= limit:
            found = "is not listed" if at is None else f"is listed only at {where(at)}, after later tokens"
            raise TokenizerFileError(
                f"{where(first[names[k]])}: token {names[k]!r} (id {ranks[token]}): tiktoken makes "
                f"it from {pair[0]!r} + {pair[1]!r}, a merge that {found}; tiktoken's ids would differ "
                "from tokenizers' (merges must make each token the way lowest-id-first merging does)"
            )
