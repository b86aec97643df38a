"""Threads kept for the process: the runner's checks and the work a check spreads out.

A probe every few seconds would otherwise start some thirty threads each time, and a check
that reads several blobs would start a pool of its own.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
IDLE_WORKER_S = 60.0


class Workers:
    """Daemon threads kept between runs. A task never waits for a busy worker: when none is
    idle a new one starts, so a check stuck past its deadline only ever holds its own thread;
    a worker idle for a minute ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0

    def submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            spare = self._idle > 0
            if spare:
                self._idle -= 1
        self._tasks.put(task)
        if not spare:
            threading.Thread(target=self._serve, name="check worker", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=IDLE_WORKER_S)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # nobody counted on this one: it may go
                        self._idle -= 1
                        return
                continue
            with contextlib.suppress(Exception):
                task()
            with self._lock:
                self._idle += 1


WORKERS = Workers()


def map_parallel(fn: Callable[[T], R], items: Iterable[T], width: int = 4) -> list[R]:
    """fn over items, at most width at a time on the kept workers, results in order. fn
    should not raise (an exception is returned as its result's place holder, re-raised)."""
    todo: Sequence[T] = list(items)
    if len(todo) <= 1:
        return [fn(x) for x in todo]
    results: list[tuple[bool, object]] = [(False, None)] * len(todo)
    done = threading.Semaphore(0)
    slots = threading.Semaphore(max(1, width))

    def one(i: int, item: T) -> None:
        try:
            results[i] = (True, fn(item))
        except BaseException as exc:  # handed back to the caller, below
            results[i] = (False, exc)
        finally:
            slots.release()
            done.release()

    for i, item in enumerate(todo):
        slots.acquire()
        WORKERS.submit(functools.partial(one, i, item))
    for _ in todo:
        done.acquire()
    out: list[R] = []
    for ok, value in results:
        if not ok:
            assert isinstance(value, BaseException)
            raise value
        out.append(value)  # type: ignore[arg-type]
    return out
