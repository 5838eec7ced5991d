"""The vLLM side of the scheduler's mapping: vLLM's own ``Request`` and its front-door validator.

The mapping's logic runs on plain objects in tests/test_vllm_mapping_pure.py (no vLLM needed);
here a real ``Request`` (no engine needed to build one) must give the rows those plain objects
give, which pins the attribute names and meanings the mapping relies on.
"""

from __future__ import annotations

import numpy as np
import pytest

from andes.expectations import ExpectationRules
from andes.engines.vllm.mapping import RequestTrack, build_view, expectations_from_extra_args, request_rows

pytestmark = pytest.mark.vllm
vllm = pytest.importorskip("vllm")

from vllm import SamplingParams  # noqa: E402
from vllm.v1.request import Request  # noqa: E402

from test_vllm_mapping_pure import Params, PlainRequest  # noqa: E402

RULES = ExpectationRules()  # text 4.8 tokens/s, voice 3.3, ttft max(1, prompt/5000)


def make_request(rid: str, prompt_len: int, arrival: float, extra: dict | None = None) -> Request:
    params = SamplingParams(max_tokens=64, extra_args=extra)
    return Request(rid, prompt_token_ids=list(range(1, prompt_len + 1)), sampling_params=params,
                   pooling_params=None, arrival_time=arrival)


def test_a_vllm_request_reads_like_the_plain_one():
    a = make_request("a", 40, 10.0, {"ttft": 2.0, "tds": 5.0})
    b = make_request("b", 100, 11.0)
    c = make_request("c", 31, 12.0, {"service_class": "voice"})
    a.append_output_token_ids([7, 8, 9])
    a.num_computed_tokens = 42  # the last sampled token is not computed yet
    b.num_computed_tokens = 50
    b.num_preemptions = 2
    plain = [PlainRequest(40, 10.0, Params({"ttft": 2.0, "tds": 5.0}), num_output_tokens=3, num_computed_tokens=42),
             PlainRequest(100, 11.0, num_computed_tokens=50, num_preemptions=2),
             PlainRequest(31, 12.0, Params({"service_class": "voice"}))]
    tracks = []
    for r, p in zip((a, b, c), plain):
        ttft, tds = expectations_from_extra_args(r.sampling_params.extra_args, r.num_prompt_tokens, RULES)
        assert (ttft, tds) == expectations_from_extra_args(p.sampling_params.extra_args, p.num_prompt_tokens, RULES)
        tracks.append(RequestTrack(ttft, tds, r.arrival_time, last_change=r.arrival_time))
    tracks[0].on_tokens(3, 12.5)
    np.testing.assert_array_equal(request_rows([a, b, c], tracks), request_rows(plain, tracks))
    assert build_view([a, b, c], tracks, num_running=2, block_size=32).num_uncomputed.tolist() == [1, 50, 0]


def test_front_door_validator_names_the_field():
    from vllm.exceptions import VLLMValidationError

    from andes.engines.vllm.validation import AndesExpectations

    AndesExpectations.validate_params(SamplingParams(extra_args={"ttft": 1.5, "tds": 8, "service_class": "x"}))
    AndesExpectations.validate_params(SamplingParams())
    for extra, field in [({"tds": -1}, "tds"), ({"ttft": "soon"}, "ttft"), ({"service_class": ""}, "service_class")]:
        with pytest.raises(VLLMValidationError, match=f"^{field}:") as info:
            AndesExpectations.validate_params(SamplingParams(extra_args=extra))
        assert info.value.parameter == field
