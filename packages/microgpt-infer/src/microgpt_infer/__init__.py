"""microgpt_infer: sample from microGPT models (local, on the Hugging Face Hub), GPT-2 and Llama checkpoints.

    from microgpt_infer import generate_text, load_model, generate, generate_chat, push_to_hub
    from microgpt_infer.export_hf import export_hf

- `load_model(source, revision=None)`: "default" (the shipped model), a model folder (ours, or GPT-2
  or Llama in Hugging Face's layout), a run folder or a Hub repo id; returns a
  `Model(params, config, tokenizer, source)`. `resolve_model(source)` turns any of those names into
  its local folder, and `load_tokenizer(source)` reads its tokenizer alone.
- `generate(model, prompts, ...)`: batched, streaming, stop strings, top-k/top-p.
- `generate_chat(model, messages, ...)`: the assistant's next message, through the model's chat
  template (or the default one).
- `generate_text(rng, text, max_new_tokens=50, temperature=1.0)`: the original microGPT call.
- `push_to_hub(model_dir, repo_id)`: any model name, ours or a Hugging Face layout.
- `export_hf.export_hf(model_dir, out_dir)`: our model in Hugging Face's GPT-2 or Llama layout, for
  transformers (reached through its module, whose name it shares: a package attribute of that name
  would be shadowed by the module once imported).

Importing this package is cheap and touches no network: names load on first use (PEP 562), so
`import microgpt_infer` imports neither JAX nor huggingface_hub until something needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from microgpt_core.lazy import lazy_names

__version__ = "0.1.0"


__all__ = [
    "ExportError",
    "HubError",
    "InferError",
    "Model",
    "ModelFileError",
    "ModelNotFoundError",
    "PromptTooLongError",
    "UnsupportedModelError",
    "find_default_model",
    "generate",
    "generate_chat",
    "generate_text",
    "load_model",
    "load_tokenizer",
    "push_to_hub",
    "resolve_model",
]
__getattr__, __dir__ = lazy_names(
    __name__,
    {
        "Model": "microgpt_infer.folder",
        "load_model": "microgpt_infer.model",
        "load_tokenizer": "microgpt_infer.model",
        "resolve_model": "microgpt_infer.model",
        "find_default_model": "microgpt_infer.model",
        "generate": "microgpt_infer.generation",
        "generate_chat": "microgpt_infer.generation",
        "generate_text": "microgpt_infer.generation",
        "push_to_hub": "microgpt_infer.hub",
        "InferError": "microgpt_infer.errors",
        "ModelNotFoundError": "microgpt_infer.errors",
        "ModelFileError": "microgpt_infer.errors",
        "UnsupportedModelError": "microgpt_infer.errors",
        "HubError": "microgpt_infer.errors",
        "PromptTooLongError": "microgpt_infer.errors",
        "ExportError": "microgpt_infer.errors",
    },
)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load lazily
    from microgpt_infer.errors import (
        ExportError,
        HubError,
        InferError,
        ModelFileError,
        ModelNotFoundError,
        PromptTooLongError,
        UnsupportedModelError,
    )
    from microgpt_infer.folder import Model
    from microgpt_infer.generation import generate, generate_chat, generate_text
    from microgpt_infer.hub import push_to_hub
    from microgpt_infer.model import find_default_model, load_model, load_tokenizer, resolve_model
