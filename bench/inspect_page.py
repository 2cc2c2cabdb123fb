"""The `inspect` page: its size, and the time to open it in headless Chromium.

    uv run python bench/inspect_page.py                  # one JSON line per model
    uv run python bench/inspect_page.py --runs 5 --chromium /usr/bin/chromium

Two models on the same 256 tokens (the start of README.md, in the shipped tokenizer):
  default   the model microgpt-infer ships (6 layers, 8 heads, d_model 256);
  12x12     a randomly initialised 12-layer, 12-head model (d_model 768, vocabulary 2048), the size
            the page is built to stay usable at (attention: 12 x 12 x 256 x 256 = 9.4M probabilities).
For each:
  page_bytes      the HTML file `render_page` writes (attention_bytes of it: the packed attention);
  measure_s       `inspect_text` (one jitted program: trace, logit lens top-k, losses, norms,
                  entropies; compilation included, as the command pays it) and render_s, the page's
                  encoding;
  open_ms         the page's own figure: performance.now() (from the start of navigation) when its
                  first render is done, which it writes into <html data-render-ms>; read from
                  `chromium --headless --dump-dom` (median of --runs fresh browsers);
  browser_s       the whole `chromium --dump-dom` process, start-up included (median), and
                  browser_blank_s, the same for an empty page.
The CPU is named from /proc/cpuinfo. A page that shows an error or logs to the console fails the run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

from microgpt_core import GPTConfig, init_params
from microgpt_infer import load_model
from microgpt_infer.inspection import inspect_text, page_data, render_page
from microgpt_train.metrics import cpu_model

ROOT = Path(__file__).resolve().parents[1]
TOKENS = 256
BIG = GPTConfig(vocab_size=2048, context_length=256, d_model=768, n_layers=12, n_heads=12)


def open_page(chromium: str, path: Path, fragment: str = "") -> tuple[float, float | None]:
    """Seconds of one `chromium --dump-dom` of `path`, and the page's data-render-ms (None if absent)."""
    argv = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", "--virtual-time-budget=30000",
        "--enable-logging=stderr", "--v=0", path.as_uri() + fragment,
    ]  # fmt: skip
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    problems = [line for line in out.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    if out.returncode != 0 or problems:
        raise RuntimeError(f"{path.name}: chromium exit {out.returncode}\n" + "\n".join(problems))
    found = re.search(r'data-render-ms="([0-9.]+)"', out.stdout)
    return seconds, float(found.group(1)) if found else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="fresh browsers per page")
    parser.add_argument("--chromium", default="chromium", help="the Chromium executable")
    args = parser.parse_args(argv)
    shipped = load_model("default")
    tokenizer = shipped.tokenizer
    text = tokenizer.decode(tokenizer.encode((ROOT / "README.md").read_text())[:TOKENS])
    assert len(tokenizer.encode(text)) == TOKENS
    with tempfile.TemporaryDirectory() as folder:
        blank = Path(folder) / "blank.html"
        blank.write_text("<!doctype html><title>blank</title>")
        blank_s = statistics.median(open_page(args.chromium, blank)[0] for _ in range(args.runs))
        models = {
            "default": (shipped.params, shipped.config),
            "12x12": (init_params(jax.random.key(0), BIG), BIG),
        }
        for name, (params, config) in models.items():
            start = time.perf_counter()
            inspection = inspect_text(params, config, tokenizer, text)
            measured = time.perf_counter() - start
            data = page_data(inspection, config, text=text, model=name)
            page = render_page(data)
            rendered = time.perf_counter() - start - measured
            path = Path(folder) / f"{name}.html"
            path.write_text(page, encoding="utf-8")
            fragment = f"#layer={config.n_layers - 1}&head={config.n_heads - 1}"
            opens = [open_page(args.chromium, path, fragment) for _ in range(args.runs)]
            if any(ms is None for _, ms in opens):
                raise RuntimeError(f"{name}: the page did not finish its first render")
            line = {
                "bench": "inspect_page",
                "model": name,
                "config": {k: getattr(config, k) for k in ("n_layers", "n_heads", "d_model", "vocab_size")},
                "tokens": TOKENS,
                "page_bytes": path.stat().st_size,
                "attention_bytes": len(data["attention"]["data"]),
                "measure_s": round(measured, 2),
                "render_s": round(rendered, 2),
                "open_ms": statistics.median(ms for _, ms in opens),
                "open_ms_runs": [ms for _, ms in opens],
                "browser_s": round(statistics.median(s for s, _ in opens), 2),
                "browser_blank_s": round(blank_s, 2),
                "cpu": cpu_model(),
                "cpus": os.cpu_count(),
                "chromium": subprocess.run(
                    [args.chromium, "--version"], capture_output=True, text=True
                ).stdout.strip(),
            }
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
