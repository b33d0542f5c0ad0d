"""The ``--plot`` picture: workers, queue depth and rates over the run.

matplotlib is optional (``pip install "procpool[plot]"``); :func:`check`
and :func:`check_format` tell the command line early, before the run, if it
is missing or cannot write the file asked for. The Agg backend draws to a
file, with no display needed.
"""

from __future__ import annotations

import os

from procpool._extras import install_hint
from procpool.demo.record import Tick
from procpool.demo.view import RunInfo

#: File extensions the picture can be written as: matplotlib's Agg backend
#: draws them with nothing else installed.
FORMATS = (".png", ".svg", ".pdf")


def check() -> str | None:
    """None if matplotlib can be imported, else what to tell the user."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return f"--plot needs matplotlib ({exc}); install it with: {install_hint('plot')}"
    return None


def check_format(path: str | os.PathLike[str]) -> str | None:
    """None if ``path`` ends in one of :data:`FORMATS` (any case), else what to tell the user."""
    extension = os.path.splitext(os.fspath(path))[1]
    if extension.lower() in FORMATS:
        return None
    what = f"a {extension!r} file" if extension else "a file without an extension"
    return (f"--plot cannot draw {what} ({os.fspath(path)!r}); name a"
            f" {', '.join(FORMATS[:-1])} or {FORMATS[-1]} file")


def save(path: str | os.PathLike[str], ticks: list[Tick], info: RunInfo) -> None:
    """Draw the timeline of ``ticks`` into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [tick.t for tick in ticks]
    base = [tick.base_workers for tick in ticks]
    burst = [tick.burst_workers for tick in ticks]
    fig, (workers, queue, rates) = plt.subplots(3, 1, sharex=True, figsize=(10, 7.5),
                                                 constrained_layout=True)
    try:
        workers.stackplot(t, base, burst, labels=["base", "burst"], step="post",
                          colors=["#4c9be8", "#f2b134"], alpha=0.85)
        workers.step(t, [tick.busy_workers for tick in ticks], where="post", color="#2f7d32",
                     label="busy")
        workers.axhline(info.max_workers, color="grey", linestyle=":", label="max workers")
        workers.set_ylabel("workers")
        workers.set_ylim(0, info.max_workers + 0.5)
        workers.legend(loc="upper left", ncol=4, fontsize="small")
        workers.set_title(f"procpool demo: {info.pattern} load, up to {info.peak_rate:g} tasks/s"
                          f" of ~{info.task_ms:g} ms")

        queue.fill_between(t, [tick.queued_tasks + tick.priority_tasks for tick in ticks],
                           step="post", color="#7b61c4", alpha=0.5, label="queued (all)")
        queue.step(t, [tick.priority_tasks for tick in ticks], where="post", color="#c0392b",
                   label="priority")
        queue.set_ylabel("tasks waiting")
        queue.legend(loc="upper left", fontsize="small")

        rates.step(t, [tick.target_rate for tick in ticks], where="post", color="grey",
                   linestyle="--", label="target arrivals")
        rates.plot(t, [tick.arrival_rate for tick in ticks], color="#7b61c4", label="arrivals")
        rates.plot(t, [tick.completion_rate for tick in ticks], color="#2f7d32",
                   label="completions")
        rates.set_ylabel("tasks/s")
        rates.set_xlabel("seconds")
        rates.legend(loc="upper left", ncol=3, fontsize="small")
        for axes in (workers, queue, rates):
            axes.grid(alpha=0.3)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
