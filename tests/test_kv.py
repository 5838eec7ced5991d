"""Tests for andes.engines.sim.kv.BlockPool: the can/do interface and its one invariant."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from andes.engines.sim.kv import BlockPool


def assert_invariant(pool: BlockPool) -> None:
    assert pool.num_free == pool.capacity - int(pool.held.sum())
    assert 0 <= pool.num_free <= pool.capacity
    assert np.all(pool.held >= 0)


def test_new_pool_is_all_free():
    pool = BlockPool(10, num_slots=3)
    assert pool.num_free == 10
    assert pool.held.tolist() == [0, 0, 0]
    assert_invariant(pool)


def test_negative_capacity_is_rejected_naming_the_field():
    with pytest.raises(ValueError, match="capacity"):
        BlockPool(-1)


def test_can_allocate_bounds():
    pool = BlockPool(5, 2)
    assert pool.can_allocate(0)
    assert pool.can_allocate(5)
    assert not pool.can_allocate(6)
    assert not pool.can_allocate(-1)


def test_allocate_and_free_round_trip():
    pool = BlockPool(10, 3)
    pool.allocate(0, 4)
    pool.allocate(2, 3)
    pool.allocate(0, 1)
    assert pool.held.tolist() == [5, 0, 3]
    assert pool.num_free == 2
    assert_invariant(pool)
    assert pool.free(0) == 5
    assert pool.num_free == 7
    assert pool.free(np.array([1, 2])) == 3
    assert pool.num_free == 10
    assert_invariant(pool)


def test_allocate_beyond_free_raises_and_changes_nothing():
    pool = BlockPool(4, 2)
    pool.allocate(0, 3)
    with pytest.raises(RuntimeError, match="exhausted"):
        pool.allocate(1, 2)
    assert pool.held.tolist() == [3, 0]
    assert_invariant(pool)


def test_free_of_a_slot_listed_twice_releases_it_once():
    pool = BlockPool(10, 2)
    pool.allocate(1, 4)
    assert pool.free(np.array([1, 1])) == 4
    assert pool.num_free == 10
    assert_invariant(pool)


def test_resize_only_grows_and_keeps_holdings():
    pool = BlockPool(10, 2)
    pool.allocate(1, 3)
    pool.resize(5)
    assert pool.held.tolist() == [0, 3, 0, 0, 0]
    pool.resize(1)
    assert pool.held.size == 5
    pool.allocate(4, 2)
    assert_invariant(pool)


def test_grow_to_when_everything_fits():
    pool = BlockPool(10, 3)
    pool.allocate(0, 2)
    short = pool.grow_to(np.array([0, 1, 2]), np.array([3, 2, 0]))
    assert short.size == 0
    assert pool.held.tolist() == [3, 2, 0]
    assert_invariant(pool)


def test_grow_to_never_shrinks():
    pool = BlockPool(10, 1)
    pool.allocate(0, 5)
    assert pool.grow_to(np.array([0]), np.array([2])).size == 0
    assert pool.held.tolist() == [5]
    assert_invariant(pool)


def test_grow_to_serves_slots_in_the_given_order():
    pool = BlockPool(5, 3)
    short = pool.grow_to(np.array([2, 0, 1]), np.array([3, 3, 1]))
    # Slot 2 first (3 blocks), slot 0 no longer fits; the caller's order decides who is short.
    assert 2 not in short.tolist() and 0 in short.tolist()
    assert pool.held[2] == 3 and pool.held[0] == 0
    assert_invariant(pool)


def test_grow_to_never_reports_a_slot_that_needs_nothing():
    pool = BlockPool(6, 2)
    pool.allocate(1, 3)
    short = pool.grow_to(np.array([0, 1]), np.array([5, 3]))  # slot 0 cannot grow; slot 1 is done
    assert short.tolist() == [0]
    assert pool.held.tolist() == [0, 3]
    assert_invariant(pool)


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(0, 40),
    ops=st.lists(
        st.tuples(st.sampled_from(["alloc", "free", "grow"]), st.integers(0, 5), st.integers(0, 12)),
        max_size=30,
    ),
)
def test_invariant_under_random_operations(capacity, ops):
    pool = BlockPool(capacity, 6)
    for op, slot, n in ops:
        if op == "alloc":
            if pool.can_allocate(n):
                pool.allocate(slot, n)
            else:
                with pytest.raises(RuntimeError):
                    pool.allocate(slot, n)
        elif op == "free":
            before = int(pool.held[slot])
            assert pool.free(slot) == before
            assert pool.held[slot] == 0
        else:
            slots = np.array([slot, (slot + 1) % 6])
            needed = np.array([n, n // 2])
            before = pool.held[slots].copy()
            short = pool.grow_to(slots, needed)
            grown = ~np.isin(slots, short)
            assert np.all(pool.held[slots][grown] >= needed[grown])
            assert np.all(pool.held[slots][~grown] == before[~grown])
        assert_invariant(pool)
