"""Hugging Face's ``tokenizer.json``: read into a `Tokenizer`, written from one, as plain JSON.

This module never imports ``tokenizers`` (nor does anything it imports): it parses and writes the
file's JSON itself, so inference reads a Hugging Face folder without that library.

What is read (`read_tokenizer_json`), the byte-level BPE of GPT-2's and Llama 3's files:

    model          {"type": "BPE", "vocab": {token: id}, "merges": ["a b", ...] or [["a", "b"], ...],
                    "byte_fallback": false, "dropout": null, no continuing_subword_prefix or
                    end_of_word_suffix; "ignore_merges" either way (see below)}
    pre_tokenizer  Sequence[Split({"Regex": P}, "Isolated", invert false),
                             ByteLevel(add_prefix_space false, use_regex false)]    -> pattern P
                   or ByteLevel(add_prefix_space false, use_regex true)   -> GPT2_PATTERN (the regex
                   ByteLevel splits with, spelled as tiktoken spells it)
    normalizer     null;   decoder  ByteLevel or null
    added_tokens   special tokens (special true; no lstrip, rstrip or single_word), ids kept

Anything else (a Unigram or WordPiece model, a Metaspace pre-tokenizer, byte_fallback: the
SentencePiece-style files of Llama 2 and Mistral; Digits (StarCoder-style: Digits, then ByteLevel's
regex on each stretch between digits, which no one pattern reproduces), Whitespace; add_prefix_space;
a normalizer, such as Qwen's NFC) raises `TokenizerFileError` naming the file and the component.
The split pattern goes to tiktoken as written: ``tokenizers`` runs it with Oniguruma, tiktoken with
fancy-regex; a pattern tiktoken cannot compile, or one that does not cover a probe text, is refused
by `Tokenizer` (the tests compare both engines' ids on GPT-2's and Llama 3's patterns).

Ids equal ``tokenizers``': the 256 bytes and merged tokens keep the file's ids (merged ids must
rise in merge order, `merges.ranks_from_merges`), and tiktoken's merges must be the listed ones
(`merges.check_merge_paths`). ``ignore_merges`` (Llama 3 sets it) makes ``tokenizers`` take a piece
found in the vocabulary as one token, which is what tiktoken always does; without it, ``tokenizers``
merges the piece, which ends in the same token when every token is what merging its own bytes makes:
the merge-path check proves it, so both settings are read exactly. Added tokens keep the ids
``tokenizers`` gives them: a token of model.vocab keeps that id, the others take the ids from
len(model.vocab) on, in file order (the file's own "id" is only checked by the library, with a
warning); a file whose ids say otherwise is refused.

What is ignored: ``post_processor`` (a template that puts a BOS token first): our ``encode`` adds no
token, like ``tokenizers``' ``encode(text, add_special_tokens=False)``; ``truncation`` and
``padding`` (settings of a call). ``tokenizers`` finds added tokens inside text: that is our
``encode(text, allow_special=True)``.

What is written (`write_tokenizer_json`): that layout with our pattern in the Split, the decoder
ByteLevel, every field as ``tokenizers`` 0.23 writes it (`tokenizers.Tokenizer.from_file` reads it
back to the same JSON), ``ignore_merges`` false, the merges recovered from our ranks
(`merges.merges_of`) and each special token both in model.vocab and in added_tokens (as GPT-2's file
has ``<|endoftext|>``), so that ``tokenizers`` keeps its id even after a gap.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from microgpt_core.config import fits
from microgpt_core.files import write_atomic
from microgpt_core.jsonfile import read_json_object
from microgpt_data.errors import DataError, TokenizerFileError
from microgpt_data.merges import check_id, check_merge_paths, merges_of, ranks_from_merges, spell
from microgpt_data.tokenizer import GPT2_PATTERN, Tokenizer

__all__ = [
    "TOKENIZER_JSON_FILE",
    "EOT_SPELLING",
    "read_tokenizer_json",
    "write_tokenizer_json",
    "tokenizer_json",
    "default_eot_token",
]

TOKENIZER_JSON_FILE = "tokenizer.json"
# The end-of-text spellings `default_eot_token` looks for: <|endoftext|> (GPT-2, SmolLM),
# <|end_of_text|> (Llama 3), <eos>, <|eos|>, <|eot|>, <|eot_id|>, </s>; any letter case.
EOT_SPELLING = re.compile(r"<\|?(?:endoftext|end_of_text|eos|eot|eot_id)\|?>|</s>", re.IGNORECASE)
_NOT_OURS = "microGPT reads byte-level BPE tokenizers"
_KINDS = {  # what a refused component is, for the message
    "Unigram": "SentencePiece",
    "Metaspace": "SentencePiece",
    "ByteFallback": "SentencePiece",
    "WordPiece": "BERT-style",
    "BertPreTokenizer": "BERT-style",
    "WordLevel": "word-level",
}
_MISSING = object()


def read_tokenizer_json(path: str | os.PathLike, *, eot_token: str | None = None) -> Tokenizer:
    """The `Tokenizer` of a Hugging Face ``tokenizer.json`` (the file, or a folder holding one).

    Args:
      path: ``tokenizer.json`` or its folder.
      eot_token: the special token that ends a document (a Hugging Face config's ``eos_token_id``,
        spelled); None: `default_eot_token`.
    Raises:
      TokenizerFileError: naming the file and the component or field: a file that is missing or not
        JSON, a missing key or a value of the wrong type, a component microGPT does not run (module
        docstring), ids that repeat, collide or do not rise in merge order, no such `eot_token`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_JSON_FILE
    body = read_json_object(path, error=TokenizerFileError, holds="a JSON object (a tokenizer)")
    model = _get(body, "model", dict, str(path))
    _check_model(model, f"{path}: model")
    _check_normalizer(body.get("normalizer"), f"{path}: normalizer")
    pattern = _pattern(_get(body, "pre_tokenizer", (dict, type(None)), str(path)), f"{path}: pre_tokenizer")
    decoder = body.get("decoder")
    if decoder is not None and _kind(decoder, f"{path}: decoder") != "ByteLevel":
        _refuse(f"{path}: decoder", decoder, "it must be ByteLevel or null")
    vocab = _get(model, "vocab", dict, f"{path}: model")
    merges = _get(model, "merges", list, f"{path}: model")
    ranks, unmerged, listed = ranks_from_merges(
        vocab, _merge_pairs(merges, f"{path}: model.merges"), vocab_where=f"{path}: model.vocab"
    )
    special = _added_tokens(body, vocab, unmerged, path)
    check_merge_paths(ranks, listed, where=lambda i: f"{path}: model.merges[{i}]")
    if eot_token is None:
        eot_token = default_eot_token(special, str(path))
    elif eot_token not in special:
        raise TokenizerFileError(
            f"{path}: the end-of-text token {eot_token!r} is not one of its special tokens "
            f"{_listing(special)}"
        )
    name = path.parent.name or "tokenizer"
    try:
        tokenizer = Tokenizer(ranks, special, pattern=pattern, name=name, eot_token=eot_token)
    except TokenizerFileError as exc:
        raise TokenizerFileError(f"{path}: {exc}") from None
    return tokenizer


