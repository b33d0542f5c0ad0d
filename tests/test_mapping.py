"""map_unordered and the progress bar of map (procpool.mapping, procpool.progress)."""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from procpool import Config, TaskManager
from tests import exact_tasks as et
from tests import tasks
from tests.polling import wait_until

WITHIN = 30.0


def config(**overrides: Any) -> Config[Any]:
    options: dict[str, Any] = {"on_create": tasks.make_plain, "worker_count": 2,
                               "resource_pool_size": 0}
    options.update(overrides)
    return Config(**options)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunksize", [1, 5])
def test_map_unordered_yields_every_result_as_tasks_finish(chunksize: int) -> None:
    with TaskManager(config()) as manager:
        got = list(manager.map_unordered(tasks.double, range(200), chunksize=chunksize))
        assert sorted(got) == [2 * i for i in range(200)]
        # A slow first item holds up no other (map would yield it first).
        seconds = [0.5] + [0.0] * 9
        order = [s for _, s in manager.map_unordered(et.spin_then_tell, seconds)]
        assert sorted(order) == sorted(seconds)
        assert order.index(0.5) >= 5, order


def counted_count(pulled: list[int]) -> Iterator[int]:
    """0, 1, 2, ... without end, counting in ``pulled[0]`` how many were read."""
    for i in itertools.count():
        pulled[0] += 1
        yield i


@pytest.mark.timeout(60)
def test_map_unordered_is_lazy_and_leaving_cancels_the_rest() -> None:
    pulled = [0]
    source = functools.partial(counted_count, pulled)

    with TaskManager(config()) as manager:
        results = manager.map_unordered(tasks.double, source(), buffersize=16)
        assert len(list(itertools.islice(results, 100))) == 100
        assert pulled[0] <= 100 + 16
        results.close()  # type: ignore[attr-defined]
        stopped_at = pulled[0]
        assert manager.queue_task(tasks.double, 1).result(timeout=WITHIN) == 2
    assert pulled[0] == stopped_at


@pytest.mark.timeout(60)
def test_map_unordered_raises_a_failing_items_error_and_times_out() -> None:
    with TaskManager(config()) as manager:
        with pytest.raises(TypeError):
            list(manager.map_unordered(tasks.add, [1, 2, "x"], [1, 1, 1]))
        with pytest.raises(concurrent.futures.TimeoutError):  # TimeoutError from 3.11
            list(manager.map_unordered(tasks.sleep_for, [5, 5], timeout=0.5))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("unordered", [False, True])
def test_progress_draws_a_bar_with_the_total_on_stderr(
    capsys: pytest.CaptureFixture[str], unordered: bool
) -> None:
    pytest.importorskip("rich")
    with TaskManager(config()) as manager:
        mapping = manager.map_unordered if unordered else manager.map
        got = list(mapping(tasks.double, range(50), progress=True))
    assert sorted(got) == [2 * i for i in range(50)]
    err = capsys.readouterr().err
    assert "50/50" in err and "double" in err


def test_progress_without_rich_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich.progress", None)
    with TaskManager(config(worker_count=1)) as manager, pytest.raises(
            ImportError, match=r'pip install "procpool\[demo\]"'):
        manager.map(tasks.double, range(3), progress=True)


# == map without a chunksize: chunks sized by time ================================


@pytest.mark.timeout(60)
@pytest.mark.parametrize("unordered", [False, True])
def test_slow_items_are_never_lumped_together(unordered: bool) -> None:
    with TaskManager(config(worker_count=2)) as manager:
        mapping = manager.map_unordered if unordered else manager.map
        per_worker = Counter(pid for pid, _ in mapping(et.spin, [0.02] * 20))
    assert len(per_worker) == 2 and min(per_worker.values()) >= 5, per_worker


@pytest.mark.timeout(60)
def test_an_item_failing_inside_a_chunk_comes_after_the_results_before_it() -> None:
    with TaskManager(config()) as manager:
        list(manager.map(tasks.double, range(5000)))  # chunks have grown by now
        results = manager.map(tasks.add, range(3000), [1] * 2999 + ["x"])  # type: ignore[list-item]
        assert list(itertools.islice(results, 2999)) == [i + 1 for i in range(2999)]
        with pytest.raises(TypeError) as raised:
            next(results)
        assert "Traceback" in str(raised.value.__cause__)  # the worker's own traceback
        assert list(manager.map(tasks.double, range(10))) == [2 * i for i in range(10)]


