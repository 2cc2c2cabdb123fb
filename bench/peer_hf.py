"""The peer benchmark: Hugging Face `transformers` GPT-2 on PyTorch (CPU) at microGPT's seed configuration.

Standalone: it imports only torch, transformers, numpy, the standard library and `bench/_timing.py`
(standard library only), and runs in the side virtual environment described in DEVELOPERS.md (torch
never enters the workspace's uv.lock), whose interpreter is `$MICROGPT_PEER_PYTHON`, by default
`~/peer-venv/bin/python`:

    PEER=${MICROGPT_PEER_PYTHON:-~/peer-venv/bin/python}
    $PEER bench/peer_hf.py                 # everything, float32
    $PEER bench/peer_hf.py --bf16          # plus eval/train under bf16 autocast
    $PEER bench/peer_hf.py --what decode --repeats 7

It builds a `GPT2LMHeadModel` with random weights (vocab 8192, 256 positions, width 256, 4 layers,
4 heads by default), float32, and prints ONE JSON line on stdout with every figure. Each measurement
runs `--warmup` untimed calls, then reports the median of `--repeats` timed calls (`*_tokens_per_s`)
and, for a machine shared with other work, the fastest of them (`*_best_tokens_per_s`); the raw
times are in `times_s`. `--what` picks among:

  first50  seconds of the first 50-token greedy `generate` call after the model is built (batch 1,
           16-token prompt): no warmup, measured before anything else runs; also the seconds from
           the start of this script to the end of that call (imports and model build included).
  decode   KV-cached greedy decoding, 16-token prompt, exactly 256 new tokens, batch 1 and batch 8:
           tokens/s = batch * 256 / median seconds of one `generate` call (prefill included).
  eval     forward over batch 16 x 256 under `torch.no_grad()`: tokens/s = 16 * 256 / seconds.
  train    one AdamW step (forward, loss with labels, backward, optimizer step) on 16 x 256,
           dropout active as configured: tokens/s = 16 * 256 / seconds.

With `--bf16`, eval and train are measured again under `torch.autocast("cpu", dtype=torch.bfloat16)`.
The thread count is torch's default (reported). A 16-token prompt plus 256 new tokens needs 272
positions: when the configured `--n-positions` is shorter, the model is built with just enough
positions for decoding (reported as `n_positions_built`); eval and train still use `--seq-len`.

With `--serve` it measures nothing by itself: after building the model it reads requests from stdin,
one per line, and answers each with one JSON line on stdout, so that another benchmark can time the
peer's calls interleaved with its own (`bench/_peer.py`'s `PeerServer`):

  decode B   one greedy `generate` call at batch B, as in `decode` (the first request for a batch
             size runs `--warmup` untimed calls first): {"seconds": S, "tokens": B * new_tokens}
"""

from __future__ import annotations

import time

_SCRIPT_START = time.perf_counter()

import argparse  # noqa: E402  (imports after the clock starts: first50 counts them)
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from _timing import stopwatch, timed  # noqa: E402  (bench/_timing.py: standard library only)
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

ALL_WHAT = ("first50", "decode", "eval", "train")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line flags; every default is the seed configuration and the standard measurement."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--what",
        default=",".join(ALL_WHAT),
        help=f"comma list of measurements among {','.join(ALL_WHAT)} (default: all)",
    )
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size V")
    p.add_argument("--n-positions", type=int, default=256, help="context length T")
    p.add_argument("--n-embd", type=int, default=256, help="model width D")
    p.add_argument("--n-layer", type=int, default=4, help="number of blocks L")
    p.add_argument("--n-head", type=int, default=4, help="attention heads H")
    p.add_argument(
        "--dropout",
        type=float,
        default=0.1,
        help="GPT-2 resid/embd/attn dropout, active in the train step only (seed: 0.1)",
    )
    p.add_argument("--prompt-len", type=int, default=16, help="decode prompt length")
    p.add_argument("--new-tokens", type=int, default=256, help="decode: tokens generated per call")
    p.add_argument("--decode-batches", default="1,8", help="comma list of decode batch sizes")
    p.add_argument("--first-tokens", type=int, default=50, help="first50: tokens of the first call")
    p.add_argument("--batch", type=int, default=16, help="eval/train batch size")
    p.add_argument("--seq-len", type=int, default=256, help="eval/train sequence length")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls before each measurement")
    p.add_argument("--repeats", type=int, default=5, help="timed calls; the median is reported")
    p.add_argument("--bf16", action="store_true", help="also eval/train under bfloat16 autocast")
    p.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    p.add_argument(
        "--serve", action="store_true", help="answer timing requests from stdin instead (see above)"
    )
    args = p.parse_args(argv)
    args.what = [w.strip() for w in args.what.split(",") if w.strip()]
    unknown = sorted(set(args.what) - set(ALL_WHAT))
    if unknown:
        p.error(f"--what: unknown measurement(s) {unknown}; valid: {','.join(ALL_WHAT)}")
    args.decode_batches = [int(b) for b in args.decode_batches.split(",") if b.strip()]
    if args.seq_len > args.n_positions:
        p.error(f"--seq-len {args.seq_len} must be <= --n-positions {args.n_positions}")
    if args.repeats < 1 or args.warmup < 0:
        p.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def median_seconds(fn: Callable[[], object], warmup: int, repeats: int) -> tuple[float, list[float]]:
    """Runs `fn` `warmup` times untimed, then `repeats` times timed; returns (median, all times)."""
    times = timed(fn, repeats, warmup)
    return statistics.median(times), times


