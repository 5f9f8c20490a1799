"""The quickstart in docs/quickstart.md is a runnable file; it runs as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


def test_the_quickstart_example_refuses_a_bad_call_and_prints_the_result():
    run = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert "refused: #/kwargs/width: argument 'width' must be int, got str" in run.stdout
    assert "result {'prompt': 'sunset over mountains', 'width': 256, 'height': 512}" in \
        run.stdout
