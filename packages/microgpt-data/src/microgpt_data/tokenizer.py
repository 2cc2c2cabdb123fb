"""`Tokenizer`: byte-level BPE encoding and decoding on top of `tiktoken.Encoding`.

A tokenizer is three things: a table of *mergeable ranks* (bytes -> id; lower ids merge first), a
regular expression that splits text into pieces before BPE runs on each piece, and a few *special
tokens* (``<|endoftext|>``) with ids above the ranks. tiktoken's Rust core does the encoding.

On disk (``save(dir)`` / ``load(dir)``)::

    tokenizer.tiktoken        one line per mergeable token: base64(bytes) SPACE id, ids ascending
    tokenizer_config.json     {"format_version", "name", "pattern", "special_tokens", "eot_token"},
                              and "chat_template" for a chat model

Text in is plain text: a special token's spelling inside user text (``"<|endoftext|>"``) is encoded as
ordinary bytes unless ``allow_special=True`` is passed. Text that is not valid Unicode (a lone
surrogate such as ``"\\ud800"``) is refused with `InvalidTextError`: tiktoken would silently turn it
into U+FFFD and ``decode(encode(s)) == s`` would no longer hold.

Every way in (the constructor, `load`, `from_gpt2_files`) checks the tables before tiktoken sees them:
ids are integers in [0, 2**32) and unique, tokens are non-empty (an empty special token would make
``encode`` loop forever), and the split pattern must carve a probe text into pieces that decode back
to it (a pattern that matches the empty string panics tiktoken; one that skips text loses it).
Ids the tokenizer does not have (a model's padded vocabulary samples them) decode to U+FFFD, one each.

Hugging Face's ``tokenizer.json`` is read and written by `microgpt_data.tokenizer_json`
(``read_tokenizer_json``, ``write_tokenizer_json``; plain JSON, no ``tokenizers``): that module builds
a `Tokenizer`, so it sits above this one (a classmethod here would make an import cycle).

Importing this module never imports ``datasets`` or ``tokenizers`` and never touches the network;
only `Tokenizer.from_tiktoken` downloads, and only when asked by name.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import tiktoken

from microgpt_core.config import is_integer
from microgpt_data.errors import TokenizerDownloadError, TokenizerFileError
from microgpt_data.tokenizer_checks import REPLACEMENT, check_tables, check_text, make_encoding
from microgpt_data.tokenizer_files import (
    CONFIG_FILE,
    GPT2_PATTERN,
    RANKS_FILE,
    TOKENIZER_FORMAT_VERSION,
    gpt2_byte_decoder,
    read_gpt2_files,
    read_tokenizer_files,
    write_tokenizer_files,
)

__all__ = [
    "ENDOFTEXT",
    "GPT2_PATTERN",
    "RANKS_FILE",
    "CONFIG_FILE",
    "TOKENIZER_FORMAT_VERSION",
    "Tokenizer",
    "gpt2_byte_decoder",
]

ENDOFTEXT = "<|endoftext|>"


class Tokenizer:
    """A byte-level BPE tokenizer: mergeable ranks + split pattern + special tokens, run by tiktoken.

    Args:
      ranks: mergeable tokens, ``bytes -> id`` (non-empty bytes; ids integers in [0, 2**32)); every
        single byte must be present.
      special_tokens: ``str -> id``: non-empty strings; ids must not collide with `ranks`.
      pattern: the split regular expression (tiktoken/`fancy-regex` syntax); it must split any text
        into pieces that cover it (checked on a probe text).
      name: a label stored in ``tokenizer_config.json``.
      eot_token: the special token appended after each document; must be in `special_tokens`.
      chat_template: the Jinja source of the model's chat template (Hugging Face's
        ``tokenizer.chat_template``; `microgpt_infer.chat` renders it), saved with the files; None
        for a model without one. It changes no id, so tokenizers compare equal whatever it is.

    Raises:
      TokenizerFileError: naming the argument and what is valid.
    """

    def __init__(
        self,
        ranks: dict[bytes, int],
        special_tokens: dict[str, int],
        *,
        pattern: str = GPT2_PATTERN,
        name: str = "microgpt",
        eot_token: str = ENDOFTEXT,
        chat_template: str | None = None,
    ) -> None:
        check_tables(ranks, special_tokens, pattern=pattern, name=name, eot_token=eot_token)
        if chat_template is not None and not isinstance(chat_template, str):
            raise TokenizerFileError(
                f"chat_template must be a string or None, got {type(chat_template).__name__}"
            )
        self._ranks = {token: int(rank) for token, rank in ranks.items()}  # numpy ids as Python ints
        self._special = {token: int(token_id) for token, token_id in special_tokens.items()}
        self._pattern = pattern
        self._name = name
        self._eot_token = eot_token
        self._chat_template = chat_template
        self._encoding = make_encoding(name, pattern, self._ranks, self._special)

    # ------------------------------------------------------------------ properties
    @property
    def encoding(self) -> tiktoken.Encoding:
        """The underlying `tiktoken.Encoding`."""
        return self._encoding

    @property
    def name(self) -> str:
        return self._name

    @property
    def pattern(self) -> str:
        return self._pattern

    @property
    def ranks(self) -> dict[bytes, int]:
        """A copy of the mergeable ranks, ``bytes -> id``."""
        return dict(self._ranks)

    @property
    def special_tokens(self) -> dict[str, int]:
        return dict(self._special)

    @property
    def chat_template(self) -> str | None:
        """The chat template saved with the tokenizer (Jinja source), or None."""
        return self._chat_template

    @property
    def eot_token(self) -> str:
        return self._eot_token

    @property
    def eot_id(self) -> int:
        """The id of the end-of-text token appended after every document."""
        return self._special[self._eot_token]

    @property
    def vocab_size(self) -> int:
        """One more than the largest id: the embedding table size a model needs."""
        return self._encoding.n_vocab

    def __repr__(self) -> str:
        return f"Tokenizer(name={self._name!r}, vocab_size={self.vocab_size}, eot_id={self.eot_id})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tokenizer):
            return NotImplemented
        return (self._ranks, self._special, self._pattern, self._eot_token) == (
            other._ranks,
            other._special,
            other._pattern,
            other._eot_token,
        )

    __hash__ = None  # equal by content (ranks, specials, pattern, eot); not hashable

    # ------------------------------------------------------------------ encode / decode
    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Token ids of `text`. Special-token spellings are ordinary text unless `allow_special`."""
        check_text(text)
        if allow_special:
            return self._encoding.encode(text, allowed_special="all")
        return self._encoding.encode_ordinary(text)

    def encode_batch(
        self, texts: Sequence[str], *, allow_special: bool = False, num_threads: int | None = None
    ) -> list[list[int]]:
        """`encode` of each text, in parallel threads (tiktoken releases the GIL while encoding)."""
        texts = list(texts)
        for i, text in enumerate(texts):
            check_text(text, f"texts[{i}]")
        threads = num_threads or min(8, os.cpu_count() or 1)
        if threads == 1 or len(texts) == 1:  # no thread pool for nothing to share
            encode = self._encoding.encode if allow_special else self._encoding.encode_ordinary
            kwargs = {"allowed_special": "all"} if allow_special else {}
            return [encode(text, **kwargs) for text in texts]
        if allow_special:
            return self._encoding.encode_batch(texts, num_threads=threads, allowed_special="all")
        return self._encoding.encode_ordinary_batch(texts, num_threads=threads)

    def decode(self, ids: Iterable[int]) -> str:
        """The text of `ids`; byte sequences that are not valid UTF-8 become U+FFFD.

        An id the tokenizer does not have (negative, a gap, or ``>= vocab_size``: a model whose
        vocabulary is padded past the tokenizer's, such as GPT-2's 50304, can sample one) decodes to
        one U+FFFD per id instead of raising.
        """
        ids = [int(i) for i in ids]
        try:
            return self._encoding.decode(ids, errors="replace")
        except (KeyError, OverflowError, ValueError):  # tiktoken: an id it does not have
            return b"".join(map(self.token_bytes, ids)).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one id (for decoding a stream token by token); an id the tokenizer does not
        have gives the bytes of U+FFFD, as in `decode`."""
        try:
            return self._encoding.decode_single_token_bytes(int(token_id))
        except (KeyError, OverflowError, ValueError):
            return REPLACEMENT

    def check_fits(self, vocab_size: int, where: str) -> None:
        """Raises `TokenizerFileError` unless every id of this tokenizer is below a model's
        `vocab_size` (a larger model vocabulary is fine: its extra ids decode as U+FFFD).

        `where` names the tokenizer's origin (a folder, a flag) at the start of the message.
        """
        if not is_integer(vocab_size) or vocab_size < 1:
            raise TokenizerFileError(f"{where}: vocab_size must be a positive integer, got {vocab_size!r}")
        if self.vocab_size > vocab_size:
            raise TokenizerFileError(
                f"{where}: the tokenizer has {self.vocab_size} tokens but the model's vocab_size is "
                f"{vocab_size}; use a model with vocab_size >= {self.vocab_size}, or a tokenizer of at "
                f"most {vocab_size} tokens"
            )

    # ------------------------------------------------------------------ files
    def save(self, directory: str | os.PathLike) -> Path:
        """Writes ``tokenizer.tiktoken`` and ``tokenizer_config.json`` into `directory` (created)."""
        return write_tokenizer_files(
            directory,
            ranks=self._ranks,
            special_tokens=dict(sorted(self._special.items(), key=lambda item: item[1])),
            pattern=self._pattern,
            name=self._name,
            eot_token=self._eot_token,
            chat_template=self._chat_template,
        )

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Tokenizer:
        """Reads a folder written by `save` (no network, no cache: the files are parsed here)."""
        stored = read_tokenizer_files(directory)
        try:
            return cls(stored.pop("ranks"), stored.pop("special_tokens"), **stored)
        except TokenizerFileError as exc:
            raise TokenizerFileError(f"{directory}: {exc}") from None

    @classmethod
    def from_encoding(cls, encoding: tiktoken.Encoding, *, eot_token: str = ENDOFTEXT) -> Tokenizer:
        """Wraps an existing `tiktoken.Encoding`."""
        return cls(
            encoding._mergeable_ranks,
            encoding._special_tokens,
            pattern=encoding._pat_str,
            name=encoding.name,
            eot_token=eot_token,
        )

    @classmethod
    def from_tiktoken(cls, name: str, *, timeout: float = 30.0) -> Tokenizer:
        """A named tiktoken encoding (``"gpt2"``, ``"cl100k_base"``...): downloads it unless cached.

        Raises `TokenizerDownloadError` for an unknown name, or within `timeout` seconds when the
        download fails (offline), saying how to proceed without network.
        """
        known = tiktoken.list_encoding_names()
        if name not in known:
            raise TokenizerDownloadError(
                f"unknown tiktoken encoding {name!r}; known names: {', '.join(known)}"
            )
        result: dict[str, object] = {}

        def fetch() -> None:
            try:
                result["encoding"] = tiktoken.get_encoding(name)
            except BaseException as exc:  # noqa: BLE001 - reported to the caller below
                result["error"] = exc

        thread = threading.Thread(target=fetch, name=f"tiktoken-{name}", daemon=True)
        thread.start()
        thread.join(timeout)
        if "encoding" in result:
            return cls.from_encoding(result["encoding"])  # type: ignore[arg-type]
        reason = (
            f"{type(result['error']).__name__}: {result['error']}"
            if "error" in result
            else (f"no answer within {timeout:g} s")
        )
        raise TokenizerDownloadError(
            f"could not download tiktoken encoding {name!r} ({reason}). Connect to the internet, or set "
            "TIKTOKEN_CACHE_DIR to a folder that already holds it, or use a local tokenizer instead: "
            "Tokenizer.load(DIR), Tokenizer.from_gpt2_files(vocab.json, merges.txt), or train one with "
            "`train-tokenizer --data pydocs --vocab-size 8192 --out DIR`"
        )

    @classmethod
    def from_gpt2_files(
        cls,
        vocab_json: str | os.PathLike,
        merges_txt: str | os.PathLike,
        *,
        pattern: str = GPT2_PATTERN,
        eot_token: str = ENDOFTEXT,
    ) -> Tokenizer:
        """Converts GPT-2 style ``vocab.json`` + ``merges.txt`` (also Hugging Face byte-level BPE).

        Mergeable tokens are the 256 bytes and the result of each merge; any other vocabulary entry
        (``<|endoftext|>``) is a special token. Ids are kept, so tiktoken's ids equal the files' ids;
        this needs the merged tokens' ids to rise in merge order, which is checked.
        """
        ranks, special = read_gpt2_files(vocab_json, merges_txt, eot_token=eot_token)
        name = Path(vocab_json).parent.name or "gpt2"
        try:
            return cls(ranks, special, pattern=pattern, name=name, eot_token=eot_token)
        except TokenizerFileError as exc:
            raise TokenizerFileError(f"{vocab_json} + {merges_txt}: {exc}") from None
