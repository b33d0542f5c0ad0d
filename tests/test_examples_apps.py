"""examples/pipeline.py and examples/asyncio_app.py run to the end and say what they should."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def run_example(name: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name)], capture_output=True,
                          text=True, timeout=60, cwd=str(ROOT), check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_pipeline() -> None:
    out = run_example("pipeline.py")
    assert re.search(r"each compiled 3000 products in [\d.]+ s, once", out)
    # Its tasks take milliseconds: they spread over both workers, never pile on one.
    assert re.search(r"processed 100000 records in 50 tasks on 2 workers in [\d.]+ s:"
                     r" [\d,]+ records/s", out)
    assert "matched 100000 of 100000 records (chunk 1 checked" in out
    categories = re.findall(r"^  (\w+) +([\d,.]+) EUR$", out, re.MULTILINE)
    assert len(categories) == 7
    total = float(re.findall(r"^total +([\d,.]+) EUR$", out, re.MULTILINE)[0].replace(",", ""))
    amounts = [float(amount.replace(",", "")) for _, amount in categories]
    assert sum(amounts) == pytest.approx(total, abs=0.05)


def test_asyncio_app() -> None:
    out = run_example("asyncio_app.py")
    assert re.search(r"urgent request answered in \d+ ms on the reserved worker; \d+ requests"
                     r" were queued", out)
    assert re.search(r"handled 200 requests in [\d.]+ s", out)
    assert re.search(r"event loop: \d+ heartbeats of 10 ms, longest gap \d+ ms", out)