def default_eot_token(special_tokens: dict[str, int], where: str) -> str:
    """The special token of lowest id spelled like an end of text (`EOT_SPELLING`), else
    `TokenizerFileError` (starting with `where`) listing the special tokens to choose from."""
    for token, _ in sorted(special_tokens.items(), key=lambda item: item[1]):
        if EOT_SPELLING.fullmatch(token):
            return token
    raise TokenizerFileError(
        f"{where}: no special token is spelled like an end of text (<|endoftext|>, <|end_of_text|>, "
        f"<eos>, </s>...); name the one that ends a document (eot_token=...) among {_listing(special_tokens)}"
    )


def tokenizer_json(tokenizer: Tokenizer) -> dict[str, Any]:
    """The ``tokenizer.json`` body of `tokenizer`, as a dict (module docstring: what is written).

    Raises:
      DataError: a token that merging lower-ranked tokens cannot make (no merges describe it), or a
        special token spelled like a mergeable token in GPT-2's alphabet (they would share a key).
    """
    ranks = tokenizer.ranks
    vocab = {spell(token): i for token, i in sorted(ranks.items(), key=lambda item: item[1])}
    special = sorted(tokenizer.special_tokens.items(), key=lambda item: item[1])
    for token, _ in special:
        if token in vocab:
            raise DataError(
                f"special token {token!r} is spelled like the mergeable token {token!r} in GPT-2's byte "
                "alphabet; tokenizer.json cannot hold both"
            )
    vocab.update(special)
    flags = {"single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": i, "content": token, **flags} for token, i in special],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": tokenizer.pattern},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            ],
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [[spell(left), spell(right)] for left, right in merges_of(ranks)],
        },
    }


def write_tokenizer_json(tokenizer: Tokenizer, path: str | os.PathLike) -> Path:
    """Writes `tokenizer` as a ``tokenizer.json`` at `path` (its folder must exist), atomically; it
    encodes every text to our ids in ``tokenizers`` and ``transformers``' ``PreTrainedTokenizerFast``.
    Returns the path. Raises `DataError` as `tokenizer_json` does."""
    text = json.dumps(tokenizer_json(tokenizer), ensure_ascii=False, indent=2) + "\n"
    return write_atomic(path, text.encode("utf-8"))


