"""Two strict priority levels, FIFO within each.

Like a doctor's waiting room with an emergency line: nobody from the normal
line is called while anyone waits in the emergency line. This is *not* a
heap: there are exactly two levels, so two deques give O(1) everything.

Not thread-safe: the supervisor guards it with its queue lock.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class TaskQueues(Generic[T]):
    """A priority deque and a normal deque; :meth:`pop` drains priority first."""

    __slots__ = ("normal", "priority")

    def __init__(self) -> None:
        self.priority: deque[T] = deque()
        self.normal: deque[T] = deque()

    def push(self, item: T, priority: bool = False) -> None:
        (self.priority if priority else self.normal).append(item)

    def push_front(self, items: list[T], priority: bool = True) -> None:
        """Put items back at the head of a level, keeping their order (retries, re-sends)."""
        (self.priority if priority else self.normal).extendleft(reversed(items))

    def pop(self) -> T:
        """The next item by strict priority. Raises IndexError when both are empty."""
        if self.priority:
            return self.priority.popleft()
        return self.normal.popleft()

    def peek(self) -> T:
        """The item :meth:`pop` would return, left in place."""
        return self.priority[0] if self.priority else self.normal[0]

    def line(self) -> deque[T]:
        """The level :meth:`pop` draws from now (the normal one when both are empty):
        a caller taking many items pops its head directly until it empties, then
        asks again, instead of two calls per item."""
        return self.priority or self.normal

    def remove(self, item: T) -> bool:
        """Take out one queued item (a cancelled task). O(n); cancels are rare."""
        for level in (self.priority, self.normal):
            try:
                level.remove(item)
                return True
            except ValueError:
                pass
        return False

    def clear(self) -> list[T]:
        """Empty both levels and return what they held, priority first."""
        items = [*self.priority, *self.normal]
        self.priority.clear()
        self.normal.clear()
        return items

    def __len__(self) -> int:
        return len(self.priority) + len(self.normal)

    def __bool__(self) -> bool:
        return bool(self.priority) or bool(self.normal)
