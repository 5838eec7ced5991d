"""The pure half of the vLLM scheduler, without vLLM: expectations, settings, the policy view.

``andes.engines.vllm.mapping`` and ``settings`` import no vLLM, so these run with the core
install. Requests here are plain objects with the attributes the mapping reads;
tests/vllm/test_vllm_mapping.py checks that vLLM's own ``Request`` gives the same rows.
"""

from __future__ import annotations

import importlib
import importlib.abc
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from andes.config import ConfigError
from andes.expectations import ExpectationRules
from andes.engines.vllm.mapping import (RequestTrack, build_view, expectations_from_extra_args, request_rows,
                                        view_from_rows)
from andes.engines.vllm.settings import SchedulerSettings, settings_from
from andes.qoe import qoe

RULES = ExpectationRules()  # text 4.8 tokens/s, voice 3.3, ttft max(1, prompt/5000)


@dataclass
class Params:
    extra_args: dict[str, Any] | None = None


@dataclass
class PlainRequest:
    """What the mapping reads of a vLLM ``Request`` (its module docstring lists the fields)."""

    num_prompt_tokens: int
    arrival_time: float
    sampling_params: Params = field(default_factory=Params)
    num_output_tokens: int = 0
    num_computed_tokens: int = 0
    num_preemptions: int = 0

    @property
    def num_tokens(self) -> int:
        return self.num_prompt_tokens + self.num_output_tokens


def track_of(r: PlainRequest) -> RequestTrack:
    ttft, tds = expectations_from_extra_args(r.sampling_params.extra_args, r.num_prompt_tokens, RULES)
    return RequestTrack(ttft, tds, r.arrival_time, last_change=r.arrival_time)


def test_expectations_per_request_then_service_class_then_default():
    assert expectations_from_extra_args({"ttft": 2.5, "tds": 7}, 10, RULES) == (2.5, 7.0)
    assert expectations_from_extra_args({"service_class": "voice"}, 10, RULES) == (1.0, 3.3)
    assert expectations_from_extra_args(None, 10, RULES) == (1.0, 4.8)
    assert expectations_from_extra_args({}, 20_000, RULES) == (4.0, 4.8)  # long prompt: 20k/5000 s
    assert expectations_from_extra_args({"service_class": "voice", "tds": 9.0}, 10, RULES) == (1.0, 9.0)
    # Keys that belong to other vLLM features pass through untouched.
    assert expectations_from_extra_args({"kv_transfer_params": {}}, 10, RULES) == (1.0, 4.8)


