"""The README's Python examples run as written (so they never rot)."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
READMES = [ROOT / "README.md", *sorted((ROOT / "packages").glob("*/README.md"))]

RUNNER = """
import sys
blocks = {blocks!r}
for index, code in enumerate(blocks):
    print(f"--- block {{index}}", flush=True)
    exec(compile(code, f"{name} block {{index}}", "exec"), {{"__name__": "__readme__"}})
"""


def python_blocks(path: Path) -> list[str]:
    return [textwrap.dedent(block) for block in re.findall(r"```python\n(.*?)```", path.read_text(), re.S)]


@pytest.mark.slow
@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_readme_python_blocks_run(readme, tmp_path):
    blocks = python_blocks(readme)
    if not blocks:
        assert readme != ROOT / "README.md", "the root README must carry runnable examples"
        return
    script = RUNNER.format(blocks=blocks, name=readme.relative_to(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{readme}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def test_the_readme_stays_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; keep it to 250 (details go to docs/)"
    headings = [line for line in lines if line.startswith("## ")]
    assert headings[0] == "## Two commands"
