"""Bounded prefetch: a function over items on a small thread pool, results in input order, a few items ahead.

The shard worker decodes samples with it so that reading and preprocessing the next batch overlaps the model's
compute on the current one (PIL, NumPy and torch release the GIL while they decode and resize). ``depth``
bounds the memory: while the consumer holds item ``k``, at most ``depth`` later items are loading or loaded
(items ``k + 1 .. k + depth``), and the input iterable is read lazily, never further than that. A failing call
is delivered as that item's result (the exception object), never raised, so one bad sample does not stop the
others. Every thread is joined when the iterator is exhausted, closed early or garbage-collected.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch(fn: Callable[[T], R], items: Iterable[T], workers: int,
             depth: int) -> Generator[tuple[T, R | Exception, float], None, None]:
    """``(item, fn(item) or the Exception it raised, waited_s)`` for each item, in input order.

    Args:
        fn: the load function, called once per item (on a pool thread; in the calling thread when
            ``workers`` or ``depth`` is 0).
        items: the inputs, read lazily: at most ``depth + 1`` beyond the last item already yielded.
        workers: pool threads; 0 calls ``fn`` inline, one item at a time, when the item is asked for.
        depth: most items loading or loaded ahead of the one the consumer holds; 0 loads inline.

    ``waited_s`` is how long the consumer was blocked on that item: the time until its result was ready (with
    inline loading, the whole call). A ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``)
    raised by ``fn`` propagates. The pool is created on the first ``next`` and shut down, waiting for running
    calls and cancelling queued ones, when the iterator finishes or is closed; close it explicitly (or use
    :func:`contextlib.closing`) when stopping early.
    """
    if workers < 0 or depth < 0:
        raise ValueError(f"workers and depth must be >= 0, got {workers} and {depth}")
    if workers == 0 or depth == 0:
        yield from _inline(fn, items)
        return
    source = iter(items)
    pending: deque[tuple[T, Future[R]]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xcore-prefetch")
    exhausted = False
    try:
        while True:
            while not exhausted and len(pending) <= depth:  # the next item plus `depth` ahead
                try:
                    item = next(source)
                except StopIteration:
                    exhausted = True
                    break
                pending.append((item, pool.submit(fn, item)))
            if not pending:
                return
            item, future = pending.popleft()
            t0 = time.perf_counter()
            err = future.exception()
            waited = time.perf_counter() - t0
            if err is None:
                yield item, future.result(), waited
            elif isinstance(err, Exception):
                yield item, err, waited
            else:
                raise err
    finally:
        for _item, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _inline(fn: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, R | Exception, float]]:
    """:func:`prefetch` without threads: each call runs when its item is asked for (all of it is waiting)."""
    for item in items:
        t0 = time.perf_counter()
        try:
            res: R | Exception = fn(item)
        except Exception as err:
            res = err
        yield item, res, time.perf_counter() - t0