# ---------------------------------------------------------------------------------------- reading
def _get(obj: dict, key: str, kinds: type | tuple[type, ...], at: str, default: Any = _MISSING) -> Any:
    """`obj[key]`, which must be of `kinds` (JSON booleans are not numbers); `at` names `obj`."""
    if key not in obj:
        if default is _MISSING:
            raise TokenizerFileError(f"{at} has no {key!r} (a tokenizer.json written by tokenizers has it)")
        return default
    value = obj[key]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not any(fits(value, kind) for kind in kinds):  # `fits` refuses bools as numbers
        wanted = " or ".join("null" if k is type(None) else _JSON_NAMES.get(k, k.__name__) for k in kinds)
        raise TokenizerFileError(f"{at}: {key!r} must be {wanted}, got {json.dumps(value)[:40]}")
    return value


_JSON_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "true or false", int: "an integer"}


def _kind(component: Any, at: str) -> str:
    if not isinstance(component, dict):
        raise TokenizerFileError(f"{at} must be an object, got {json.dumps(component)[:40]}")
    return _get(component, "type", str, at)


def _refuse(at: str, component: dict, reason: str = "") -> None:
    kind = component.get("type")
    if kind == "Sequence":
        parts = component.get("pretokenizers") or component.get("normalizers") or component.get("decoders")
        inner = [p.get("type") for p in parts if isinstance(p, dict)] if isinstance(parts, list) else []
        kind = f"Sequence[{', '.join(map(str, inner))}]"
    spm = "▁" in json.dumps(component, ensure_ascii=False) or any(
        k in str(kind) for k in ("Metaspace", "Unigram")
    )
    hint = " (SentencePiece)" if spm else next((f" ({v})" for k, v in _KINDS.items() if k in str(kind)), "")
    raise TokenizerFileError(
        f"{at} {kind}{hint} is not supported{'; ' + reason if reason else ''}; {_NOT_OURS}"
    )


def _check_model(model: dict, at: str) -> None:
    """Refuses what our BPE does not run (ignore_merges is read exactly either way: module docstring)."""
    kind = model.get("type", "BPE" if "merges" in model else None)
    if kind != "BPE":
        _refuse(at, {"type": kind} if isinstance(kind, str) else {"type": json.dumps(kind)})
    if _get(model, "byte_fallback", bool, at, False):
        raise TokenizerFileError(
            f"{at}.byte_fallback true (SentencePiece-style BPE, bytes as <0x..> tokens) is not supported; "
            f"{_NOT_OURS} over GPT-2's byte alphabet"
        )
    dropout = _get(model, "dropout", (int, float, type(None)), at, None)
    if dropout:
        raise TokenizerFileError(f"{at}.dropout {dropout} (random merges) is not supported; it must be null")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if _get(model, key, (str, type(None)), at, None):
            raise TokenizerFileError(
                f"{at}.{key} {model[key]!r} is not supported (it belongs to word-piece BPE); it must be null"
            )
    _get(model, "unk_token", (str, type(None)), at, None)  # never needed: every byte is a token
    _get(model, "ignore_merges", bool, at, False)


def _check_normalizer(normalizer: Any, at: str) -> None:
    if normalizer is None:
        return
    if _kind(normalizer, at) == "Sequence" and normalizer.get("normalizers") == []:
        return
    _refuse(at, normalizer, "microGPT does not normalize text (the normalizer must be null)")


def _pattern(pre: dict | None, at: str) -> str:
    """The split pattern of a supported pre-tokenizer (module docstring)."""
    if pre is None:
        raise TokenizerFileError(f"{at} null (no byte-level pre-tokenizer) is not supported; {_NOT_OURS}")
    kind = _kind(pre, at)
    if kind == "ByteLevel":
        _byte_level(pre, at, use_regex=True)
        return GPT2_PATTERN
    if kind != "Sequence":
        _refuse(at, pre)
    steps = _get(pre, "pretokenizers", list, at)
    kinds = [_kind(step, f"{at}.pretokenizers[{i}]") for i, step in enumerate(steps)]
    if kinds == ["ByteLevel"]:
        _byte_level(steps[0], f"{at}.pretokenizers[0]", use_regex=True)
        return GPT2_PATTERN
    if kinds != ["Split", "ByteLevel"]:
        _refuse(at, pre, "microGPT reads Sequence[Split, ByteLevel] or ByteLevel")
    split, split_at = steps[0], f"{at}.pretokenizers[0] (Split)"
    pattern = _get(split, "pattern", dict, split_at)
    if list(pattern) != ["Regex"] or not isinstance(pattern["Regex"], str):
        raise TokenizerFileError(
            f"{split_at}: pattern {json.dumps(pattern)[:60]} is not supported; microGPT reads "
            '{"Regex": "..."} (a String pattern splits on a literal)'
        )
    behavior = _get(split, "behavior", str, split_at)
    if behavior != "Isolated" or _get(split, "invert", bool, split_at):
        raise TokenizerFileError(
            f"{split_at}: behavior {behavior!r} with invert {split['invert']} is not supported; microGPT "
            "splits like behavior 'Isolated', invert false (each match is a piece)"
        )
    _byte_level(steps[1], f"{at}.pretokenizers[1] (ByteLevel)", use_regex=False)
    return pattern["Regex"]


