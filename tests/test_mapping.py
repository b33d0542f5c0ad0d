"""map_unordered and the progress bar of map (procpool.mapping, procpool.progress)."""

from __future__ import annotations

import concurrent.futures
import itertools
import sys
from typing import Any

import pytest

from procpool import Config, TaskManager
from tests import exact_tasks as et
from tests import tasks

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


@pytest.mark.timeout(60)
def test_map_unordered_is_lazy_and_leaving_cancels_the_rest() -> None:
    pulled = [0]

    def source() -> Any:
        for i in itertools.count():
            pulled[0] += 1
            yield i

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
