"""Runs the peer benchmark, `bench/peer_hf.py`, in the side venv of DEVELOPERS.md.

The benchmark scripts next to this file import it (they run as `uv run python bench/NAME.py`, so
this folder is on `sys.path`). `$MICROGPT_PEER_PYTHON` names another interpreter for the peer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PEER_SCRIPT = Path(__file__).resolve().parent / "peer_hf.py"
DEFAULT_PEER_PYTHON = Path.home() / "peer-venv" / "bin" / "python"


def run_peer(*args: str) -> dict | None:
    """The JSON line that `peer_hf.py *args` prints, or None (with a message) without the side venv."""
    python = Path(os.environ.get("MICROGPT_PEER_PYTHON", DEFAULT_PEER_PYTHON))
    if not python.exists():
        print(f"peer skipped: no side venv python at {python} (see DEVELOPERS.md)", file=sys.stderr)
        return None
    out = subprocess.run([str(python), str(PEER_SCRIPT), *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
