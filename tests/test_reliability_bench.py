"""The soak and overload benchmarks, small: what they measure holds on a short run too."""

import json

import pytest

from andes.benchmarks import overload, soak

pytestmark = pytest.mark.subprocess  # each starts a server process


def test_soak_loses_repeats_and_reorders_no_token(tmp_path):
    out = tmp_path / "soak.json"
    assert soak.main(["--streams", "300", "--concurrency", "16", "--tokens", "12", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["streams"] == 300 and result["tokens"] == 300 * 12
    assert result["wrong_text_streams"] == result["misnumbered_streams"] == result["unterminated_streams"] == 0


def test_overload_with_admission_ends_every_accepted_stream_and_refuses_with_retry_after():
    result = overload.run(load=5.0, duration_s=4.0, admission=True, seed=1)
    assert result["num_accepted"] > 0 and result["num_rejected_429"] > 0
    assert result["num_unterminated"] == 0 and result["num_other_status"] == 0
    assert result["rejections_with_retry_after"] == result["num_rejected_429"]
    assert result["health_failures"] == 0
