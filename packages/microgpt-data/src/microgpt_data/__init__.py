"""microgpt_data: from raw text to the ``(B, T+1)`` int32 windows that training consumes.

- `Tokenizer` (tiktoken): encode, decode, save/load, GPT-2 files, named tiktoken encodings;
  `read_tokenizer_json` / `write_tokenizer_json`: Hugging Face's tokenizer.json (plain JSON).
- `train_bpe`: byte-level BPE trained by Hugging Face ``tokenizers``, exported to tiktoken ranks.
- `pydocs_texts`: the built-in offline corpus (the interpreter's own documentation).
- `load_text_dataset`: ``pydocs``, local files or a Hub id as a streaming ``datasets.IterableDataset``.
- `PackedLoader`: tokenizes, packs the global batch (each process returns its rows), prefetches and
  resumes exactly, on any number of processes.

Importing this package is cheap: names load on first use (PEP 562), and ``datasets`` and
``tokenizers`` load only inside the functions that need them (extras ``streaming`` and ``bpe``), so a
command can install its signal handlers (`microgpt_data.signals`) before anything heavy is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microgpt_core.lazy import lazy_names

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "DataSourceError",
    "ENDOFTEXT",
    "GPT2_PATTERN",
    "HubUnavailableError",
    "InvalidTextError",
    "LoaderStateError",
    "PYDOCS_SPLITS",
    "PackedLoader",
    "PyDoc",
    "Tokenizer",
    "TokenizerDownloadError",
    "TokenizerFileError",
    "load_text_dataset",
    "pack_tokens",
    "pack_windows",
    "pydocs_documents",
    "pydocs_texts",
    "read_tokenizer_json",
    "to_hf_tokenizer",
    "train_bpe",
    "write_tokenizer_json",
]
__getattr__, __dir__ = lazy_names(
    __name__,
    {
        "to_hf_tokenizer": "microgpt_data.bpe",
        "train_bpe": "microgpt_data.bpe",
        "PYDOCS_SPLITS": "microgpt_data.corpora.pydocs",
        "PyDoc": "microgpt_data.corpora.pydocs",
        "pydocs_documents": "microgpt_data.corpora.pydocs",
        "pydocs_texts": "microgpt_data.corpora.pydocs",
        "DataError": "microgpt_data.errors",
        "DataSourceError": "microgpt_data.errors",
        "HubUnavailableError": "microgpt_data.errors",
        "InvalidTextError": "microgpt_data.errors",
        "LoaderStateError": "microgpt_data.errors",
        "TokenizerDownloadError": "microgpt_data.errors",
        "TokenizerFileError": "microgpt_data.errors",
        "PackedLoader": "microgpt_data.packing",
        "pack_tokens": "microgpt_data.packing",
        "pack_windows": "microgpt_data.packing",
        "load_text_dataset": "microgpt_data.sources",
        "ENDOFTEXT": "microgpt_data.tokenizer",
        "GPT2_PATTERN": "microgpt_data.tokenizer",
        "Tokenizer": "microgpt_data.tokenizer",
        "read_tokenizer_json": "microgpt_data.tokenizer_json",
        "write_tokenizer_json": "microgpt_data.tokenizer_json",
    },
)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load lazily
    from microgpt_data.bpe import to_hf_tokenizer, train_bpe
    from microgpt_data.corpora.pydocs import PYDOCS_SPLITS, PyDoc, pydocs_documents, pydocs_texts
    from microgpt_data.errors import (
        DataError,
        DataSourceError,
        HubUnavailableError,
        InvalidTextError,
        LoaderStateError,
        TokenizerDownloadError,
        TokenizerFileError,
    )
    from microgpt_data.packing import PackedLoader, pack_tokens, pack_windows
    from microgpt_data.sources import load_text_dataset
    from microgpt_data.tokenizer import ENDOFTEXT, GPT2_PATTERN, Tokenizer
    from microgpt_data.tokenizer_json import read_tokenizer_json, write_tokenizer_json
