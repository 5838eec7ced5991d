"""Tests for andes.expectations: bounds, defaults, service classes and how a request's values resolve."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from andes.expectations import (DEFAULT_SERVICE_CLASSES, MAX_TDS, MAX_TTFT_S, MIN_TDS, MIN_TTFT_S, ExpectationRules,
                                ServiceClass,
                                default_ttft, estimate_prompt_tokens, resolve_expectations,
                                validate_expectations)


def test_validate_accepts_the_edges_of_the_range():
    validate_expectations(1.0, 4.8)
    validate_expectations(MAX_TTFT_S, MAX_TDS)
    validate_expectations(MIN_TTFT_S, MIN_TDS)
    validate_expectations(1, 5)  # ints are numbers of seconds / tokens per second


@pytest.mark.parametrize("ttft, tds, field", [
    (0, 4.8, "ttft"), (-1.0, 4.8, "ttft"), (MAX_TTFT_S * 1.001, 4.8, "ttft"), (math.inf, 4.8, "ttft"),
    (math.nan, 4.8, "ttft"), ("1", 4.8, "ttft"), (None, 4.8, "ttft"), (True, 4.8, "ttft"),
    (1.0, 0.0, "tds"), (1.0, MAX_TDS + 1, "tds"), (1.0, math.nan, "tds"), (1.0, True, "tds"),
    (1.0, False, "tds"), (1.0, "fast", "tds"), (1e-300, 4.8, "ttft"), (MIN_TTFT_S * 0.999, 4.8, "ttft"),
    (1.0, 1e-300, "tds"), (1.0, MIN_TDS * 0.999, "tds"),
])
def test_validate_rejects_values_no_reader_has_naming_the_field(ttft, tds, field):
    with pytest.raises(ValueError, match=f"^{field}: ") as info:
        validate_expectations(ttft, tds)
    assert repr(ttft if field == "ttft" else tds) in str(info.value)


def test_an_absurd_magnitude_is_refused_with_the_bound():
    with pytest.raises(ValueError, match=r"^ttft: .* in \[0.001, 3600\] \(got 1e-300\)$"):
        validate_expectations(1e-300, 4.8)
    with pytest.raises(ValueError, match=r"^tds: .* in \[0.01, 1000\] \(got 1e-300\)$"):
        validate_expectations(1.0, 1e-300)


def test_default_ttft_is_one_second_or_prefill_bound_and_capped():
    assert default_ttft(1) == 1.0
    assert default_ttft(5000) == 1.0
    assert default_ttft(20_000) == 4.0
    assert default_ttft(10**12) == MAX_TTFT_S


@pytest.mark.parametrize("text, count", [("", 1), ("   ", 1), ("one", 1), ("a b\tc\nd", 4), ("w " * 300, 300)])
def test_prompt_tokens_are_whitespace_words_at_least_one(text, count):
    assert estimate_prompt_tokens(text) == count


def test_default_classes_text_and_voice():
    assert set(DEFAULT_SERVICE_CLASSES) == {"text", "voice"}
    assert DEFAULT_SERVICE_CLASSES["text"].tds == 4.8
    assert DEFAULT_SERVICE_CLASSES["voice"].tds == 3.3
    assert all(c.ttft is None for c in DEFAULT_SERVICE_CLASSES.values())
    # The text class's readers (for generated traces) are the published reading-pace mix.
    assert [round(tds, 3) for _, tds in DEFAULT_SERVICE_CLASSES["text"].readers()] == \
        [5.102, 4.348, 4.167, 4.016, 3.788]
    assert DEFAULT_SERVICE_CLASSES["voice"].readers() == ((1.0, 3.3),)


@pytest.mark.parametrize("data, field", [
    ({"tds": 0}, "tds"), ({"tds": MAX_TDS + 1}, "tds"), ({"tds": math.inf}, "tds"), ({"tds": True}, "tds"),
    ({"tds": "4.8"}, "tds"), ({}, "tds"), ({"tds": 4.8, "ttft": 0}, "ttft"),
    ({"tds": 4.8, "ttft": MAX_TTFT_S + 1}, "ttft"), ({"tds": 4.8, "ttft": True}, "ttft"),
    ({"tds": 4.8, "speed": 1}, "speed"), ({"tds": 4.8, "tds_mix": []}, "tds_mix"),
    ({"tds": 4.8, "tds_mix": [[1.0, 0.0]]}, "tds_mix.0.1"), ({"tds": 4.8, "tds_mix": [[-1.0, 4.0]]}, "tds_mix.0.0"),
])
def test_service_class_rejects_bad_values_naming_the_field(data, field):
    with pytest.raises(ValidationError) as info:
        ServiceClass.model_validate(data)
    assert field in {".".join(str(p) for p in e["loc"]) for e in info.value.errors()}


def test_service_class_mix_needs_some_share():
    with pytest.raises(ValidationError, match="tds_mix: shares must not all be 0"):
        ServiceClass(tds=4.8, tds_mix=((0.0, 4.0), (0.0, 5.0)))


def test_service_class_is_frozen():
    with pytest.raises(ValidationError):
        DEFAULT_SERVICE_CLASSES["voice"].tds = 9.0  # type: ignore[misc]


def test_resolve_uses_given_values_then_the_class():
    voice = DEFAULT_SERVICE_CLASSES["voice"]
    assert resolve_expectations(voice, 10) == (1.0, 3.3)
    assert resolve_expectations(voice, 20_000) == (4.0, 3.3)
    assert resolve_expectations(voice, 10, ttft=2) == (2.0, 3.3)
    assert resolve_expectations(voice, 10, tds=9) == (1.0, 9.0)
    assert resolve_expectations(ServiceClass(tds=6.0, ttft=0.5), 50_000) == (0.5, 6.0)
    assert all(type(v) is float for v in resolve_expectations(voice, 10, ttft=2, tds=9))
    with pytest.raises(ValueError, match="^tds: "):
        resolve_expectations(voice, 10, tds=True)


def test_rules_look_classes_up_by_name_and_default():
    rules = ExpectationRules()
    assert rules.expectations(None, 10) == (1.0, 4.8)
    assert rules.expectations("voice", 10) == (1.0, 3.3)
    assert rules.service_class(None) is rules.service_classes["text"]
    for bad in ("robot", "", 3):
        with pytest.raises(ValueError, match=r"^service_class: must be one of \['text', 'voice'\]"):
            rules.service_class(bad)  # type: ignore[arg-type]
    custom = ExpectationRules.model_validate(
        {"default_service_class": "fast", "service_classes": {"fast": {"tds": 10, "ttft": 0.2}}})
    assert custom.expectations(None, 10) == (0.2, 10.0)


def test_rules_need_their_default_class():
    with pytest.raises(ValidationError, match="default_service_class 'chat' is not one of service_classes"):
        ExpectationRules(default_service_class="chat")
