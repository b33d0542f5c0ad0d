"""A progress bar on stderr for long ``map`` and ``map_unordered`` runs (needs rich).

It wraps the result iterator: each result taken advances the bar, with a
total when the input has a length, a rate and an ETA. The bar closes with
the iterator (its end, a ``break`` once the iterator is dropped, an error).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from procpool._extras import install_hint

T = TypeVar("T")


class ProgressResults(Iterator[T], Generic[T]):
    """``results``, counted on a rich progress bar as they are taken."""

    def __init__(self, results: Iterator[T], total: int | None, description: str) -> None:
        self._closed = True  # until the bar is up: nothing to close
        try:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )
        except ImportError as exc:
            raise ImportError(f"progress=True needs rich: {install_hint('demo')}") from exc
        import sys

        from rich.console import Console

        self._results = results
        self._progress: Any = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
            console=Console(file=sys.stderr))
        self._task = self._progress.add_task(description, total=total, rate="")
        self._progress.start()
        self._closed = False

    def __iter__(self) -> ProgressResults[T]:
        return self

    def __next__(self) -> T:
        try:
            value = next(self._results)
        except BaseException:
            self.close()
            raise
        self._progress.advance(self._task)
        speed = self._progress.tasks[0].speed
        if speed:
            self._progress.update(self._task, rate=f"{speed:,.0f}/s")
        return value

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._progress.stop()
        close = getattr(self._results, "close", None)
        if close is not None:
            close()

    def __del__(self) -> None:
        self.close()


def length_of(iterables: tuple[Any, ...]) -> int | None:
    """How many items ``zip(*iterables)`` yields, when every iterable has a length."""
    try:
        return min(len(iterable) for iterable in iterables) if iterables else None
    except TypeError:
        return None
