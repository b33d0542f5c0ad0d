"""procpool beside ProcessPoolExecutor, multiprocessing.Pool, loky, pebble and billiard.

2 workers everywhere. Every figure group runs each pool in a fresh interpreter
(this script with ``--child POOL``), pools in rotating order per repetition;
the report gives medians over ``--reps``, a ratio table (procpool over the best
peer and over multiprocessing.Pool) and the targets of the performance issue,
met or missed. The peers come with the ``bench`` extra (``pip install -e
".[bench]"``); a peer that is not installed is reported as skipped.

    python scripts/bench_peers.py [--reps 3] [--pools procpool,multiprocessing.Pool]
        [--only roundtrip,cpu] [--write-benchmarks] [--quick]
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _peers import pools, report, tasks

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
RESULT = "PEER-BENCH-RESULT "

#: What one repetition runs: ``--quick`` is for the smoke test, seconds in all.
FULL: dict[str, Any] = {
    "tiny": 20_000, "round_trips": 1_000, "cpu_tasks": 200, "cpu_ms": 20.0, "cpu_tiny": 2_000,
    "gap_tasks": 200, "gap_ms": 2.0, "caller_tasks": 100_000, "memory_tasks": 100_000,
    "idle_s": 1.0, "files": None,
}
QUICK: dict[str, Any] = {
    "tiny": 300, "round_trips": 50, "cpu_tasks": 6, "cpu_ms": 2.0, "cpu_tiny": 50,
    "gap_tasks": 10, "gap_ms": 2.0, "caller_tasks": 500, "memory_tasks": 500,
    "idle_s": 0.05, "files": 12,
}
#: Seconds a child may take before it is killed (generous: the slowest peer, a busy host).
TIMEOUTS = {"tiny": 600.0, "cpu": 300.0, "gap": 120.0, "caller": 600.0, "memory": 300.0,
            "lifecycle": 120.0, "workload": 900.0, "floor": 120.0}
QUICK_TIMEOUT = 60.0

MARK_START, MARK_END = "<!-- bench_peers:start -->", "<!-- bench_peers:end -->"


# -- the child: one pool, one group of figures, one fresh interpreter --------------------


def child(pool: str, group: str, figures: set[str], counts: dict[str, Any]) -> None:
    """Measure, print the result as one JSON line, leave no process behind."""
    try:
        if pool == "floor":
            result: dict[str, Any] = tasks.measure_floor(counts["round_trips"])
        else:
            result = pools.measure(pool, group, figures, counts)
    except ImportError as exc:
        result = {"skipped": f"{exc.name or exc} is not installed"}
    print(RESULT + json.dumps(result), flush=True)
    pools.Pool().kill()  # what a killed or hung pool left, if anything
    sys.stderr.flush()
    os._exit(0)  # a killed pool's threads may never join


def run_child(argv: list[str], timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    """(result, None), or (None, why there is none)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SCRIPTS), env.get("PYTHONPATH")) if p)
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    problem = None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        problem = f"killed after {timeout:g} s without a result"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the child's workers too, if any are left
        except ProcessLookupError:
            pass
    if problem:
        proc.communicate()
        return None, problem
    for line in reversed(out.splitlines()):
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):]), None
    last = (err.strip().splitlines() or ["no output"])[-1]
    return None, f"exit code {proc.returncode}: {last[:200]}"


# -- the parent ------------------------------------------------------------------------------


def calibrate_spin(ms: float) -> int:
    """The ``spin`` count that takes ``ms`` here (the fastest of 5 trials)."""
    n = 200_000
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        tasks.spin(n)
        best = min(best, time.perf_counter() - start)
    return max(1, round(n * ms / 1000 / best))


