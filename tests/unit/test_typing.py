"""A type checker checks ``task.enqueue(...)`` against the task function's own signature."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).parent / "typing_cases" / "enqueue_calls.py"


def test_mypy_reports_exactly_the_bad_enqueue_calls():
    pytest.importorskip("mypy")
    run = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental",
                          "--follow-imports=silent", "--ignore-missing-imports", str(CASES)],
                         capture_output=True, text=True, timeout=300)
    reported = {(int(line), code) for line, code in
                re.findall(r"enqueue_calls\.py:(\d+): error: .*\[([\w-]+)\]", run.stdout)}
    expected = {(number, match.group(1))
                for number, text in enumerate(CASES.read_text().splitlines(), start=1)
                if (match := re.search(r"# E: ([\w-]+)", text))}
    assert reported == expected, run.stdout
