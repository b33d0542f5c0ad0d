"""An asyncio service that scores texts on the pool without ever blocking its event loop.

Each worker builds a sentiment lexicon once (``on_create``). Every request is
an asyncio task awaiting ``queue_task_async``; 200 of them are in flight at
once. An urgent request uses ``run_task_async``: it skips the queue and runs
on the reserved worker. Meanwhile a heartbeat coroutine ticks every 10 ms;
its longest gap shows that the event loop never waited for the pool.

Run: python examples/asyncio_app.py
"""

from __future__ import annotations

import asyncio
import random
import time

import procpool

WORDS = 50_000
REQUESTS = 200


def word(i: int) -> str:
    return f"w{i}"


def load_lexicon() -> dict[str, float]:
    """on_create: a word -> sentiment table, built once per worker."""
    rng = random.Random(1)
    return {word(i): rng.uniform(-1, 1) for i in range(WORDS)}


def score(lexicon: dict[str, float], text: str) -> float:
    """A task: the mean sentiment of the words of ``text`` that the lexicon knows."""
    values = [lexicon[w] for w in text.split() if w in lexicon]
    return sum(values) / len(values) if values else 0.0


def make_text(rng: random.Random) -> str:
    return " ".join(word(rng.randrange(WORDS * 2)) for _ in range(5_000))


async def heartbeat(stop: asyncio.Event, gaps: list[float]) -> None:
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(0.01)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now


async def handle(manager: procpool.TaskManager[dict[str, float]], text: str) -> float:
    """What a request handler does: await the pool like any other I/O."""
    return await manager.queue_task_async(score, text)


async def main() -> None:
    rng = random.Random(3)
    texts = [make_text(rng) for _ in range(REQUESTS)]
    config = procpool.Config(on_create=load_lexicon, worker_count=2, resource_pool_size=1)
    with procpool.TaskManager(config) as manager:
        stop = asyncio.Event()
        gaps: list[float] = []
        beat = asyncio.create_task(heartbeat(stop, gaps))
        started = time.perf_counter()
        requests = [asyncio.create_task(handle(manager, text)) for text in texts]
        await asyncio.sleep(0)  # one turn of the loop: every request reaches the queue
        waiting = manager.stats().queued_tasks
        urgent_started = time.perf_counter()
        urgent = await manager.run_task_async(score, texts[0])
        urgent_ms = (time.perf_counter() - urgent_started) * 1000
        done = [r for r in requests if r.done()]
        print(f"urgent request answered in {urgent_ms:.0f} ms on the reserved worker;"
              f" {waiting} requests were queued, {len(done)} finished before it")
        scores = await asyncio.gather(*requests)
        elapsed = time.perf_counter() - started
        stop.set()
        await beat
    assert urgent == scores[0]  # same lexicon, same text, same answer on any worker
    print(f"handled {len(scores)} requests in {elapsed:.2f} s"
          f" ({len(scores) / elapsed:.0f} requests/s), mean score {sum(scores) / len(scores):+.4f}")
    print(f"event loop: {len(gaps)} heartbeats of 10 ms, longest gap {max(gaps) * 1000:.0f} ms")


if __name__ == "__main__":
    asyncio.run(main())