def greedy(model: GPT2LMHeadModel, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Exactly `new_tokens` KV-cached greedy tokens after `prompt` (B, P)."""
    with torch.no_grad():
        out = model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            do_sample=False,
            use_cache=True,
            min_new_tokens=new_tokens,
            max_new_tokens=new_tokens,
            pad_token_id=0,
        )
    assert out.shape == (prompt.shape[0], prompt.shape[1] + new_tokens), out.shape
    return out


def serve(model: GPT2LMHeadModel, args: argparse.Namespace, tokens: Callable) -> int:
    """Answers `decode B` requests from stdin with one timed call each, until stdin closes."""
    prompts: dict[int, torch.Tensor] = {}
    for line in sys.stdin:
        request = line.split()
        if len(request) != 2 or request[0] != "decode" or not request[1].isdigit() or int(request[1]) < 1:
            error = f"unknown request {line.strip()!r}; valid: decode B"
            sys.stdout.write(json.dumps({"error": error}) + "\n")
            sys.stdout.flush()
            return 2
        batch = int(request[1])
        warmup = 0 if batch in prompts else args.warmup  # the first request for a batch size warms up
        if batch not in prompts:
            prompts[batch] = tokens(batch, args.prompt_len)
        seconds = timed(lambda p=prompts[batch]: greedy(model, p, args.new_tokens), warmup=warmup)[0]
        sys.stdout.write(json.dumps({"seconds": seconds, "tokens": batch * args.new_tokens}) + "\n")
        sys.stdout.flush()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Builds the model, runs the selected measurements, prints one JSON line."""
    args = parse_args(argv)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(args.seed)
    gen = np.random.default_rng(args.seed)

    n_positions_built = max(
        args.n_positions, args.prompt_len + args.new_tokens, args.prompt_len + args.first_tokens
    )
    hf_config = GPT2Config(
        vocab_size=args.vocab_size,
        n_positions=n_positions_built,
        n_embd=args.n_embd,
        n_layer=args.n_layer,
        n_head=args.n_head,
        resid_pdrop=args.dropout,
        embd_pdrop=args.dropout,
        attn_pdrop=args.dropout,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    model = GPT2LMHeadModel(hf_config).to(torch.float32).eval()
    build_done = time.perf_counter()

    def tokens(batch: int, length: int) -> torch.Tensor:
        return torch.from_numpy(gen.integers(1, args.vocab_size, (batch, length), dtype=np.int64))

    if args.serve:
        return serve(model, args, tokens)

    result: dict[str, object] = {
        "bench": "peer_hf",
        "model": "transformers.GPT2LMHeadModel (random weights, float32)",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "config": {
            "vocab_size": args.vocab_size,
            "n_positions": args.n_positions,
            "n_positions_built": n_positions_built,
            "n_embd": args.n_embd,
            "n_layer": args.n_layer,
            "n_head": args.n_head,
            "dropout": args.dropout,
            "tied_embeddings": True,
        },
        "params": sum(p.numel() for p in model.parameters()),
        "warmup": args.warmup,
        "repeats": args.repeats,
        "what": args.what,
        "build_s": round(build_done - _SCRIPT_START, 3),
    }
    times: dict[str, list[float]] = {}

    if "first50" in args.what:  # first, before any other call has warmed anything up
        prompt = tokens(1, args.prompt_len)
        with stopwatch() as first:
            greedy(model, prompt, args.first_tokens)
        result["first50_tokens"] = args.first_tokens
        result["first50_first_generate_call_s"] = round(first.seconds, 3)
        result["first50_since_script_start_s"] = round(time.perf_counter() - _SCRIPT_START, 3)

    if "decode" in args.what:
        result["decode_prompt_len"] = args.prompt_len
        result["decode_new_tokens"] = args.new_tokens
        for batch in args.decode_batches:
            prompt = tokens(batch, args.prompt_len)
            med, ts = median_seconds(
                lambda p=prompt: greedy(model, p, args.new_tokens), args.warmup, args.repeats
            )
            result[f"decode_b{batch}_tokens_per_s"] = round(batch * args.new_tokens / med, 1)
            result[f"decode_b{batch}_best_tokens_per_s"] = round(batch * args.new_tokens / min(ts), 1)
            times[f"decode_b{batch}"] = ts

    n_tok = args.batch * args.seq_len
    dtypes = ["f32"] + (["bf16"] if args.bf16 else [])
    if "eval" in args.what:
        x = tokens(args.batch, args.seq_len)

        def forward(bf16: bool) -> None:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(input_ids=x, use_cache=False).logits.float().sum().item()

        model.eval()
        for name in dtypes:
            med, ts = median_seconds(lambda b=(name == "bf16"): forward(b), args.warmup, args.repeats)
            result[f"eval_{name}_tokens_per_s"] = round(n_tok / med, 1)
            result[f"eval_{name}_best_tokens_per_s"] = round(n_tok / min(ts), 1)
            times[f"eval_{name}"] = ts

    if "train" in args.what:
        x = tokens(args.batch, args.seq_len)
        optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

        def step(bf16: bool) -> None:
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=x, labels=x, use_cache=False).loss
            loss.backward()
            optimizer.step()
            loss.item()

        model.train()
        for name in dtypes:
            med, ts = median_seconds(lambda b=(name == "bf16"): step(b), args.warmup, args.repeats)
            result[f"train_{name}_tokens_per_s"] = round(n_tok / med, 1)
            result[f"train_{name}_best_tokens_per_s"] = round(n_tok / min(ts), 1)
            times[f"train_{name}"] = ts
        model.eval()

    result["times_s"] = {k: [round(t, 4) for t in v] for k, v in times.items()}
    result["total_s"] = round(time.perf_counter() - _SCRIPT_START, 1)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
