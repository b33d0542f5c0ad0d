"""How many items of a ``map`` travel in one task, when the caller does not say.

Like a baker who times the first loaf before filling the oven: the first item
of each worker goes alone, and from then on a chunk holds as many items as
take about :data:`TARGET_CHUNK_SECONDS` in a worker, as measured by the
chunks that came back. Long enough that a task's own cost (pickling, two pipe
hops: ~0.1 ms) is a few per cent of it; short enough that a priority task
waits behind little and the last chunks spread over every worker. When the
input's length is known, no chunk holds more than a quarter of one worker's
share, as ``multiprocessing.Pool``'s default does, so the end is balanced too.
Pure: numbers in, numbers out.
"""

from __future__ import annotations

#: Work one chunk should hold, in seconds of its worker's time.
TARGET_CHUNK_SECONDS = 0.002

#: Most items in one chunk, whatever their speed: bounds the memory of a chunk
#: and of the look-ahead (see ``procpool.mapping``).
MAX_CHUNK_ITEMS = 8192

#: A chunk grows at most this many times over the largest one measured: a first
#: item that ran unusually fast must not send thousands of slow ones at once.
MAX_GROWTH = 8

#: With a known length, it makes at least this many chunks per worker (as
#: ``multiprocessing.Pool``'s default), so that the last ones spread out.
CHUNKS_PER_WORKER = 4

#: Weight of the older per-item time when a smaller chunk ran faster.
DECAY = 0.75


class ChunkSizer:
    """The size of the next chunk: ``fixed`` when given, else from measured items,
    never more than ``most``."""

    def __init__(
        self, fixed: int | None, workers: int, length: int | None, most: int = MAX_CHUNK_ITEMS
    ) -> None:
        self.fixed = fixed
        workers = max(1, workers)
        # With a known length, chunks leave at least CHUNKS_PER_WORKER per worker.
        self._cap = max(1, min(most, MAX_CHUNK_ITEMS) if length is None else min(
            most, MAX_CHUNK_ITEMS, -(-length // (CHUNKS_PER_WORKER * workers))))
        self._per_item: float | None = None  # seconds, as measured
        self._measured_items = 0  # items in the chunk behind that figure
        self._largest = 1  # items in the largest chunk measured

    @property
    def measured(self) -> bool:
        return self.fixed is not None or self._per_item is not None

    def next_size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        if self._per_item is None:
            return 1
        if self._per_item <= 0:
            size = MAX_CHUNK_ITEMS
        else:
            size = int(TARGET_CHUNK_SECONDS / self._per_item)
        return max(1, min(size, self._cap, self._largest * MAX_GROWTH))

    def observe(self, seconds: float, items: int) -> None:
        """A chunk of ``items`` ran in ``seconds`` of its worker's time.

        A chunk at least as large as the one behind the estimate replaces it; a
        smaller one is believed at once when slower, and erodes it when faster.
        """
        if items <= 0:
            return
        per_item = max(0.0, seconds) / items
        old = self._per_item
        if old is None or items >= self._measured_items or per_item > old:
            self._per_item, self._measured_items = per_item, items
        else:
            self._per_item = DECAY * old + (1 - DECAY) * per_item
        self._largest = max(self._largest, items)
