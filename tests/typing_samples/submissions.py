"""Checked by mypy in tests/test_typing.py: the lines marked as errors must be, no other."""

from __future__ import annotations

import asyncio

from procpool import Executor, TaskFuture, TaskManager


def score(model: dict[str, int], x: int) -> float:
    return model["w"] * x * 0.5


def plain(x: int) -> str:
    return str(x)


def good(manager: TaskManager[dict[str, int]], executor: Executor) -> None:
    future: TaskFuture[float] = manager.queue_task(score, 3)
    urgent: TaskFuture[float] = manager.queue_task_with_priority_once(score, x=4)
    value: float = manager.run_task(score, 5)
    results: list[float] = list(manager.map(score, [1, 2]))
    text: str = executor.submit(plain, 1).result()
    texts: list[str] = list(executor.map(plain, [1, 2]))
    awaited = asyncio.run(manager.queue_task_async(score, 6))
    print(future, urgent, value, results, text, texts, awaited + 1.0)


def bad(manager: TaskManager[dict[str, int]], other: TaskManager[str], executor: Executor) -> None:
    manager.queue_task(score, "not an int")  # error
    manager.queue_task_with_priority(score)  # error
    manager.queue_task_once(score, 1, 2)  # error
    manager.run_task(score, y=1)  # error
    other.queue_task(score, 1)  # error: the resource is a str here
    executor.submit(plain, "not an int")  # error
    wrong: TaskFuture[str] = manager.queue_task(score, 1)  # error
    print(wrong)