@pytest.mark.parametrize("extra, field", [
    ({"ttft": 0}, "ttft"), ({"ttft": -1.0}, "ttft"), ({"ttft": math.inf}, "ttft"), ({"ttft": "1"}, "ttft"),
    ({"ttft": True}, "ttft"), ({"ttft": None}, "ttft"), ({"tds": 0}, "tds"), ({"tds": 1e9}, "tds"),
    ({"tds": math.nan}, "tds"),
    ({"service_class": "nope"}, "service_class"), ({"service_class": 3}, "service_class"),
])
def test_bad_expectations_name_the_field(extra, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        expectations_from_extra_args(extra, 10, RULES)


def test_track_digest_matches_reference_qoe():
    track = RequestTrack(ttft=1.0, tds=4.0, arrival=100.0, last_change=100.0)
    times = [100.5, 100.6, 100.7, 102.5, 102.6, 103.9]
    for t in times:
        track.on_tokens(1, t)
    assert track.digest.num_tokens == len(times)
    assert track.digest.qoe() == pytest.approx(qoe(np.array(times) - 100.0, 1.0, 4.0))
    assert track.last_change == 100.5  # the first token of the segment
    track.on_preempted(104.0, by_policy=True)
    track.on_tokens(2, 105.0)
    assert (track.last_change, track.num_policy_preemptions, track.digest.num_tokens) == (105.0, 1, 8)


def test_view_of_running_and_waiting_requests():
    # ``a`` has produced 3 tokens (all computed but the last sampled one); ``b`` is half-way
    # through its prefill and was preempted twice; ``c`` waits.
    a = PlainRequest(40, 10.0, Params({"ttft": 2.0, "tds": 5.0}), num_output_tokens=3, num_computed_tokens=42)
    b = PlainRequest(100, 11.0, num_computed_tokens=50, num_preemptions=2)
    c = PlainRequest(31, 12.0, Params({"service_class": "voice"}))
    tracks = [track_of(r) for r in (a, b, c)]
    for t in (12.5, 12.6, 12.7):
        tracks[0].on_tokens(1, t)
    view = build_view([a, b, c], tracks, num_running=2, block_size=32)
    assert view.is_running.tolist() == [True, True, False]
    assert view.ttft.tolist() == [2.0, 1.0, 1.0] and view.tds.tolist() == [5.0, 4.8, 3.3]
    assert view.arrival.tolist() == [10.0, 11.0, 12.0]
    assert view.num_prompt_tokens.tolist() == [40, 100, 31]
    assert view.num_output_tokens.tolist() == [3, 0, 0]
    # Blocks to run one more step: context + 1 token, in 32-token blocks.
    assert view.num_blocks.tolist() == [2, 4, 1]
    assert view.num_uncomputed.tolist() == [1, 50, 0]  # waiting requests: 0 by convention
    assert view.num_preemptions.tolist() == [0, 2, 0]
    assert view.last_digest[0] == pytest.approx(tracks[0].digest.last_digest)
    assert np.isneginf(view.last_digest[1:]).all()  # no token yet
    assert np.isnan(view.remaining_tokens).all()
    assert len(build_view([], [], 0, 32)) == 0


def test_view_from_row_blocks_equals_view_of_all():
    reqs = [PlainRequest(10 + 7 * i, float(i)) for i in range(5)]
    tracks = [RequestTrack(1.0, 4.8, r.arrival_time, last_change=r.arrival_time) for r in reqs]
    tracks[1].on_tokens(2, 3.0)
    whole = build_view(reqs, tracks, 2, 16)
    rows = np.concatenate([request_rows(reqs[:2], tracks[:2]), request_rows(reqs[2:], tracks[2:])])
    parts = view_from_rows(rows, 2, 16)
    for name in ("is_running", "arrival", "num_blocks", "last_digest", "num_output_tokens", "num_uncomputed"):
        np.testing.assert_array_equal(getattr(parts, name), getattr(whole, name))


def test_settings_from_additional_config_then_environment(tmp_path):
    s = settings_from({"andes": {"policy": {"name": "fcfs"}, "online_refit": False}}, env={"ANDES_POLICY": "lqf"})
    assert (s.policy.name, s.online_refit) == ("fcfs", False)  # additional_config wins
    assert settings_from({}, env={"ANDES_POLICY": "lqf"}).policy.name == "lqf"
    path = tmp_path / "andes.json"
    path.write_text(json.dumps({"policy": {"name": "andes", "andes": {"horizon_s": 5}}}))
    s = settings_from(None, env={"ANDES_CONFIG": str(path), "ANDES_POLICY": "andes"})
    assert s.policy.andes.horizon_s == 5
    assert settings_from({}, env={}) == SchedulerSettings()


def test_settings_carry_their_own_service_classes():
    s = settings_from({"andes": {"default_service_class": "fast",
                                 "service_classes": {"fast": {"tds": 12, "ttft": 0.3}}}}, env={})
    rules = s.expectations_config()
    assert expectations_from_extra_args(None, 10, rules) == (0.3, 12.0)
    with pytest.raises(ValueError, match="^service_class:"):
        expectations_from_extra_args({"service_class": "text"}, 10, rules)
    assert SchedulerSettings().expectations_config().expectations(None, 10) == (1.0, 4.8)


@pytest.mark.parametrize("extra, env, path", [
    ({"andes": {"polcy": {}}}, {}, "additional_config.andes.polcy"),
    ({"andes": {"policy": {"name": "sjf"}}}, {}, "additional_config.andes.policy.name"),
    ({"andes": {"profile": "no-such-profile"}}, {}, "no-such-profile"),
    ({"andes": {"default_service_class": "chat"}}, {}, "default_service_class"),
    ({"andes": {"service_classes": {"text": {"tds": -1}}}}, {}, "additional_config.andes.service_classes.text.tds"),
    ({"andes": {"policy": {"andes": {"horizon_s": 0}}}}, {}, "additional_config.andes.policy.andes.horizon_s"),
    ({}, {"ANDES_CONFIG": "{not json"}, "ANDES_CONFIG"),
    ({}, {"ANDES_POLICY": "sjf"}, "ANDES_CONFIG.policy.name"),
])
def test_bad_settings_name_the_field(extra, env, path):
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        settings_from(extra, env=env)


BLOCKED = ("vllm", "torch")  # the 'cpu' extra


class Blocker(importlib.abc.MetaPathFinder):
    """Fails every import of a ``BLOCKED`` package, as on an install without them."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by this test)", name=name)
        return None


@pytest.mark.parametrize("module", ["andes.engines.vllm.mapping", "andes.engines.vllm.rows",
                                    "andes.engines.vllm.settings"])
def test_imports_with_vllm_and_torch_blocked(monkeypatch, module):
    """A fresh import of the module with vLLM and torch gone from sys.modules and unimportable."""
    package = importlib.import_module("andes.engines.vllm")
    loaded = importlib.import_module(module)  # this file imported it already, vLLM or not
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED or name == module:
            monkeypatch.delitem(sys.modules, name)  # restored after the test
    monkeypatch.delattr(package, module.rsplit(".", 1)[1], raising=False)
    monkeypatch.setattr(sys, "meta_path", [Blocker(), *sys.meta_path])
    with pytest.raises(ModuleNotFoundError, match="blocked"):
        importlib.import_module("vllm")  # the blocker works
    fresh = importlib.import_module(module)
    assert fresh is not loaded and fresh.__all__ == loaded.__all__  # executed again, under the blocker
    assert not [name for name in sys.modules if name.split(".")[0] in BLOCKED]


def test_a_reader_change_reaches_the_view_as_in_the_simulator():
    a = PlainRequest(num_prompt_tokens=10, arrival_time=100.0, num_output_tokens=6)
    b = PlainRequest(num_prompt_tokens=10, arrival_time=100.0, num_output_tokens=6)
    tracks = [track_of(a), track_of(b)]
    for track in tracks:
        track.on_tokens(6, 100.5)  # six tokens at once: read from 100.5 s at 4.8 tokens/s
    before = build_view([a, b], tracks, 2, 16)
    assert before.num_digest_tokens is before.num_output_tokens  # no reader changed: no segments
    assert tracks[0].change_reader(101.0, None, True)  # paused after reading 3 of them
    view = build_view([a, b], tracks, 2, 16)
    assert view.num_output_tokens.tolist() == [6, 6]  # the context is unchanged
    assert view.num_digest_tokens.tolist() == [3, 6]  # the paused segment holds the 3 unread
    assert view.ttft[0] > 1e5 and view.ttft[1] == tracks[1].ttft
