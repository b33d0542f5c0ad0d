"""How map sizes its chunks when the caller gives no chunksize (procpool.chunking)."""

from __future__ import annotations

from procpool.chunking import (
    MAX_CHUNK_ITEMS,
    MAX_FUNCTIONS,
    MAX_GROWTH,
    TARGET_CHUNK_SECONDS,
    ChunkSizer,
    ItemTimes,
)


def test_a_fixed_chunksize_is_kept_whatever_is_measured() -> None:
    sizer = ChunkSizer(500, workers=2, length=None)
    assert sizer.settled and sizer.next_size() == 500
    sizer.observe(10.0, 500)
    assert sizer.next_size() == 500


def test_items_go_one_by_one_until_one_was_timed() -> None:
    sizer = ChunkSizer(None, workers=2, length=None)
    assert not sizer.settled and sizer.next_size() == 1
    sizer.observe(0.05, 1)  # slow items: one each, as tried
    assert sizer.settled and sizer.next_size() == 1


def test_the_size_settles_once_a_chunk_of_the_size_wanted_was_timed() -> None:
    sizer = ChunkSizer(None, workers=2, length=20_000)
    steps = []
    while not sizer.settled:
        steps.append(size := sizer.next_size())
        sizer.observe(size * 0.000_000_1, size)  # 0.1 us per item
    assert steps == [1, MAX_GROWTH, 20_000 // 8]
    sizer.observe(0.3, 2500)  # slower: a smaller size, already tried
    assert sizer.settled and sizer.next_size() < 2500


def test_a_chunk_grows_at_most_max_growth_over_the_largest_one_timed() -> None:
    sizer = ChunkSizer(None, workers=2, length=None)
    sizer.observe(0.000_001, 1)  # tiny items: the time alone would allow thousands
    assert sizer.next_size() == MAX_GROWTH
    sizer.observe(0.000_008, MAX_GROWTH)
    assert sizer.next_size() == MAX_GROWTH**2
    sizer.observe(0.0, MAX_GROWTH**2)  # below the clock's tick: still bounded
    assert sizer.next_size() == min(MAX_GROWTH**3, MAX_CHUNK_ITEMS)


def test_a_chunk_holds_about_the_target_time_of_work() -> None:
    sizer = ChunkSizer(None, workers=2, length=None)
    for items in (1, 8, 64, 512):  # 20 us per item
        sizer.observe(items * 0.000_02, items)
    assert sizer.next_size() == round(TARGET_CHUNK_SECONDS / 0.000_02)


def test_items_slower_than_the_target_go_alone() -> None:
    sizer = ChunkSizer(None, workers=2, length=None)
    sizer.observe(0.05, 1)
    assert sizer.next_size() == 1


def test_a_slow_item_weighs_its_share_and_a_chunk_of_slow_ones_moves_the_size_at_once() -> None:
    sizer = ChunkSizer(None, workers=2, length=None)
    fast = TARGET_CHUNK_SECONDS / 100  # per item: 100 per chunk
    for items in (1, 8, 64, 100, 100):
        sizer.observe(items * fast, items)
    assert sizer.next_size() == 100
    sizer.observe(99 * fast + TARGET_CHUNK_SECONDS, 100)  # one item as long as a chunk
    assert 50 <= sizer.next_size() < 100  # by its share of the work, not down to one
    slow = TARGET_CHUNK_SECONDS / 2  # the items have turned slow: 2 per chunk
    size = sizer.next_size()
    sizer.observe(size * slow, size)  # a chunk as large as the recent ones
    assert sizer.next_size() <= 10
    for _ in range(15):  # the fast items' weight fades chunk by chunk
        size = sizer.next_size()
        sizer.observe(size * slow, size)
    assert sizer.next_size() == 2


def test_a_known_length_leaves_four_chunks_per_worker_as_multiprocessing_does() -> None:
    sizer = ChunkSizer(None, workers=2, length=20_000)
    for items in (1, 8, 64, 512):
        sizer.observe(0.0, items)
    assert sizer.next_size() == 20_000 // (4 * 2)


def test_most_bounds_a_chunk_and_the_cap_bounds_memory() -> None:
    capped = ChunkSizer(None, workers=2, length=None, most=3)
    fast = ChunkSizer(None, workers=2, length=None)
    for sizer in (capped, fast):
        for items in (1, 8, 64, 512, 4096):
            sizer.observe(0.0, items)
    assert capped.next_size() == 3
    assert fast.next_size() == MAX_CHUNK_ITEMS


def test_a_later_map_of_a_function_starts_at_the_size_that_fitted() -> None:
    times = ItemTimes()
    first = ChunkSizer(None, workers=2, length=None, memory=(times, "f"))
    for size in (1, MAX_GROWTH):
        first.observe(size * 0.000_001, size)  # 1 us per item
    later = ChunkSizer(None, workers=2, length=None, memory=(times, "f"))
    # no probe, and one ramp step less
    assert later.next_size() == min(MAX_GROWTH**2, round(TARGET_CHUNK_SECONDS / 0.000_001),
                                    MAX_CHUNK_ITEMS)
    other = ChunkSizer(None, workers=2, length=None, memory=(times, "g"))
    assert other.next_size() == 1  # another function starts from scratch


def test_a_function_timed_as_a_plain_task_needs_no_probe_item() -> None:
    times = ItemTimes()
    times.seed("f", 0.000_001)
    assert ChunkSizer(None, workers=2, length=None, memory=(times, "f")).next_size() == MAX_GROWTH
    times.seed("f", 1.0)  # what a map measured is kept: a seed does not overwrite it
    assert times.get("f") == (0.000_001, 1)
    times.seed("h", None)  # never ran: nothing known
    assert times.get("h") is None


def test_item_times_forget_everything_past_their_bound() -> None:
    times = ItemTimes()
    for i in range(MAX_FUNCTIONS):
        times.put(i, 0.001, 1)
    times.put("one more", 0.001, 1)
    assert times.get(0) is None and times.get("one more") == (0.001, 1)
