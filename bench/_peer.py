"""Runs the peer benchmark, `bench/peer_hf.py`, in the side venv of DEVELOPERS.md.

The benchmark scripts next to this file import it (they run as `uv run python bench/NAME.py`, so
this folder is on `sys.path`). The peer's interpreter is `$MICROGPT_PEER_PYTHON`, by default
`~/peer-venv/bin/python` (`DEFAULT_PEER_PYTHON`, where DEVELOPERS.md sets the side venv up).

`run_peer` runs the peer's own measurements and returns its JSON line. `PeerServer` keeps the peer
running and times one call per request, so a benchmark can interleave the peer's calls with its own:
both then see the same minutes of a machine whose speed drifts (a shared VM's does, by up to 2x).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

PEER_SCRIPT = Path(__file__).resolve().parent / "peer_hf.py"
DEFAULT_PEER_PYTHON = Path.home() / "peer-venv" / "bin" / "python"


def _peer_python() -> Path | None:
    """`$MICROGPT_PEER_PYTHON` (unset or empty: `DEFAULT_PEER_PYTHON`), or None when it does not exist."""
    python = Path(os.environ.get("MICROGPT_PEER_PYTHON") or DEFAULT_PEER_PYTHON).expanduser()
    if not python.is_file():
        print(
            f"peer skipped: no side venv python at {python} (set $MICROGPT_PEER_PYTHON; see DEVELOPERS.md)",
            file=sys.stderr,
        )
        return None
    return python


def run_peer(*args: str) -> dict | None:
    """The JSON line that `peer_hf.py *args` prints, or None (with a message) without the side venv."""
    python = _peer_python()
    if python is None:
        return None
    out = subprocess.run([str(python), str(PEER_SCRIPT), *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


class PeerServer:
    """`peer_hf.py --serve *args` as a running process: `decode_seconds(batch)` times one call.

    Use `PeerServer.start(...)`, which returns None (with a message) without the side venv, and close
    it (or use it as a context manager) when done.
    """

    def __init__(self, python: Path, *args: str):
        self._process = subprocess.Popen(
            [str(python), str(PEER_SCRIPT), "--serve", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    @classmethod
    def start(cls, *args: str) -> PeerServer | None:
        python = _peer_python()
        return None if python is None else cls(python, *args)

    def decode_seconds(self, batch: int) -> float:
        """Seconds of one greedy `generate` call at `batch` (warmed up on the first request)."""
        self._process.stdin.write(f"decode {batch}\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer exited with code {self._process.wait()} (see its stderr above)")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the peer refused the request: {answer['error']}")
        return answer["seconds"]

    def close(self) -> None:
        if self._process.stdin and not self._process.stdin.closed:
            self._process.stdin.close()
        self._process.wait(timeout=60)

    def __enter__(self) -> PeerServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def interleave(
    time_ours: Callable[[], float], peer: PeerServer | None, batch: int, rounds: int
) -> tuple[list[float], list[float]]:
    """Seconds of `rounds` calls of ours (`time_ours()` makes one call and returns its seconds), each
    followed by one of the peer's decoding `batch` rows when `peer` is given; both warm up first."""
    time_ours()  # compile and warm up
    if peer is not None:
        peer.decode_seconds(batch)
    ours, theirs = [], []
    for _ in range(rounds):
        ours.append(time_ours())
        if peer is not None:
            theirs.append(peer.decode_seconds(batch))
    return ours, theirs
