"""How many items of a ``map`` travel in one task, when the caller does not say.

Like a baker who times the first loaf before filling the oven: the first item
of each worker goes alone, and from then on a chunk holds as many items as
take about :data:`TARGET_CHUNK_SECONDS` in a worker, as measured by the
chunks that came back. Long enough that a task's own cost (pickling, two pipe
hops and, on a machine whose cores the workers fill, the caller's own turn on
one of them: 0.1-0.3 ms) is a few per cent of it; short enough that a priority task
waits behind little and the last chunks spread over every worker. When the
input's length is known, no chunk holds more than a quarter of one worker's
share, as ``multiprocessing.Pool``'s default does, so the end is balanced too.
While chunks still grow towards that size (at most :data:`MAX_GROWTH` times
per step), each size is tried before the next is sized, so the ramp costs a
round trip per step, not a window of small chunks.

A pool remembers, per function, what its items took (:class:`ItemTimes`): the
next ``map`` of that function starts at the size that fitted, with no ramp,
and a function already timed as a plain task needs no probe item. Pure:
numbers in, numbers out.
"""

from __future__ import annotations

from collections.abc import Hashable

#: Work one chunk should hold, in seconds of its worker's time. On a map of
#: 1,790 ``ast``-parsed files (~5 ms each, some 100 times that), chunks of
#: 10 ms, mostly one file, ran 5-10% slower than chunksize=16: a chunk kind that
#: once took 0.1 s travels without a task held behind it (procpool.policy.prefetch),
#: so its worker waits a round trip after each. At 50 ms (~10 files) as fast or
#: faster (in runs of scripts/bench_peers.py --only workload); a priority task
#: then waits behind at most about that, per worker.
TARGET_CHUNK_SECONDS = 0.05

#: Most items in one chunk, whatever their speed: bounds the memory of a chunk
#: and of the look-ahead (see ``procpool.mapping``).
MAX_CHUNK_ITEMS = 8192

#: A chunk grows at most this many times over the largest one measured: a first
#: item that ran unusually fast must not send thousands of slow ones at once.
#: 64 reaches a 2,500-item chunk of no-op items in two steps (1, 64): the damage
#: an unrepresentatively fast first item can do is bounded by 64 slow ones.
MAX_GROWTH = 64

#: With a known length, it makes at least this many chunks per worker (as
#: ``multiprocessing.Pool``'s default), so that the last ones spread out.
CHUNKS_PER_WORKER = 4

#: What the chunks measured before weigh, per chunk measured since: the time
#: per item is the decayed sum of chunk seconds over the decayed sum of their
#: items, so an item's weight is its share of recent work. One slow item among
#: many fast ones raises it by its share, not to its own time (items whose
#: times vary widely, like files to parse, keep chunks of several); a chunk of
#: slow items as large as the recent ones moves it most of the way at once.
DECAY = 0.75

#: Functions :class:`ItemTimes` remembers before it starts afresh.
MAX_FUNCTIONS = 1024


class ItemTimes:
    """Per kind of function: seconds per item, and the largest chunk that figure
    was measured on. Shared by a pool's maps (a dict store is atomic, so maps
    in several threads may share it)."""

    def __init__(self) -> None:
        self._known: dict[Hashable, tuple[float, int]] = {}

    def get(self, kind: Hashable) -> tuple[float, int] | None:
        return self._known.get(kind)

    def put(self, kind: Hashable, per_item: float, items: int) -> None:
        if kind not in self._known and len(self._known) >= MAX_FUNCTIONS:
            self._known.clear()
        self._known[kind] = (per_item, items)

    def seed(self, kind: Hashable, task_seconds: float | None) -> None:
        """What a plain task of ``kind`` took stands for one item, until a map measures."""
        if task_seconds is not None and kind not in self._known:
            self.put(kind, task_seconds, 1)


class ChunkSizer:
    """The size of the next chunk: ``fixed`` when given, else from measured items,
    never more than ``most``."""

    def __init__(
        self, fixed: int | None, workers: int, length: int | None, most: int = MAX_CHUNK_ITEMS,
        memory: tuple[ItemTimes, Hashable] | None = None,
    ) -> None:
        """``memory``: where this function's item times are kept between maps; the
        first chunks start from what it holds, and each measurement goes back."""
        self.fixed = fixed
        self._memory = memory
        workers = max(1, workers)
        # With a known length, chunks leave at least CHUNKS_PER_WORKER per worker.
        self._cap = max(1, min(most, MAX_CHUNK_ITEMS) if length is None else min(
            most, MAX_CHUNK_ITEMS, -(-length // (CHUNKS_PER_WORKER * workers))))
        self._seconds = 0.0  # decayed sums of the chunks measured (see DECAY)
        self._items = 0.0
        self._largest = 1  # items in the largest chunk measured
        known = None if memory is None else memory[0].get(memory[1])
        if known is not None:  # it stands for one chunk of its largest size
            self._largest = max(1, known[1])
            self._seconds, self._items = known[0] * self._largest, float(self._largest)

    @property
    def _per_item(self) -> float | None:
        """Seconds per item, as measured; None before any measurement."""
        return self._seconds / self._items if self._items else None

    @property
    def settled(self) -> bool:
        """False while the next chunk is larger than any measured: the size still ramps."""
        return self.fixed is not None or (
            self._per_item is not None and self.next_size() <= self._largest)

    def next_size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self._per_item is None:
            return 1
        return min(self._wanted(), self._largest * MAX_GROWTH)

    def _wanted(self) -> int:
        """The size the measured time per item asks for, within the caps."""
        per_item = self._per_item
        assert per_item is not None
        if per_item <= 0:
            return self._cap
        return max(1, min(round(TARGET_CHUNK_SECONDS / per_item), self._cap))

    def observe(self, seconds: float, items: int) -> None:
        """A chunk of ``items`` ran in ``seconds`` of its worker's time."""
        if items <= 0:
            return
        self._seconds = DECAY * self._seconds + max(0.0, seconds)
        self._items = DECAY * self._items + items
        self._largest = max(self._largest, items)
        if self._memory is not None:
            times, kind = self._memory
            times.put(kind, self._seconds / self._items, self._largest)
