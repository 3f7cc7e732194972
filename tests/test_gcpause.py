"""archc.gcpause: the collector paused while a large structure is built, and what it made kept
out of the young generations when it outlives the call (archc.loads' tree)."""

from __future__ import annotations

import gc
import weakref

import pytest

import archc
from archc import gcpause
from conftest import ALL_SPECS


class Thing:
    pass


@pytest.fixture(autouse=True)
def fresh_counts():
    gc.collect()  # no young collection falls due inside a test (it would move its objects on)


def generation_of(obj) -> int | None:
    for generation in range(3):
        if any(o is obj for o in gc.get_objects(generation)):
            return generation
    return None


def test_paused_resumes_and_leaves_young_objects_young():
    assert gc.isenabled()
    with gcpause.paused():
        assert not gc.isenabled()
        made = [Thing() for _ in range(10)]
    assert gc.isenabled()
    assert generation_of(made) == 0


def test_keep_moves_what_was_made_to_the_oldest_generation():
    with gcpause.paused(keep=True):
        made = [[Thing()] for _ in range(2_000)]
    assert gc.isenabled()
    assert generation_of(made) == 2
    assert generation_of(made[-1][0]) == 2
    assert gc.get_count()[0] < 100  # no young collection is due over them


def test_a_cycle_made_meanwhile_is_still_collected():
    with gcpause.paused(keep=True):
        cycle = Thing()
        cycle.me = cycle
        ref = weakref.ref(cycle)
        del cycle
    assert ref() is not None  # a cycle: not freed by reference counting
    gc.collect()
    assert ref() is None


def test_the_programs_own_frozen_objects_stay_frozen():
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with gcpause.paused(keep=True):
            made = [Thing()]
        assert gc.get_freeze_count() == frozen
        assert generation_of(made) == 0
    finally:
        gc.unfreeze()


def test_a_caller_that_disabled_the_collector_keeps_it_disabled():
    gc.disable()
    try:
        with gcpause.paused(keep=True):
            made = [Thing()]
        assert not gc.isenabled()
        assert generation_of(made) == 0
    finally:
        gc.enable()


def test_an_error_resumes_the_collector_without_moving_anything():
    with pytest.raises(RuntimeError), gcpause.paused(keep=True):
        made = [Thing()]
        raise RuntimeError("boom")
    assert gc.isenabled()
    assert generation_of(made) == 0


def test_compiling_the_shipped_specs_makes_no_cyclic_garbage():
    """What expansion makes goes to the oldest generation, where only full collections look:
    a garbage cycle made meanwhile (a closure calling itself, as expr's comprehensions had)
    would stay there until one runs."""
    texts = [(path.read_text(), str(path)) for path in ALL_SPECS]
    for text, file in texts:  # caches filled, the block library read
        archc.loads(text, file)
    gc.collect()
    gc.disable()
    try:
        for text, file in texts:
            archc.loads(text, file)
        assert gc.collect() == 0
    finally:
        gc.enable()
