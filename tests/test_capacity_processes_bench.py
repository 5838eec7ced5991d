"""The pure part of bench/capacity_processes.py: which run counts as the generator's limit."""

from andes.benchmarks.capacity_processes import highest_on_schedule


def _row(rate, on_schedule):
    return {"rate": rate, "on_schedule": on_schedule, "offered_rate": rate * 0.98}


def test_highest_on_schedule_stops_at_the_first_late_rate():
    rows = [_row(16, True), _row(8, True), _row(24, False), _row(32, True)]
    assert highest_on_schedule(rows)["rate"] == 16  # 32 kept schedule, but above a late rate


def test_highest_on_schedule_is_none_when_the_lowest_rate_was_late():
    assert highest_on_schedule([_row(8, False), _row(16, True)]) is None
    assert highest_on_schedule([]) is None