def serial_cpu(counts: dict[str, Any]) -> dict[str, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(counts["cpu_tasks"]):
        tasks.spin_timed(counts["spin_n"])  # as the workers run it
    return {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}


def serial_workload(counts: dict[str, Any]) -> dict[str, float]:
    files = tasks.stdlib_files()[: counts["files"]]
    table = tasks.build_table()
    start = time.perf_counter()
    total = sum(tasks.score(table, path) for path in files)
    return {"workload_s": time.perf_counter() - start, "workload_score": total,
            "workload_files": len(files)}


def groups_for(figures: set[str]) -> list[tuple[str, set[str]]]:
    return [(group, figures & set(members)) for group, members in pools.GROUPS.items()
            if figures & set(members)]


def byte_compile_procpool() -> None:
    """Compile procpool's modules to bytecode, as pip does when it installs a package.

    The peers come from wheels, compiled at install; procpool often runs from its
    source tree (an editable install), where under ``PYTHONDONTWRITEBYTECODE`` every
    fresh interpreter would compile its modules again, inside the timed constructor.
    """
    spec = importlib.util.find_spec("procpool")  # finds it without running it here
    if spec is not None:
        for folder in spec.submodule_search_locations or ():
            compileall.compile_dir(folder, quiet=1)


def run(args: argparse.Namespace, selected: list[str], figures: set[str]) -> report.Run:
    counts = dict(QUICK if args.quick else FULL)
    byte_compile_procpool()
    if "cpu" in figures:
        counts["spin_n"] = calibrate_spin(counts["cpu_ms"])
    done = report.Run(pools=selected, figures=figures, counts=counts, reps=args.reps,
                      command=command_line(), load_start=os.getloadavg())
    started = time.monotonic()
    for pool in selected:
        reason = pools.missing(pool)
        if reason:
            done.skipped[pool] = reason
    live = [p for p in selected if p not in done.skipped]
    for rep in range(args.reps):
        serial: dict[str, float] = {}
        if "cpu" in figures:
            serial.update(serial_cpu(counts))
        if "workload" in figures:
            serial.update(serial_workload(counts))
        done.serial.append(serial)
        order = live[rep % len(live):] + live[: rep % len(live)] if live else []
        results: dict[str, dict[str, Any]] = {pool: {} for pool in live}
        for group, members in groups_for(figures):
            for pool in order:
                argv = ["--child", pool, "--group", group, "--figures", ",".join(sorted(members)),
                        "--counts", json.dumps(counts)]
                timeout = args.timeout or (QUICK_TIMEOUT if args.quick else TIMEOUTS[group])
                result, problem = run_child(argv, timeout)
                if result and "skipped" in result:
                    done.skipped[pool] = result["skipped"]
                elif result is None:
                    done.failures.append(f"{pools.label(pool)}, {group}, rep {rep + 1}: {problem}")
                else:
                    results[pool].update(result)
                print(f"rep {rep + 1}/{args.reps} {group:9} {pools.label(pool):22}"
                      f" {'ok' if result else problem}", file=sys.stderr, flush=True)
        if "roundtrip" in figures:
            result, problem = run_child(["--child", "floor", "--group", "floor", "--counts",
                                         json.dumps(counts)], args.timeout or TIMEOUTS["floor"])
            if result is None:
                done.failures.append(f"floor, rep {rep + 1}: {problem}")
            done.floor.append(result or {})
        done.reps_results.append(results)
    done.load_end = os.getloadavg()
    done.seconds = time.monotonic() - started
    done.versions = versions()
    done.machine = machine()
    return done


def command_line() -> str:
    """This run's command, without the options that only say where output goes."""
    argv, shown, skip = sys.argv[1:], [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--benchmarks-file", "--json"):
            skip = True
            continue
        if arg.startswith(("--benchmarks-file=", "--json=")):
            continue
        shown.append(arg)
    return shlex.join(["python", "scripts/bench_peers.py", *shown])


def versions() -> dict[str, str]:
    import importlib.metadata

    found = {"Python": platform.python_version()}
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"],
                                   cwd=ROOT, capture_output=True, text=True, timeout=10,
                                   check=False)
        found["procpool"] = described.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        found["procpool"] = "unknown"
    try:
        found["procpool"] += f" ({importlib.metadata.version('procpool')})"
    except importlib.metadata.PackageNotFoundError:
        pass
    for name in ("loky", "pebble", "billiard", "cloudpickle", "psutil"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> str:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cpus = f"{os.cpu_count()} CPUs" + (f" ({usable} usable)" if usable != os.cpu_count() else "")
    return f"{cpus}, {platform.platform()}"


def write_benchmarks(path: Path, block: str) -> None:
    """Replace what stands between the markers of ``path`` with ``block``."""
    text = path.read_text(encoding="utf-8")
    head, found, rest = text.partition(MARK_START)
    _, found_end, tail = rest.partition(MARK_END)
    if not found or not found_end:
        raise SystemExit(f"{path.name} has no {MARK_START} ... {MARK_END} block to rewrite")
    path.write_text(f"{head}{MARK_START}\n{block.strip()}\n{MARK_END}{tail}", encoding="utf-8")


def parse_list(text: str | None, allowed: tuple[str, ...], what: str) -> list[str]:
    if not text:
        return list(allowed)
    names = {name.lower(): name for name in allowed}
    names.update({pools.label(name).lower(): name for name in allowed})
    chosen = []
    for item in (part.strip() for part in text.split(",")):
        if item.lower() not in names:
            raise SystemExit(f"unknown {what} {item!r}; choose from {', '.join(allowed)}")
        chosen.append(names[item.lower()])
    return [name for name in allowed if name in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--pools", help=f"comma list of: {', '.join(pools.POOLS)}"
                        f" (default), {', '.join(pools.EXTRA_POOLS)}")
    parser.add_argument("--only", help=f"comma list of figures: {', '.join(pools.FIGURES)}")
    parser.add_argument("--quick", action="store_true", help="tiny counts (the smoke test)")
    parser.add_argument("--write-benchmarks", action="store_true",
                        help="rewrite the bench_peers block of BENCHMARKS.md")
    parser.add_argument("--benchmarks-file", type=Path, default=ROOT / "BENCHMARKS.md",
                        help="the file --write-benchmarks rewrites (default BENCHMARKS.md)")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--timeout", type=float, help="seconds before a child is killed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    parser.add_argument("--figures", default="", help=argparse.SUPPRESS)
    parser.add_argument("--counts", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.group, set(filter(None, args.figures.split(","))),
              json.loads(args.counts))
        return
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    selected = (parse_list(args.pools, pools.POOLS + pools.EXTRA_POOLS, "pool") if args.pools
                else list(pools.POOLS))
    figures = set(parse_list(args.only, pools.FIGURES, "figure"))
    if args.write_benchmarks and args.only:
        parser.error("--write-benchmarks rewrites the whole block, one run of every figure:"
                     " leave out --only")
    done = run(args, selected, figures)
    text = report.render(done)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(done.as_json(), indent=1), encoding="utf-8")
    if args.write_benchmarks:
        write_benchmarks(args.benchmarks_file, text)


if __name__ == "__main__":
    main()
