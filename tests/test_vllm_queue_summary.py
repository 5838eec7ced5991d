"""``QueueTotals``: the totals the vLLM scheduler hands ``Policy.can_skip``, without vLLM.

The waiting queue's fewest tokens is carried from step to step and only arrivals are read; it
must never exceed the true minimum (``can_skip`` relies on a lower bound)."""

from __future__ import annotations

from types import SimpleNamespace

from andes.engines.vllm.queue_summary import QueueTotals


def reqs(*tokens: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(num_tokens=t) for t in tokens]


def test_running_blocks_and_the_waiting_minimum_by_block():
    run, wait = reqs(31, 32, 100), reqs(70, 63, 64)
    s = QueueTotals().summary(run, wait, block_size=32)
    # next-step blocks: ceil((tokens + 1) / 32)
    assert (s.num_running, s.num_waiting, s.running_blocks, s.min_waiting_blocks) == (3, 3, 1 + 2 + 4, 2)


def test_arrivals_lower_the_minimum_and_a_changed_queue_is_read_again():
    totals = QueueTotals()
    wait = reqs(200, 150)
    assert totals.summary([], wait, 32).min_waiting_blocks == 5  # 151 tokens
    wait += reqs(40)  # an arrival at the tail with fewer tokens
    assert totals.summary([], wait, 32).min_waiting_blocks == 2
    wait.pop()  # it was admitted (or aborted): the minimum may rise again
    assert totals.summary([], wait, 32).min_waiting_blocks == 5
    # A request admitted from the head and one preempted to it: read in full.
    wait = reqs(500) + wait[1:]
    assert totals.summary([], wait, 32).min_waiting_blocks == 5
    assert totals.summary([], wait[:1], 32).min_waiting_blocks == 16


def test_a_queued_request_that_grew_keeps_a_lower_bound():
    totals = QueueTotals()
    wait = reqs(10, 300)
    assert totals.summary([], wait, 32).min_waiting_blocks == 1
    wait[0].num_tokens = 100  # its context grew in place (streamed input): still a bound
    assert totals.summary([], wait, 32).min_waiting_blocks <= 4


def test_the_watch_holds_a_queue_changed_only_by_reported_arrivals():
    from andes.engines.vllm.skip import QueueWatch

    queue = reqs(100, 90, 80)
    watch = QueueWatch()
    assert not watch.holds(queue)  # nothing known yet
    watch.start(queue, 80)
    assert watch.holds(queue)
    new = SimpleNamespace(num_tokens=10)
    held = watch.holds(queue)
    queue.append(new)
    watch.arrived(queue, new, schedulable=True, held_before=held)
    assert watch.holds(queue) and (watch.length, watch.min_tokens) == (4, 10)
    # An insertion it was not told of, at either end, or a removal: no longer held.
    for changed in (reqs(5) + queue, queue + reqs(5), queue[1:], queue[:-1]):
        assert not watch.holds(changed)
    # The same length with another request at the tail (one left, one came unreported).
    assert not watch.holds(queue[:-1] + reqs(10))
    # An arrival after an unreported change, or one that is not schedulable, ends it.
    other = reqs(5)[0]
    queue.insert(0, other)
    late = SimpleNamespace(num_tokens=50)
    held = watch.holds(queue)
    queue.append(late)
    watch.arrived(queue, late, schedulable=True, held_before=held)
    assert not watch.holds(queue)
    watch.start(queue, 5)
    odd = SimpleNamespace(num_tokens=50)
    queue.append(odd)
    watch.arrived(queue, odd, schedulable=False, held_before=True)
    assert not watch.holds(queue)
    watch.start([], 0)
    assert not watch.holds([])  # an empty queue is never held
