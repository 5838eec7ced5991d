"""Starting vLLM's ``AsyncLLM`` for ``VllmEngine``: checks, engine arguments, CPU cores, step hook.

What only a running engine could find out (no model directory, the wrong vLLM build) is
checked here first, so it fails as a ``ValueError`` naming the config field. The Andes
scheduler and its policy reach vLLM's engine-core process through the engine arguments
(``scheduler_cls`` and ``additional_config``); per-step counters come back through a stat
logger, which vLLM calls in this process once per engine step.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.metrics.loggers import StatLoggerBase

from andes.config import PolicyConfig, VllmSettings
from andes.engines.vllm.placement import available_cpus, cores_for, omp_bind

__all__ = ["SCHEDULER_CLASSES", "StepSink", "check_settings", "cpu_cores", "engine_args", "start_llm"]

SCHEDULER_CLASSES = {
    "andes": "andes.engines.vllm.control.AndesScheduler",
    "vllm": "andes.engines.vllm.control.VllmScheduler",
}

StepSink = Callable[[Any, Any], None]
"""Takes vLLM's ``(scheduler_stats, iteration_stats)`` of one engine step (either may be None)."""

_ENV_LOCK = threading.Lock()  # engines started from threads must not mix their environments


class _StepRecorder(StatLoggerBase):
    """vLLM calls ``record`` once per engine step in the caller's process; it feeds the engine."""

    def __init__(self, vllm_config: Any, engine_index: int = 0, *, sink: StepSink | None = None) -> None:
        self._sink = sink

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
        if self._sink is not None:
            self._sink(scheduler_stats, iteration_stats)

    def log_engine_initialized(self) -> None:
        pass


def check_settings(settings: VllmSettings) -> None:
    """Reject settings the installed vLLM cannot run, naming the field (``engine.vllm.model``)."""
    from vllm.platforms import current_platform

    device = "cpu" if current_platform.is_cpu() else "cuda" if current_platform.is_cuda() else "other"
    if device != settings.device:
        raise ValueError(f"engine.vllm.device: {settings.device!r}, but the installed vLLM build "
                         f"runs on {device!r} (install the matching extra, or change device)")
    model = Path(settings.model).expanduser()
    if not (model / "config.json").is_file():
        raise ValueError(f"engine.vllm.model: {settings.model!r} is not a local model directory "
                         "(no config.json); nothing is downloaded — build one with `andes model tiny DIR`")


def cpu_cores(settings: VllmSettings, placement: tuple[int, int] | None) -> list[int] | None:
    """The cores a CPU engine binds its threads to, by its rank on the node; ``None``: vLLM's choice.

    Only a placed replica (``placement``: rank, replicas) or one given ``cpu_threads`` binds.
    """
    if settings.device != "cpu" or (placement is None and settings.cpu_threads is None):
        return None
    rank, count = placement or (0, 1)
    return cores_for(rank, count, settings.cpu_threads, available_cpus())


def engine_args(settings: VllmSettings, policy: PolicyConfig, profile: str) -> AsyncEngineArgs:
    """vLLM's engine arguments for ``settings``, naming the scheduler and what it runs."""
    eager = settings.enforce_eager if settings.enforce_eager is not None else settings.device == "cpu"
    return AsyncEngineArgs(
        model=str(Path(settings.model).expanduser()),
        dtype=settings.dtype,
        seed=settings.seed,
        max_num_seqs=settings.max_num_seqs,
        max_model_len=settings.max_model_len,
        max_num_batched_tokens=settings.max_num_batched_tokens,
        kv_cache_memory_bytes=settings.kv_cache_bytes,
        gpu_memory_utilization=settings.gpu_memory_utilization,
        tensor_parallel_size=settings.tensor_parallel_size,
        stream_interval=settings.stream_interval,
        enforce_eager=eager,
        scheduler_cls=SCHEDULER_CLASSES[settings.scheduler],
        additional_config={"andes": {"policy": policy.model_dump(), "profile": profile}},
    )


def start_llm(args: AsyncEngineArgs, cores: list[int] | None, sink: StepSink) -> tuple[AsyncLLM, Any]:
    """vLLM's engine client and its resolved config; blocks until the engine processes are up.

    ``cores`` bind the engine processes' threads (they inherit the environment when vLLM
    spawns them); ``sink`` gets every engine step's stats.
    """

    def factory(vllm_config, engine_index=0):
        return _StepRecorder(vllm_config, engine_index, sink=sink)

    env = {"VLLM_CPU_OMP_THREADS_BIND": omp_bind(cores)} if cores else {}
    with _ENV_LOCK:
        _default_cache_root()
        with _environment(env):
            vllm_config = args.create_engine_config()
            # log_stats=False with a custom logger: per-step stats on, vLLM's console log off.
            llm = AsyncLLM(vllm_config, executor_class=_executor_class(vllm_config),
                           log_stats=False, stat_loggers=[factory], log_requests=False)
    return llm, vllm_config


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``env`` set inside the block, as it was after it."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _default_cache_root() -> None:
    """Keep vLLM's compile caches inside a source checkout (``.cache/vllm``), not in ``$HOME``."""
    if "VLLM_CACHE_ROOT" in os.environ:
        return
    root = Path(__file__).resolve().parents[3]
    if (root / "pyproject.toml").is_file():
        os.environ["VLLM_CACHE_ROOT"] = str(root / ".cache" / "vllm")


def _executor_class(vllm_config: Any) -> type:
    from vllm.v1.executor import Executor

    return Executor.get_class(vllm_config)
