"""Command-line argument types shared by the benchmarks (standard library only)."""

from __future__ import annotations

import argparse

__all__ = ["batch_sizes"]


def batch_sizes(text: str) -> list[int]:
    """`--batches 1,8` as [1, 8]: comma-separated integers >= 1 (an argparse `type=`)."""
    try:
        sizes = [int(b) for b in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, got {text!r}") from None
    if any(b < 1 for b in sizes):
        raise argparse.ArgumentTypeError(f"must all be >= 1, got {text!r}")
    return sizes
