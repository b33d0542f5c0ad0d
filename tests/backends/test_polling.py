"""Waiting for a pipe (procpool.backends.polling): poll for the learnt window, then sleep;
and a pool left idle stops polling."""

from __future__ import annotations

import os
import select
import threading
import time
from multiprocessing import Pipe

import psutil
import pytest

from procpool import Config, TaskManager
from procpool.backends import polling
from procpool.backends.worker import _message_reader
from procpool.policy.spin import MOST_SECONDS, SpinWindow
from tests import tasks


def test_data_already_there_is_found_with_the_window_open_or_closed(
        pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"x")
    closed, opened = SpinWindow(), SpinWindow()
    opened.seconds = MOST_SECONDS
    assert polling.readable_within(r, 1.0, closed)
    assert polling.readable_within(r, 1.0, opened)
    assert 0 < closed.seconds <= MOST_SECONDS  # a short wait opened it
    assert polling.readable_within(r, 1.0)  # no window at all


def test_nothing_within_the_timeout_is_false_and_narrows_the_window(
        pipe: tuple[int, int]) -> None:
    r, _ = pipe
    window = SpinWindow()
    window.seconds = MOST_SECONDS
    assert not polling.readable_within(r, 0.01, window)
    assert window.seconds == MOST_SECONDS / 2


def test_a_closed_writer_counts_as_readable(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.close(w)
    assert polling.readable_within(r, 1.0, SpinWindow())


def test_spinning_ends_when_data_arrives_or_when_its_time_is_up(
        pipe: tuple[int, int]) -> None:
    r, w = pipe
    poller = select.poll()
    poller.register(r, select.POLLIN)
    assert not polling.spin_until_readable(poller, 0.001)
    writer = threading.Thread(target=os.write, args=(w, b"x"))
    writer.start()
    try:
        assert polling.spin_until_readable(poller, 30.0)  # returns as the byte lands
    finally:
        writer.join()


def test_a_worker_reads_every_message_in_order_whether_it_polls_or_sleeps() -> None:
    mine, theirs = Pipe()
    try:
        next_message = _message_reader(mine)
        theirs.send_bytes(b"first")  # there before the wait: opens the window
        assert next_message(False) == b"first"
        sender = threading.Thread(target=lambda: [theirs.send_bytes(b"%d" % i) for i in range(50)])
        sender.start()
        try:
            assert [next_message(i % 2 == 0) for i in range(50)] == [b"%d" % i for i in range(50)]
        finally:
            sender.join()
    finally:
        mine.close()
        theirs.close()


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_a_pool_left_idle_after_round_trips_and_a_map_stops_polling(
        start_method: str, workers: int) -> None:
    config = Config(on_create=tasks.make_plain, worker_count=workers, resource_pool_size=0,
                    start_method=start_method)
    with TaskManager(config) as manager:
        # Sequential round trips and a map's chunks open both windows of every worker.
        assert [manager.queue_task(tasks.double, i).result() for i in range(300)] == [
            2 * i for i in range(300)]
        assert list(manager.map(tasks.double, range(20_000))) == [2 * i for i in range(20_000)]
        processes = [psutil.Process(pid) for pid in manager.worker_pids()]
        assert len(processes) == workers

        def cpu_seconds() -> float:
            return sum(sum(p.cpu_times()[:2]) for p in processes)

        before = cpu_seconds()
        time.sleep(0.5)  # the subject: half a second with nothing to do
        used = cpu_seconds() - before
    # A worker polls at most one window (2 ms) after its last task, then sleeps.
    assert used < 0.1 * workers, f"idle workers used {used:.3f} s of CPU in 0.5 s"


@pytest.mark.parametrize("workers", [1, 2])
def test_round_trips_on_a_cold_then_warm_pool_priority_or_not_give_every_result(
        start_method: str, workers: int) -> None:
    config = Config(on_create=tasks.make_plain, worker_count=workers, resource_pool_size=0,
                    start_method=start_method)
    with TaskManager(config) as manager:
        submit = (manager.queue_task, manager.queue_task_with_priority)
        # The first calls find every window closed, the later ones open.
        got = [submit[i % 2](tasks.double, i).result(timeout=30) for i in range(400)]
        assert got == [2 * i for i in range(400)]
        futures = [submit[i % 2](tasks.double, i) for i in range(400)]  # a burst behind them
        assert [f.result(timeout=30) for f in futures] == [2 * i for i in range(400)]
        assert manager.queue_task(tasks.double, 7).result(timeout=30) == 14  # and one more
