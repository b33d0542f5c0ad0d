"""A FIFO gate: a task blocks on it until the test opens it, with no sleeping.

Opening a FIFO blocks until the other end is opened too, so both sides wait
on a real event: :meth:`Gate.entered` returns once the task is on the gate,
and :meth:`Gate.open` lets it through.
"""

from __future__ import annotations

import os
from pathlib import Path


class Gate:
    def __init__(self, folder: Path, name: str = "gate") -> None:
        self.path = str(folder / name)
        os.mkfifo(self.path)
        os.mkfifo(self.path + ".in")

    def entered(self) -> None:
        """Wait until a task is on the gate."""
        with open(self.path + ".in"):
            pass

    def open(self) -> None:
        """Release the task on the gate (waits until it is there)."""
        with open(self.path, "w"):
            pass
