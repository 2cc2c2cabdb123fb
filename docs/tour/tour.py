"""The numbers and figures of docs/tour.md, measured on the model microgpt-infer ships.

    uv run python docs/tour/tour.py     # writes docs/tour/*.png and docs/tour/findings.json

It prints every number the tour quotes, as the markdown tables the tour copies, and writes them to
findings.json (tests/test_tour.py checks that the tour quotes nothing else). The analysis functions
take params and config, so the tests run them on a tiny random model too. Float32 compute throughout
(the shipped config computes in bfloat16). Seeds and sample sizes are the constants below.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from microgpt_core import cross_entropy, logit_lens, trace

HERE = Path(__file__).resolve().parent
SEQUENCES, SEQ_LEN = 32, 128  # validation text: the first 32 windows of 128 (+1) tokens of pydocs
REPEAT, REPEAT_ROWS, REPEAT_SEED = 50, 16, 0  # 50 random ids, then the same 50 again; 16 rows
THRESHOLD = 0.4  # a head "attends to" a position when it puts this much of its attention there
TOP_K = 3  # induction candidates ablated together
CONTROL_DRAWS, CONTROL_SEED = 20, 1  # random sets of TOP_K other heads, the control
CLEAN, CORRUPT = '   >>> s = "hello world', "   >>> s = 'hello world"  # differ in one token: the quote
ANSWER, WRONG = '"', "'"  # the next token each prompt wants: the closing quote

traced = jax.jit(trace, static_argnames=("config",))


def head_name(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


# --- 1. previous-token and first-token heads ------------------------------------------------------
def previous_token_scores(pattern: jax.Array) -> jax.Array:
    """Mean attention from query t to key t-1, over rows and queries t >= 2 (at t = 1 the previous
    token is the first). pattern (L, B, H, T, T) -> (L, H)."""
    previous = jnp.diagonal(pattern, offset=-1, axis1=-2, axis2=-1)  # (L, B, H, T-1): query t+1 -> key t
    return jnp.mean(previous[..., 1:], axis=(1, 3))  # (L, H)


def first_token_scores(pattern: jax.Array) -> jax.Array:
    """Mean attention from query t to key 0, over rows and queries t >= 2. (L, B, H, T, T) -> (L, H)."""
    return jnp.mean(pattern[..., 2:, 0], axis=(1, 3))  # (L, H)


def uniform_score(length: int) -> float:
    """Either score of a head that spreads its attention evenly over keys 0..t: mean of 1/(t+1)."""
    return float(np.mean(1.0 / (np.arange(2, length) + 1)))


# --- 2. induction -----------------------------------------------------------------------------------
def repeated_tokens(seed: int, rows: int, n: int, vocab_size: int, skip: int) -> np.ndarray:
    """(rows, 2n) int32: n ids drawn uniformly from the vocabulary without `skip` (end-of-text), twice."""
    ids = np.setdiff1d(np.arange(vocab_size), [skip])  # (V-1,)
    first = np.random.default_rng(seed).choice(ids, size=(rows, n))  # (B, n)
    return np.concatenate([first, first], axis=1).astype(np.int32)  # (B, 2n)


def induction_scores(pattern: jax.Array, n: int) -> jax.Array:
    """Mean attention from query t of the second repeat (n <= t < 2n) to key t-n+1, the token that
    followed the first occurrence of token t. (L, B, H, 2n, 2n) -> (L, H)."""
    queries = jnp.arange(n, 2 * n)  # (n,)
    return jnp.mean(pattern[..., queries, queries - n + 1], axis=(1, 3))  # (L, H)


def token_losses(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """-log p(token t+1 | tokens <= t): logits (B, T, V), tokens (B, T) -> (B, T-1)."""
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)  # (B, T-1, V)
    return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]  # (B, T-1)


def half_losses(params, config, tokens, n: int, ablate=()) -> tuple[float, float]:
    """Mean loss of the n-1 predictions inside each repeat: targets 1..n-1 and n+1..2n-1."""
    pairs = jnp.asarray(ablate, jnp.int32).reshape(-1, 2)  # (N, 2)
    logits, _ = traced(params, jnp.asarray(tokens), config, ablate=pairs)  # (B, 2n, V)
    nll = token_losses(logits, jnp.asarray(tokens))  # (B, 2n-1)
    return float(jnp.mean(nll[:, : n - 1])), float(jnp.mean(nll[:, n : 2 * n - 1]))


# --- 3. logit lens ----------------------------------------------------------------------------------
def lens_curve(params, config, tokens) -> tuple[np.ndarray, np.ndarray, float]:
    """Per stage (the embeddings, then each layer's resid_post) the loss of the lens logits against
    the next token, and the fraction of positions whose lens top-1 is the model's final top-1; and
    the fraction where the embeddings' lens top-1 is the input token itself.
    tokens (B, T+1) -> (L+1,), (L+1,), float."""
    losses, agreement, echo = _lens(params, jnp.asarray(tokens), config)
    return np.asarray(losses), np.asarray(agreement), float(echo)


def _lens_impl(params, tokens, config):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T), (B, T)
    logits, activations = trace(params, inputs, config)  # (B, T, V)
    stages = jnp.concatenate([activations["embed"][None], activations["resid_post"]])  # (L+1, B, T, D)
    lens = logit_lens(params, {"resid_post": stages}, config)  # (L+1, B, T, V)
    top = jnp.argmax(lens, axis=-1)  # (L+1, B, T)
    losses = jax.vmap(lambda z: cross_entropy(z, targets))(lens)  # (L+1,)
    agreement = jnp.mean(top == jnp.argmax(logits, axis=-1)[None], axis=(1, 2))  # (L+1,)
    return losses, agreement, jnp.mean(top[0] == inputs)


_lens = jax.jit(_lens_impl, static_argnames=("config",))


# --- 4. single-head ablation ------------------------------------------------------------------------
def validation_loss(params, config, tokens, ablate=()) -> float:
    """Mean next-token loss on tokens (B, T+1), with the (layer, head) pairs in `ablate` zeroed."""
    return float(_loss(params, jnp.asarray(tokens), config, jnp.asarray(ablate, jnp.int32).reshape(-1, 2)))


def _loss_impl(params, tokens, config, ablate):
    logits, _ = trace(params, tokens[:, :-1], config, ablate=ablate)  # (B, T, V)
    return cross_entropy(logits, tokens[:, 1:])


_loss = jax.jit(_loss_impl, static_argnames=("config",))


def head_ablation_losses(params, config, tokens) -> np.ndarray:
    """(L, H): the loss with each head ablated alone."""
    L, H = config.n_layers, config.n_heads
    return np.array([[validation_loss(params, config, tokens, [(i, j)]) for j in range(H)] for i in range(L)])


# --- 5. activation patching -------------------------------------------------------------------------
def patching_grid(params, config, clean, corrupt, answer: int, wrong: int):
    """Patch resid_post at (layer, position) from the clean run into the corrupted one; how much of the
    logit difference logit(answer) - logit(wrong) at the last position it restores:

        restored = (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt)

    clean, corrupt: (T,) ids. Returns (L, T) restored, and the floats LD_clean, LD_corrupt."""
    T = len(clean)
    logits, activations = traced(params, jnp.asarray([clean, corrupt]), config)  # (2, T, V)
    ld = logits[:, -1, answer] - logits[:, -1, wrong]  # (2,)
    rows = jnp.tile(jnp.asarray(corrupt)[None], (T, 1))  # (T, T): row p patches position p
    one_position = jnp.eye(T, dtype=bool)[:, :, None]  # (T, T, 1)
    grid = np.zeros((config.n_layers, T))
    for layer in range(config.n_layers):
        clean_resid, corrupt_resid = activations["resid_post"][layer]  # (T, D) each
        patched = jnp.where(one_position, clean_resid[None], corrupt_resid[None])  # (T, T, D)
        out, _ = traced(params, rows, config, patch={"resid_post": (layer, patched)})  # (T, T, V)
        grid[layer] = np.asarray((out[:, -1, answer] - out[:, -1, wrong] - ld[1]) / (ld[0] - ld[1]))
    return grid, float(ld[0]), float(ld[1])


def logit_difference(params, config, tokens, answer: int, wrong: int, ablate=()) -> float:
    """logit(answer) - logit(wrong) after the last token of tokens (T,), with `ablate`'s heads zeroed."""
    pairs = jnp.asarray(ablate, jnp.int32).reshape(-1, 2)  # (N, 2)
    logits, _ = traced(params, jnp.asarray(tokens)[None], config, ablate=pairs)  # (1, T, V)
    return float(logits[0, -1, answer] - logits[0, -1, wrong])


# --- figures and tables -----------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmaps(path, panels, *, xlabel="head", xticks=None, vmin=None, vmax=None, digits=2, width=4.6):
    """One annotated heatmap per (title, (L, columns) array), side by side, rows labelled L0, L1, ..."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 3.6), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels, strict=True):
        low = values.min() if vmin is None else vmin
        high = values.max() if vmax is None else vmax
        image = ax.imshow(values, cmap="viridis", aspect="auto", vmin=low, vmax=high)
        for (r, c), v in np.ndenumerate(values):
            color = "w" if v - low < 0.6 * (high - low) else "k"
            ax.text(c, r, f"{v:.{digits}f}", ha="center", va="center", fontsize=7, color=color)
        ax.set(title=title, xlabel=xlabel, ylabel="layer", yticks=range(values.shape[0]))
        ax.set_yticklabels([f"L{r}" for r in range(values.shape[0])])
        ax.set_xticks(range(values.shape[1]), xticks or range(values.shape[1]), fontsize=7)
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def lines(path, panels, *, x=None, log=(), hline=None):
    """One panel per (title, ylabel, [(label, values)]); x: tick labels; log: indices of the panels
    with a log y axis; hline: (label, y), drawn on every panel."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.4), squeeze=False)
    for i, (ax, (title, ylabel, series)) in enumerate(zip(axes[0], panels, strict=True)):
        for label, values in series:
            ax.plot(values, "o-" if len(values) < 20 else "-", label=label, markersize=4)
        if hline:
            ax.axhline(hline[1], color="gray", linestyle="--", label=hline[0])
        if x is not None:
            ax.set_xticks(range(len(x)), x, fontsize=7)
        ax.set(title=title, ylabel=ylabel, yscale="log" if i in log else "linear")
        if i in log:  # plain numbers (3, 4, 10, 20), not powers of ten
            ax.yaxis.set_major_formatter(lambda v, _: f"{v:g}")
            ax.yaxis.set_minor_formatter(lambda v, _: f"{v:g}" if str(v)[0] in "2345" else "")
        ax.grid(alpha=0.3)
        if len(series) > 1 or hline:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(header: list[str], rows: list[list]) -> str:
    """A markdown table; floats with 3 decimals."""
    cell = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    rows = [header, ["---"] * len(header), *([cell(v) for v in row] for row in rows)]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def rounded(tree):
    """Floats rounded to 6 decimals, for findings.json."""
    if isinstance(tree, dict):
        return {k: rounded(v) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return [rounded(v) for v in tree]
    return round(float(tree), 6) if isinstance(tree, float | np.floating) else tree


def per_head(values) -> dict[str, float]:
    """{"L0H0": values[0, 0], ...} for an (L, H) array."""
    return {head_name(*index): float(v) for index, v in np.ndenumerate(np.asarray(values))}


# --- the tour, one section per question ---------------------------------------------------------------
def attention_section(params, config, batch) -> dict:
    """1. Which heads attend to the previous token, or to the first."""
    _, activations = traced(params, jnp.asarray(batch[:, :-1]), config)
    previous = np.asarray(previous_token_scores(activations["attn_pattern"]))  # (L, H)
    first = np.asarray(first_token_scores(activations["attn_pattern"]))  # (L, H)
    panels = [("attention to the previous token", previous), ("attention to the first token", first)]
    heatmaps(HERE / "attention.png", panels, vmin=0.0, vmax=1.0)
    order = [divmod(int(i), config.n_heads) for i in np.argsort(-previous.ravel())]
    top = divmod(int(first.argmax()), config.n_heads)
    print(f"1. a uniform head scores {uniform_score(batch.shape[1] - 1):.3f}; threshold {THRESHOLD}")
    rows = [[head_name(*p), float(previous[p]), float(first[p])] for p in order[:6]]
    print(table(["head", "to the previous token", "to the first token"], rows))
    print(f"most attention to the first token: {head_name(*top)} {first[top]:.3f}")
    return {
        "threshold": THRESHOLD,
        "uniform": uniform_score(batch.shape[1] - 1),
        "previous_token": per_head(previous),
        "first_token": per_head(first),
        "previous_token_heads": [head_name(*p) for p in order if previous[p] > THRESHOLD],
        "first_token_heads": [head_name(*p) for p in zip(*np.nonzero(first > THRESHOLD), strict=True)],
        "first_token_max": float(first[top]),
        "first_token_max_head": head_name(*top),
    }


def induction_section(params, config, batch, eot_id: int) -> dict:
    """2. Whether a head copies: random tokens repeated (and validation text repeated), induction
    scores, and ablating the top candidates against random other heads."""
    n = REPEAT
    repeated = repeated_tokens(REPEAT_SEED, REPEAT_ROWS, n, config.vocab_size, eot_id)  # (16, 2n)
    text = np.concatenate([batch[:REPEAT_ROWS, :n]] * 2, axis=1)  # (16, 2n)
    curves = []  # (2n-1,) mean loss per target position, for each
    for tokens in (repeated, text):
        logits, activations = traced(params, jnp.asarray(tokens), config)
        curves.append(np.asarray(jnp.mean(token_losses(logits, jnp.asarray(tokens)), axis=0)))
        if tokens is repeated:
            induction = np.asarray(induction_scores(activations["attn_pattern"], n))  # (L, H)
    (random_first, base), (text_first, text_second) = [(c[: n - 1].mean(), c[n:].mean()) for c in curves]
    ranked = [divmod(int(i), config.n_heads) for i in np.argsort(-induction.ravel())]
    candidates, others = ranked[:TOP_K], ranked[TOP_K:]
    second = lambda pairs: half_losses(params, config, repeated, n, pairs)[1] - base
    ablations = {" + ".join(head_name(*p) for p in candidates): second(candidates)}
    ablations |= {head_name(*p): second([p]) for p in candidates}
    draws = np.random.default_rng(CONTROL_SEED)
    picks = [draws.choice(len(others), TOP_K, replace=False) for _ in range(CONTROL_DRAWS)]
    control = np.array([second([others[i] for i in pick]) for pick in picks])
    uniform_guess = float(np.log(config.vocab_size - 1))

    heatmaps(HERE / "induction.png", [("induction score (attention to t-n+1)", induction)])
    titles = ("50 random tokens, twice", "50 tokens of validation text, twice")
    panels = [
        (title, "loss (nats/token)", [("first time", c[: n - 1]), ("repeated", c[n:])])
        for title, c in zip(titles, curves, strict=True)
    ]
    ticks = [str(t) if t % 10 == 0 else "" for t in range(1, n)]
    lines(HERE / "induction_loss.png", panels, x=ticks, hline=("uniform guess", uniform_guess))
    print(f"2. first time, repeated: random {random_first:.3f} {base:.3f}; ", end="")
    print(f"text {text_first:.3f} {text_second:.3f}")
    print(f"uniform guess {uniform_guess:.3f}; a uniform head's induction score {_uniform_induction(n):.3f}")
    print(table(["head", "induction score"], [[head_name(*p), float(induction[p])] for p in ranked[:5]]))
    rows = [[k, float(v)] for k, v in ablations.items()]
    rows += [[f"{TOP_K} random other heads, mean of {CONTROL_DRAWS}", float(control.mean())]]
    rows += [["the same, smallest", float(control.min())], ["the same, largest", float(control.max())]]
    print(table(["ablated", "second-time loss change"], rows))
    return {
        "random_first_half": float(random_first),
        "random_second_half": float(base),
        "text_first_half": float(text_first),
        "text_second_half": float(text_second),
        "uniform_guess": uniform_guess,
        "uniform": _uniform_induction(n),
        "scores": per_head(induction),
        "max": float(induction.max()),
        "candidates": [head_name(*p) for p in candidates],
        "ablation_delta": ablations,
        "control_mean": float(control.mean()),
        "control_min": float(control.min()),
        "control_max": float(control.max()),
    }


def _uniform_induction(n: int) -> float:
    """The induction score of a head that spreads its attention evenly: mean of 1/(t+1), n <= t < 2n."""
    return float(np.mean(1.0 / (np.arange(n, 2 * n) + 1)))


def lens_section(params, config, batch) -> dict:
    """3. The logit lens, layer by layer."""
    losses, agreement, echo = lens_curve(params, config, batch)
    stages = ["embed"] + [f"L{layer}" for layer in range(config.n_layers)]
    panels = [
        ("lens loss", "nats/token (log scale)", [("", losses)]),
        ("top-1 = the final top-1", "fraction of positions", [("", agreement)]),
    ]
    lines(HERE / "logit_lens.png", panels, x=stages, log=(0,))
    rows = [[s, float(a), float(b)] for s, a, b in zip(stages, losses, agreement, strict=True)]
    print("3.\n" + table(["read after", "lens loss", "top-1 = final top-1"], rows))
    print(f"the embeddings' lens predicts the input token itself at {echo:.3f} of positions")
    return {
        "embed_predicts_input": echo,
        "loss": dict(zip(stages, losses.tolist(), strict=True)),
        "agreement": dict(zip(stages, agreement.tolist(), strict=True)),
    }


def ablation_section(params, config, batch) -> dict:
    """4. What ablating each head alone costs in validation loss."""
    base = validation_loss(params, config, batch)
    delta = head_ablation_losses(params, config, batch) - base  # (L, H)
    heatmaps(HERE / "ablation.png", [("validation loss change, head ablated", delta)], digits=3)
    worst = [divmod(int(i), config.n_heads) for i in np.argsort(-delta.ravel())]
    median = float(statistics.median(delta.ravel().tolist()))
    print(
        f"4. loss {base:.3f}; median change {median:.3f}; smallest {head_name(*worst[-1])} {delta.min():.3f}"
    )
    print(table(["head", "loss change"], [[head_name(*p), float(delta[p])] for p in worst[:5]]))
    return {
        "baseline": base,
        "delta": per_head(delta),
        "largest_head": head_name(*worst[0]),
        "largest": float(delta.max()),
        "median": median,
        "smallest_head": head_name(*worst[-1]),
        "smallest": float(delta.min()),
    }


def patching_section(params, config, tokenizer) -> dict:
    """5. Activation patching on one prompt pair, and which heads carry the quote."""
    clean, corrupt = tokenizer.encode(CLEAN), tokenizer.encode(CORRUPT)
    (answer,), (wrong,) = tokenizer.encode(ANSWER), tokenizer.encode(WRONG)
    (at,) = [i for i, (a, b) in enumerate(zip(clean, corrupt, strict=True)) if a != b]
    grid, ld_clean, ld_corrupt = patching_grid(params, config, clean, corrupt, answer, wrong)
    logits, _ = traced(params, jnp.asarray([clean, corrupt]), config)  # (2, T, V)
    top1 = [tokenizer.decode([int(t)]) for t in jnp.argmax(logits[:, -1], axis=-1)]  # each prompt's guess
    labels = [repr(tokenizer.decode([t])) for t in clean]
    panels = [("share of the logit difference restored", grid)]
    heatmaps(
        HERE / "patching.png", panels, xlabel="position patched", xticks=labels, vmin=0, vmax=1, width=6.4
    )
    lost = lambda pair: ld_clean - logit_difference(params, config, clean, answer, wrong, [pair])
    drop = np.array([[lost((i, j)) for j in range(config.n_heads)] for i in range(config.n_layers)])  # (L, H)
    carriers = [divmod(int(i), config.n_heads) for i in np.argsort(-drop.ravel())]
    layer, head = carriers[0]
    _, activations = traced(params, jnp.asarray(clean)[None], config)
    looks = float(activations["attn_pattern"][layer, 0, head, -1, at])  # the last token -> the quote
    elsewhere = float(np.delete(grid, [at, len(clean) - 1], axis=1).max())
    print(f"5. {labels}; differ at {at}; top-1 next tokens {top1}")
    print(f"logit difference clean {ld_clean:.3f}, corrupt {ld_corrupt:.3f}")
    rows = [[f"L{i}", float(grid[i, at]), float(grid[i, -1])] for i in range(config.n_layers)]
    print(table(["resid_post of", "patched at the quote", "patched at the last token"], rows))
    print(f"most restored at any other position: {elsewhere:.3f}")
    rows = [[head_name(*p), float(drop[p])] for p in carriers[:4]]
    print(table(["head ablated (clean prompt)", "logit difference lost"], rows))
    print(f"{head_name(layer, head)}'s attention from the last token to the quote: {looks:.3f}")
    return {
        "tokens": labels,
        "differs_at": at,
        "top1": top1,
        "ld_clean": ld_clean,
        "ld_corrupt": ld_corrupt,
        "at_quote": grid[:, at].tolist(),
        "at_last": grid[:, -1].tolist(),
        "elsewhere_max": elsewhere,
        "head_ablation_drop": per_head(drop),
        "carrier": head_name(layer, head),
        "carrier_attention_to_quote": looks,
    }


def main() -> int:
    from microgpt_data import PackedLoader, load_text_dataset
    from microgpt_infer.model import load_model

    start = time.perf_counter()
    model = load_model("default")
    params, config, tokenizer = model.params, model.config.replace(compute_dtype="float32"), model.tokenizer
    # As `evaluate` reads it: pydocs' validation split, documents packed with end-of-text between them.
    dataset = load_text_dataset("pydocs", "validation")
    with PackedLoader(dataset, tokenizer, batch_size=SEQUENCES, seq_len=SEQ_LEN, epochs=1) as loader:
        batch = next(loader)  # (32, 129) int32
    names = [s for s in Path("/proc/cpuinfo").read_text().splitlines() if s.startswith("model name")]
    cpu = names[0].split(":", 1)[1].strip() if names else "unknown"
    found = {
        "setup": {
            "cpu": cpu,
            "cores": os.cpu_count(),
            "compute_dtype": "float32",
            "sequences": SEQUENCES,
            "seq_len": SEQ_LEN,
            "repeat": REPEAT,
            "repeat_rows": REPEAT_ROWS,
            "model": {k: v for k, v in model.config.to_dict().items() if isinstance(v, int | float)},
        },
        "attention": attention_section(params, config, batch),
        "induction": induction_section(params, config, batch, tokenizer.eot_id),
        "logit_lens": lens_section(params, config, batch),
        "ablation": ablation_section(params, config, batch),
        "patching": patching_section(params, config, tokenizer),
    }
    found["setup"]["seconds"] = round(time.perf_counter() - start, 1)
    (HERE / "findings.json").write_text(json.dumps(rounded(found), indent=1) + "\n", encoding="utf-8")
    seconds = found["setup"]["seconds"]
    print(f"{seconds} s on {cpu}, {os.cpu_count()} cores; wrote findings.json and the figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
