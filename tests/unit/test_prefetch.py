"""The bounded prefetch iterator (xcore.core.prefetch): order, per-item exceptions, the bound, no thread left."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from xcore.core.prefetch import prefetch

DEADLINE = 30.0  # seconds; only a deadline for events that must happen, never a measured quantity


def _pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("xcore-prefetch")]


class Probe:
    """A load function and an input iterable that count what was started and drawn, against what was consumed."""

    def __init__(self, n: int, fail: set[int] = frozenset()) -> None:
        self.n, self.fail = n, fail
        self.lock = threading.Lock()
        self.drawn = self.started = self.consumed = 0
        self.ahead: list[int] = []  # per load: its item minus the items the consumer had finished with

    def items(self) -> Iterator[int]:
        for i in range(self.n):
            self.drawn += 1
            yield i

    def load(self, i: int) -> int:
        with self.lock:
            self.started += 1
            self.ahead.append(i - self.consumed)
        if i in self.fail:
            raise ValueError(f"bad {i}")
        return i * i


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_order_and_exceptions_per_item(workers):
    probe = Probe(20, fail={3, 4, 17})
    out = list(prefetch(probe.load, probe.items(), workers=workers, depth=4))
    assert [item for item, _res, _w in out] == list(range(20))
    for item, res, waited in out:
        if item in probe.fail:
            assert isinstance(res, ValueError) and str(res) == f"bad {item}"
        else:
            assert res == item * item
        assert waited >= 0.0
    assert probe.started == 20
    assert _pool_threads() == []


@pytest.mark.parametrize(("workers", "depth"), [(1, 1), (2, 3), (8, 5)])
def test_never_more_than_depth_ahead(workers, depth):
    """Inputs are drawn lazily and no load starts more than ``depth`` items beyond the consumer's position."""
    probe = Probe(40)
    for item, res, _waited in prefetch(probe.load, probe.items(), workers=workers, depth=depth):
        assert res == item * item
        # holding `item`: items item+1 .. item+depth may be loading, nothing beyond was even drawn
        assert probe.drawn - (item + 1) <= depth
        with probe.lock:
            probe.consumed = item + 1
    assert probe.started == 40 and len(probe.ahead) == 40
    assert max(probe.ahead) <= depth


def test_loads_ahead_while_the_consumer_holds_an_item():
    """While the consumer holds item 0, items 1..depth load in the background (the overlap), and no more."""
    depth = 3
    started = {i: threading.Event() for i in range(10)}

    def load(i: int) -> int:
        started[i].set()
        return i

    gen = prefetch(load, range(10), workers=4, depth=depth)
    first = next(gen)
    assert first[0] == 0
    for i in range(1, depth + 1):
        assert started[i].wait(DEADLINE), f"item {i} was not loaded ahead"
    gen.close()
    assert not any(started[i].is_set() for i in range(depth + 1, 10))
    assert _pool_threads() == []


def test_threads_joined_when_closed_early_or_on_error():
    release = threading.Event()

    def slow(i: int) -> int:
        if i > 0:
            release.wait(DEADLINE)
        return i

    gen = prefetch(slow, range(100), workers=3, depth=6)
    assert next(gen)[0] == 0
    assert len(_pool_threads()) >= 1  # threads exist while items load ahead
    release.set()
    gen.close()  # running loads finish, queued ones are cancelled, every thread is joined
    assert _pool_threads() == []

    def interrupt(i: int) -> int:
        if i == 2:
            raise KeyboardInterrupt
        return i

    seen = []
    with pytest.raises(KeyboardInterrupt):
        for item, _res, _w in prefetch(interrupt, range(10), workers=2, depth=2):
            seen.append(item)
    assert seen == [0, 1] and _pool_threads() == []


def test_consumer_exception_and_garbage_collection_join_threads():
    with pytest.raises(RuntimeError, match="consumer"):
        for item, _res, _w in prefetch(lambda i: i, range(50), workers=2, depth=4):
            if item == 5:
                raise RuntimeError("consumer failed")
    # the for loop dropped its only reference: CPython closes the generator, which joins the pool
    assert _pool_threads() == []


def test_not_started_until_iterated_and_bad_arguments():
    before = set(threading.enumerate())
    gen = prefetch(lambda i: i, range(5), workers=2, depth=2)
    assert set(threading.enumerate()) == before  # nothing runs before the first next()
    gen.close()
    with pytest.raises(ValueError):
        next(prefetch(lambda i: i, range(5), workers=-1, depth=2))
    assert [r for _i, r, _w in prefetch(lambda i: i + 1, [], workers=2, depth=2)] == []
    assert [r for _i, r, _w in prefetch(lambda i: i + 1, range(3), workers=2, depth=0)] == [1, 2, 3]
