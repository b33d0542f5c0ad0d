"""Health checks and retries: a broken resource is replaced, its task runs again.

An image processor sometimes crashes in a way that leaves it unusable. The
task raises ``ProcessorCrash``; ``check_health`` says such an error means the
worker's resource is broken, so that worker runs ``on_destroy`` and leaves, a
fresh one is started, and the task goes back to the front of the queue
(``max_retries=1``: one more attempt). An at-most-once task
(``queue_task_once``) is never run twice: its caller gets the error.

Run: python examples/health_and_retries.py
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from loguru import logger

import procpool


class ProcessorCrash(RuntimeError):
    """The processor is in a bad state: no further task should use it."""


class ImageProcessor:
    def __init__(self) -> None:
        self.pid = os.getpid()
        print(f"started processor in worker {self.pid}", flush=True)


def create_processor() -> ImageProcessor:
    return ImageProcessor()


def destroy_processor(processor: ImageProcessor) -> None:
    print(f"worker {processor.pid}: processor released, the worker leaves", flush=True)


def check_processor_health(exc: BaseException) -> bool:
    """False: this error means the resource is broken and its worker must be replaced."""
    return not isinstance(exc, ProcessorCrash)


def process(processor: ImageProcessor, image: str, scratch: str) -> str:
    """Crashes the processor the first time it sees an image, then succeeds."""
    seen = Path(scratch, image)
    if not seen.exists():
        seen.touch()
        print(f"worker {processor.pid}: processor crash on {image}", flush=True)
        raise ProcessorCrash(f"processor crash on {image}")
    return f"processed {image} in worker {processor.pid}"


def main() -> None:
    config = procpool.Config(
        on_create=create_processor,
        on_destroy=destroy_processor,
        check_health=check_processor_health,
        max_retries=1,  # one more attempt after an unhealthy error
        worker_count=2,
        resource_pool_size=0,
    )
    # Show procpool's own account of the retry and the replacement workers.
    logger.remove()
    logger.add(sys.stdout, level="INFO", format="  procpool: {message}")
    logger.enable("procpool")
    with tempfile.TemporaryDirectory() as scratch, procpool.TaskManager(config) as manager:
        retried = manager.queue_task(process, "photo-1.png", scratch)
        once = manager.queue_task_once(process, "photo-2.png", scratch)
        print(f"retried task: {retried.result().split(' in ')[0]}")
        try:
            once.result()
        except ProcessorCrash as exc:
            print(f"at-most-once task failed: {type(exc).__name__}: {exc}")
        healthy = manager.queue_task(process, "photo-1.png", scratch)  # seen: no crash now
        print(f"a third task: {healthy.result().split(' in ')[0]}")
        print(f"retries: {manager.metrics().total_tasks_retried}, "
              f"base workers: {manager.stats().base_workers}")


if __name__ == "__main__":
    main()
