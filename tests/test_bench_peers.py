"""scripts/bench_peers.py end to end with tiny counts: every figure comes out for procpool
and the stdlib pools, and --write-benchmarks rewrites only its block. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent
SCRIPT = ROOT / "scripts" / "bench_peers.py"
START, END = "<!-- bench_peers:start -->", "<!-- bench_peers:end -->"

REQUIRED = ("procpool", "procpool-fork", "ProcessPoolExecutor", "multiprocessing.Pool")
OPTIONAL = ("loky", "pebble", "billiard")

#: What every pool reports, figure by figure.
FIGURES = {
    "submit": ["submit_per_s"],
    "map": ["map_default_per_s", "map500_per_s"],
    "roundtrip": ["rtt_p50_us", "rtt_p99_us", "rtt_mean_us"],
    "cpu": ["cpu_ideal_wall_s", "cpu_fresh_wall_s", "cpu_fresh_eff", "cpu_fresh_serial_eff",
            "cpu_fresh_busy", "cpu_after_tiny_wall_s", "cpu_after_tiny_eff",
            "cpu_after_tiny_serial_eff", "cpu_after_tiny_busy"],
    "gap": ["gap_median_us", "gap_mean_us"],
    "caller": ["call_p50_us", "call_max_ms"],
    "memory": ["rss_growth_mb"],
    "lifecycle": ["ctor_ms", "first_result_ms", "idle_stop_ms"],
    "workload": ["workload_map_s", "workload_map16_s", "workload_one_s", "workload_best_s"],
}


def run_script(*args: str, timeout: float = 280) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.mark.timeout(300)
def test_a_quick_run_measures_every_figure_and_rewrites_only_its_block(tmp_path: Path) -> None:
    real = ROOT / "BENCHMARKS.md"
    original = real.read_bytes()
    copy = tmp_path / "BENCHMARKS.md"
    copy.write_bytes(original)
    out = tmp_path / "run.json"

    done = run_script("--quick", "--reps", "1", "--json", str(out), "--write-benchmarks",
                      "--benchmarks-file", str(copy))

    assert done.returncode == 0, done.stderr[-3000:]
    run: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    installed = [p for p in OPTIONAL if importlib.util.find_spec(p) is not None]
    assert set(run["skipped"]) == set(OPTIONAL) - set(installed)
    for pool in REQUIRED:
        medians = run["medians"][pool]
        for figure, keys in FIGURES.items():
            assert all(medians.get(key) is not None for key in keys), (pool, figure, medians)
        assert medians["memory_blocked"], pool  # both workers really were held on the gate
    assert run["floor"][0]["p50_us"] > 0
    expected = run["serial"][0]["workload_score"]
    for pool in REQUIRED:
        scores = {k: v for k, v in run["reps_results"][0][pool].items() if k.endswith("_score")}
        assert scores and set(scores.values()) == {expected}, (pool, scores)
    for pool in installed:  # a peer may fail on a busy machine; it is then named as failed
        assert pool in run["medians"] or any(f.startswith(pool) for f in run["failures"])

    assert real.read_bytes() == original
    text = copy.read_text(encoding="utf-8")
    head, block = text.split(START)[0], text.split(START)[1].split(END)[0]
    tail = text.split(END)[1]
    assert (head, tail) == (original.decode().split(START)[0], original.decode().split(END)[1])
    assert block.strip() in done.stdout
    assert "### The targets" in block and "physical floor" in block
    assert "`python scripts/bench_peers.py --quick --reps 1 --write-benchmarks`" in block
    assert str(tmp_path) not in block


def test_write_benchmarks_refuses_a_partial_run() -> None:
    done = run_script("--only", "roundtrip", "--write-benchmarks", timeout=60)
    assert done.returncode == 2
    assert "leave out --only" in done.stderr
