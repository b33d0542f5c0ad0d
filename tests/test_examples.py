"""Every example runs to the end and says what it should."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def run_example(name: str) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ROOT),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_basic() -> None:
    out = run_example("basic.py")
    assert "one line: 1 hit" in out
    assert "1000 lines: 1250 hits" in out
    assert "comes back as itself: TypeError" in out
    assert out.count("compiling rules") == 2
    assert out.count("releasing 3 rules") == 2
    assert out.strip().endswith("stopped: every worker ran on_destroy")


def test_priorities() -> None:
    lines = run_example("priorities.py").splitlines()
    ran = [line for line in lines if line[:1].isdigit()]
    assert [line.split(". ")[1] for line in ran] == [
        "urgent-0",
        "urgent-1",
        "urgent-2",
        "normal-0",
        "normal-1",
        "normal-2",
    ]


def test_dask_cluster() -> None:
    pytest.importorskip("distributed")
    out = run_example("dask_cluster.py")
    assert "2 Dask workers ready" in out
    assert "1000 lines: 1250 hits" in out
    assert "ran urgent on " in out and "4 normal tasks done" in out
    assert "comes back as itself: TypeError" in out
    assert out.strip().endswith("stopped: the cluster is closed")
