"""The engine: microGPT's reference model, run fast on one backend.

Core (`microgpt_core`) is the textbook: the model, its cache and its decode loop, written as their
equations. The engine imports it and is never imported by it. It holds what exists only for speed,
each part tested equal to the reference (tests/infer/test_engine.py):

    decode.py      the decode step laid out for XLA's CPU backend: per-layer caches and weights,
                   blockwise attention over the cache and the new chunk
    options.py     XLA options for the decode loop, chosen by the backend and the CPU's features
    streaming.py   host plumbing: a compiled loop hands each step's tokens to a Python callback
    generate.py    `generate_tokens`: core's loop over the fast step, compiled with those options,
                   optionally streaming
    slots.py       serving's device state: N decode slots, and the compiled admit and step programs
    requests.py    a served `Request`, its `Stream` of events, the engine's errors
    batching.py    `Engine`: continuous batching, a thread that admits requests into free slots and
                   advances every busy slot by one step at a time

`microgpt_infer.generate` and `generate_text` run on `generate_tokens`; the server on `Engine`.
"""

from __future__ import annotations

from microgpt_infer.engine.batching import Engine
from microgpt_infer.engine.generate import generate_tokens
from microgpt_infer.engine.requests import QueueFull, Request, Stream

__all__ = ["Engine", "QueueFull", "Request", "Stream", "generate_tokens"]
