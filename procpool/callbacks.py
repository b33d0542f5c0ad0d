"""Done-callbacks of a pool's futures run here, never on the supervisor thread.

``Future.set_result`` runs the future's done-callbacks in the thread that
resolves it. For procpool that is the supervisor thread, so a callback that
blocks (``other_future.result()``, a slow write, a lock) would stop dispatch,
and a callback waiting on a task of the same pool would wait for ever. The
supervisor therefore hands callbacks to a :class:`CallbackRunner`: one thread
per pool, started at the first callback, that runs them in the order their
futures ended. A blocking callback delays the callbacks behind it, never the
pool nor any ``result()``.

Futures without callbacks (the common ``result()`` case) cost nothing: no
hand-over happens. A callback added to a future that is already done, or run
because another thread cancelled or failed the future, runs at once in that
thread, exactly as with any ``concurrent.futures.Future``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from queue import SimpleQueue
from typing import Any

#: The logger concurrent.futures reports failing callbacks to: the same place
#: as for any other Future, so existing logging setups see them.
_callback_log = logging.getLogger("concurrent.futures")

_Callback = Callable[[Future[Any]], object]


class CallbackRunner:
    """A thread that runs handed-over done-callbacks in order. Any thread may use it."""

    def __init__(self, name: str = "procpool-callbacks") -> None:
        self._name = name
        self._queue: SimpleQueue[tuple[_Callback, Future[Any]] | None] = SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def defer(self, fn: _Callback, future: Future[Any]) -> None:
        """Run ``fn(future)`` on the runner's thread, after those handed over before."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._queue.put((fn, future))

    def close(self) -> None:
        """No more callbacks will come: the thread ends once it ran those it has."""
        with self._lock:
            self._closed = True
            if self._thread is not None:
                self._queue.put(None)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every callback handed over before :meth:`close` ran; True if so.

        Returns False at once on the runner's own thread (a callback that stops
        its pool) rather than waiting for itself.
        """
        thread = self._thread
        if thread is None:
            return True
        if self.on_own_thread():
            return False
        thread.join(timeout)
        return not thread.is_alive()

    def on_own_thread(self) -> bool:
        """True when called from a callback this runner runs."""
        return self._thread is threading.current_thread()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            fn, future = item
            del item
            try:
                fn(future)
            except BaseException:  # one failing callback must not stop the others
                _callback_log.exception("exception calling callback for %r", future)
            del fn, future