@pytest.mark.timeout(60)
def test_check_health_judges_the_failing_item_of_a_chunk_not_the_chunk() -> None:
    from tests import failure_tasks as ft

    with TaskManager(config(worker_count=1, max_retries=0,
                            check_health=ft.healthy_unless_processor_crash)) as manager:
        [first] = manager.worker_pids()
        with pytest.raises(Exception, match="processor crash on item 300"):
            list(manager.map(ft.crash_at, range(1000), [300] * 1000))
        wait_until(lambda: manager.worker_pids() not in ([], [first]), WITHIN)


@pytest.mark.timeout(60)
def test_buffersize_counts_items_when_chunks_are_sized_by_time() -> None:
    pulled = [0]
    source = functools.partial(counted_count, pulled)

    with TaskManager(config()) as manager:
        list(manager.map(tasks.double, range(5000)))  # learn that items are tiny
        results = manager.map(tasks.double, source(), buffersize=50)
        assert list(itertools.islice(results, 1000)) == [2 * i for i in range(1000)]
        assert pulled[0] <= 1000 + 50


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunksize", [None, 1, 50])
def test_map_results_taken_by_next_and_by_loops_alike_continue_each_other(
        chunksize: int | None) -> None:
    with TaskManager(config()) as manager:
        list(manager.map(tasks.double, range(2000)))  # learnt: chunks of many items
        results = manager.map(tasks.double, range(1000), chunksize=chunksize)
        assert next(results) == 0
        taken = []
        for value in results:  # a loop takes the same values next() does
            taken.append(value)
            if len(taken) == 10:
                break
        assert taken == [2 * i for i in range(1, 11)]
        assert next(results) == 22
        assert list(results) == [2 * i for i in range(12, 1000)]
        with pytest.raises(StopIteration):
            next(results)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("chunksize", [None, 1, 50])
def test_map_keeps_no_reference_to_a_result_it_yielded(chunksize: int | None) -> None:
    import weakref

    with TaskManager(config()) as manager:
        for got in manager.map(tasks.token, range(200), chunksize=chunksize):
            ref = weakref.ref(got)
            del got
            assert ref() is None  # plain reference counting: nothing else holds it


@pytest.mark.timeout(60)
def test_a_pool_keeps_what_its_maps_and_tasks_measured_for_the_next_map() -> None:
    from procpool.tasks import kind_of

    with TaskManager(config()) as manager:
        times = manager._item_times  # what sizes the first chunks (tests/policy/test_chunking.py)
        assert times.get(kind_of(tasks.double)) is None
        assert list(manager.map(tasks.double, range(5000))) == [2 * i for i in range(5000)]
        per_item, largest = times.get(kind_of(tasks.double)) or (None, 0)
        assert per_item is not None and largest > 1
        manager.queue_task(tasks.token, 1).result()
        assert times.get(kind_of(tasks.token)) is None
        list(manager.map(tasks.token, range(3), chunksize=1))  # a plain task's time seeds a map
        seeded = times.get(kind_of(tasks.token))
        assert seeded is not None and seeded[1] == 1


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 2])
def test_maps_and_bursts_on_a_cold_then_warm_pool_give_every_result_in_order(
        start_method: str, workers: int) -> None:
    """Every value comes whole and in order whatever a read of the pipes brings at once
    (one message or many), maps and plain tasks, priority or not, beside each other."""
    with TaskManager(config(worker_count=workers, start_method=start_method)) as manager:
        for _ in range(2):  # cold: nothing measured, windows closed; then warm
            results = manager.map(tasks.double, range(3000))
            assert next(results) == 0
            urgent = [manager.queue_task_with_priority(tasks.double, -i) for i in range(20)]
            assert list(results) == [2 * i for i in range(1, 3000)]
            assert [f.result(timeout=WITHIN) for f in urgent] == [-2 * i for i in range(20)]
            assert list(manager.map(tasks.double, range(500), chunksize=50)) == [
                2 * i for i in range(500)]
            assert sorted(manager.map_unordered(tasks.double, range(500))) == [
                2 * i for i in range(500)]
            burst = [manager.queue_task(tasks.double, i) for i in range(2000)]
            assert [f.result(timeout=WITHIN) for f in burst] == [2 * i for i in range(2000)]
