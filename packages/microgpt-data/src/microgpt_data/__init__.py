"""microgpt_data: from raw text to the ``(B, T+1)`` int32 windows that training consumes.

- `Tokenizer` (tiktoken): encode, decode, save/load, GPT-2 files, named tiktoken encodings;
  `read_tokenizer_json` / `write_tokenizer_json`: Hugging Face's tokenizer.json (plain JSON).
- `train_bpe`: byte-level BPE trained by Hugging Face ``tokenizers``, exported to tiktoken ranks.
- `pydocs_texts`: the built-in offline corpus (the interpreter's own documentation).
- `load_text_dataset`: ``pydocs``, local files or a Hub id as a streaming ``datasets.IterableDataset``.
- `PackedLoader`: tokenizes, packs the global batch (each process returns its rows), prefetches and
  resumes exactly, on any number of processes.

Importing this package never imports ``datasets`` or ``tokenizers``: they load inside the functions
that need them (extras ``streaming`` and ``bpe``).
"""

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
