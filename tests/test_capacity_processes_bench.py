"""The pure part of bench/capacity_processes.py: which run counts as the generator's limit."""

from andes.benchmarks.capacity_processes import highest_on_schedule


def _row(rate, on_schedule, client_qoe=1.0):
    return {"rate": rate, "on_schedule": on_schedule, "offered_rate": rate * 0.98,
            "client_qoe_mean": client_qoe, "server_qoe_mean": 1.0}


def test_highest_on_schedule_stops_at_the_first_late_rate():
    rows = [_row(16, True), _row(8, True), _row(24, False), _row(32, True)]
    assert highest_on_schedule(rows)["rate"] == 16  # 32 kept schedule, but above a late rate


def test_a_client_reading_late_has_not_kept_up_even_on_schedule():
    rows = [_row(8, True), _row(16, True, client_qoe=0.99), _row(24, True, client_qoe=0.95)]
    assert highest_on_schedule(rows)["rate"] == 16  # 0.01 below the gateway: kept up; 0.05: not


def test_highest_on_schedule_is_none_when_the_lowest_rate_was_late():
    assert highest_on_schedule([_row(8, False), _row(16, True)]) is None
    assert highest_on_schedule([]) is None


def test_summary_compares_the_two_process_counts():
    from andes.benchmarks.capacity_processes import Settings, summarise

    rows = [{"processes": 1, **_row(8, True)}, {"processes": 1, **_row(16, False)},
            {"processes": 2, **_row(16, True)}, {"processes": 2, **_row(32, False)}]
    result = summarise(rows, Settings())
    assert result["max_offered_kept_up"] == {"1": 8 * 0.98, "2": 16 * 0.98}
    assert result["ratio"] == 2.0 and result["target"]["met"] is True and not result["ratio_is_lower_bound"]
    assert result["generator_bound_reached"] == {"1": True, "2": True}
