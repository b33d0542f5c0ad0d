"""Submissions are typed: mypy rejects a wrong argument (tests/typing_samples)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = Path(__file__).parent / "typing_samples"


@pytest.mark.timeout(300)
def test_mypy_rejects_wrong_arguments_and_accepts_right_ones() -> None:
    pytest.importorskip("mypy")
    sample = SAMPLES / "submissions.py"
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(sample)],
        capture_output=True, text=True, check=False, cwd=SAMPLES.parent.parent,
    )
    reported = {int(m.group(1)) for m in re.finditer(r"submissions\.py:(\d+): error", done.stdout)}
    lines = sample.read_text().splitlines()
    expected = {n for n, line in enumerate(lines, 1) if line.rstrip().split("#")[-1].strip()
                .startswith("error")}
    assert expected, "the sample marks no line"
    assert reported == expected, done.stdout
