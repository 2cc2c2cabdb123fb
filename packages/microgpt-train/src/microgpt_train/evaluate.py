"""`evaluate --model NAME --data SPEC`: validation loss, perplexity and bits per byte of a model.

The model is any name `microgpt_infer.load_model` takes ("default", a model folder of our layout or
GPT-2's or Llama's in Hugging Face's, a run folder, a Hub id), resolved by `microgpt_infer.resolve_model`
and read by `microgpt_infer.folder.load_folder`. Bits per byte are the loss in bits over the bytes of
text the predicted tokens stand for (special tokens count 0 bytes), so models with different
tokenizers compare on the same text. On chat data (rows of ``messages``) the model's chat template
renders each conversation and every figure counts the assistant's tokens only, as `train` evaluates
a chat fine-tuning (`chat_data.py`); a model without a template of its own cannot be evaluated so.

uv run evaluate --model runs/quickstart/model --data pydocs --batches 16
uv run evaluate --model runs/quickstart --data pydocs     # a run folder: its model/, or its newest
                                                          # checkpoint when the run did not finish
uv run evaluate --model default --batches 100000          # the model microgpt-infer ships, on the
                                                          # whole validation split
uv run evaluate --model org/name                          # a Hugging Face Hub repository
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from microgpt_core.config import is_integer
from microgpt_data.commands import Parser, fail, interrupted, notes_on_stderr
from microgpt_data.signals import Interrupts

__all__ = ["evaluate_model", "main"]


def evaluate_model(
    model_dir: str | Path, data: str, *, split: str = "validation", batches: int = 16, batch_size: int = 8,
    seq_len: int | None = None, text_column: str = "text", log=None,
) -> dict[str, float]:  # fmt: skip
    """Mean next-token loss (nats/token), perplexity and bits per byte over the first `batches`
    windows of `data` (all of them when the split has fewer).

    `model_dir` is any model name `microgpt_infer.load_model` takes: "default" (the model microgpt-infer
    ships), a model folder (ours, or GPT-2 or Llama in Hugging Face's layout), a run folder (its
    model/, or its newest checkpoint), or a Hub repo id; `log` is called with a note when a run
    folder's checkpoint stands in for its missing model (default: a warning on the
    "microgpt_infer" logger).
    Returns:
      {"loss", "perplexity", "bits_per_byte", "tokens" (predicted), "bytes" (of text they stand
      for), "unigram_entropy"}.
    """
    for name, value in (("batches", batches), ("batch-size", batch_size)):
        if not is_integer(value) or value < 1:
            raise ValueError(f"--{name} must be an integer >= 1, got {value!r}")
    import jax
    import numpy as np

    from microgpt_data import PackedLoader, load_text_dataset
    from microgpt_data.chats import load_chat_dataset
    from microgpt_infer import resolve_model
    from microgpt_infer.folder import load_folder
    from microgpt_train.metrics import bits_per_byte, text_bytes, unigram_entropy
    from microgpt_train.step import make_eval_step

    loaded = load_folder(resolve_model(model_dir, log=log))  # the tokenizer checked against the config
    params, config, tokenizer = loaded.params, loaded.config, loaded.tokenizer
    seq_len = seq_len or config.context_length
    if not 1 <= seq_len <= config.context_length:
        raise ValueError(
            f"--seq-len must be in [1, {config.context_length}] (the model's context), got {seq_len}"
        )
    encode = _chat_encoder(loaded, data, text_column, seq_len)
    if encode is None:
        dataset = load_text_dataset(data, split, text_column=text_column)
    else:
        dataset = load_chat_dataset(data, split)
    eval_step = make_eval_step(config)
    total = count = 0.0
    seen = []
    loader = PackedLoader(dataset, tokenizer, batch_size=batch_size, seq_len=seq_len, epochs=1, encode=encode)
    with loader:
        for _, batch in zip(range(batches), loader, strict=False):
            s, n = eval_step(params, jax.numpy.asarray(batch))
            total, count = total + float(s), count + float(n)
            seen.append(batch[:, 1:] if encode is None else batch[:, 0, 1:][batch[:, 1, 1:] == 1])
    if not seen:
        raise ValueError(f"{data} ({split}): no window of {seq_len + 1} tokens to evaluate")
    if not count:
        raise ValueError(f"{data} ({split}): no assistant token to evaluate in {len(seen)} batch(es)")
    loss, targets = total / count, np.concatenate(seen)
    n_bytes = text_bytes(targets, tokenizer)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)),
            "bits_per_byte": bits_per_byte(loss, int(count), n_bytes), "tokens": int(count),
            "bytes": n_bytes, "unigram_entropy": unigram_entropy(targets)}  # fmt: skip


def _chat_encoder(model, data: str, text_column: str, seq_len: int):
    """A `chat_data.ChatEncoder` for chat data (None for text); ValueError for a model with no template."""
    from microgpt_data.chats import is_chat_data
    from microgpt_infer.chat import load_chat_template
    from microgpt_train.chat_data import ChatEncoder, chat_tokenizer

    if not is_chat_data(data, text_column):
        return None
    template = load_chat_template(model.source)  # a folder of any layout: ours, or Hugging Face's
    if template is None:
        raise ValueError(
            f"{data} holds conversations, but {model.source} has no chat template of its own to render "
            "them with: evaluate a chat model (train --init-from MODEL --data CHAT makes one)"
        )
    return ChatEncoder(chat_tokenizer(model.tokenizer, template), seq_len)


def main(argv: list[str] | None = None) -> int:
    with Interrupts():  # Ctrl-C: "interrupted", exit 130, at once in any phase (it writes nothing)
        return _evaluate(argv)


def _evaluate(argv: list[str] | None) -> int:
    parser = Parser(
        prog="evaluate", description="Loss, perplexity and bits per byte of a model on a dataset."
    )
    parser.add_argument(
        "--model",
        required=True,
        help="default (the model microgpt-infer ships), a model folder (ours, or GPT-2 or Llama in "
        "Hugging Face's layout), a run folder (runs/NAME: its model/ or newest checkpoint) or a Hugging "
        "Face Hub repo id (org/name)",
    )
    parser.add_argument("--data", default="pydocs", help="pydocs, a local file or folder, or org/name")
    parser.add_argument("--split", default="validation", choices=["train", "validation"], help="which split")
    parser.add_argument("--batches", type=int, default=16, help="batches to evaluate")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per batch")
    parser.add_argument(
        "--seq-len", type=int, default=None, help="tokens per sequence (default: the context)"
    )
    parser.add_argument("--text-column", default="text", help="column holding the text")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    try:
        note = lambda text: print(text, file=sys.stderr)
        with notes_on_stderr("microgpt_infer"):
            result = evaluate_model(
                args.model, args.data, split=args.split, batches=args.batches, batch_size=args.batch_size,
                seq_len=args.seq_len, text_column=args.text_column, log=note,
            )  # fmt: skip
    except KeyboardInterrupt:  # Python's own Ctrl-C (outside the main thread)
        return interrupted()
    except Exception as err:
        if args.debug:
            raise
        fail(err)
        return 2 if isinstance(err, ValueError | OSError) else 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