def _byte_level(step: dict, at: str, *, use_regex: bool) -> None:
    if _get(step, "add_prefix_space", bool, at):
        raise TokenizerFileError(
            f"{at}: add_prefix_space true is not supported (microGPT puts no space before the text); "
            "it must be false"
        )
    if _get(step, "use_regex", bool, at, True) != use_regex:
        raise TokenizerFileError(
            f"{at}: use_regex {str(not use_regex).lower()} is not supported here; ByteLevel splits with "
            "GPT-2's pattern alone (use_regex true) or after a Split (use_regex false)"
        )


def _merge_pairs(merges: list, at: str) -> Iterator[tuple[str, str, str]]:
    """``(where, left, right)`` of each merge, spelled ``"a b"`` or ``["a", "b"]``."""
    for i, merge in enumerate(merges):
        if isinstance(merge, str) and merge.count(" ") == 1:
            left, right = merge.split(" ")
        elif type(merge) is list and len(merge) == 2 and type(merge[0]) is str and type(merge[1]) is str:
            left, right = merge
        else:
            left = right = ""
        if not (left and right):
            raise TokenizerFileError(
                f'{at}[{i}] must be two tokens, as "a b" or ["a", "b"], got {json.dumps(merge)[:40]}'
            )
        yield f"{at}[{i}]", left, right


def _added_tokens(body: dict, vocab: dict[str, int], unmerged: dict[str, int], path: Path) -> dict[str, int]:
    """The special tokens (``content -> id``) of added_tokens, with the ids ``tokenizers`` gives."""
    special: dict[str, int] = {}
    for i, added in enumerate(_get(body, "added_tokens", list, str(path), [])):
        at = f"{path}: added_tokens[{i}]"
        if not isinstance(added, dict):
            raise TokenizerFileError(f"{at} must be an object, got {json.dumps(added)[:40]}")
        content = _get(added, "content", str, at)
        token_id = added.get("id", _MISSING)
        check_id(None if token_id is _MISSING else token_id, f"{at}: 'id'")
        if not content or content in special:
            raise TokenizerFileError(f"{at}: content {content!r} is empty or repeats an added token")
        at = f"{at} ({content!r})"
        if not _get(added, "special", bool, at):
            raise TokenizerFileError(
                f"{at}: an added token that is not special (special false) is not supported; microGPT's "
                "tokenizer adds only special tokens"
            )
        for flag in ("single_word", "lstrip", "rstrip"):
            if _get(added, flag, bool, at, False):
                raise TokenizerFileError(f"{at}: {flag} true is not supported; it must be false")
        if content in vocab and content not in unmerged:
            raise TokenizerFileError(
                f"{at}: id {vocab[content]} is the mergeable token {content!r} of model.vocab; special "
                "tokens must not share ids with mergeable tokens"
            )
        # tokenizers: a token of model.vocab keeps its id; the others take the ids from the
        # vocabulary's size on, in file order
        given = vocab[content] if content in vocab else len(vocab) + sum(t not in vocab for t in special)
        if token_id != given:
            raise TokenizerFileError(
                f"{at}: id {token_id} is not the id tokenizers gives it ({given}: a token of model.vocab "
                "keeps that id; the others take len(model.vocab), len(model.vocab) + 1, ... in file order)"
            )
        special[content] = token_id
    stray = sorted((j, t) for t, j in unmerged.items() if t not in special)
    if stray:
        examples = ", ".join(repr(t) for _, t in stray[:3])
        raise TokenizerFileError(
            f"{path}: model.vocab holds {len(stray)} token(s) that no merge of model.merges makes and "
            f"that are not added_tokens (such as {examples}); is model.merges truncated?"
        )
    return special


def _listing(special: dict[str, int]) -> str:
    names = [t for t, _ in sorted(special.items(), key=lambda item: item[1])]
    if not names:
        return "(none)"
    return "[" + ", ".join(map(repr, names[:12])) + (", ...]" if len(names) > 12 else "]")
