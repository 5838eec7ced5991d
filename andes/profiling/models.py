"""Which model a profiler loads: the tiny local model or a model directory on this machine."""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ["model_dir"]


def model_dir(spec: str) -> Path:
    """The model directory for ``spec``: the tiny model (built once, locally) or a given path."""
    if spec == "tiny":
        from andes.models.tiny import build_tiny_model

        return build_tiny_model(Path(tempfile.gettempdir()) / "andes-tiny-model")
    path = Path(spec)
    if not (path / "config.json").is_file():
        raise ValueError(f"--model: {spec!r} is neither 'tiny' nor a model directory with a config.json")
    return path
