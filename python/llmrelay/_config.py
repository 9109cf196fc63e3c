"""Configuration structs (msgspec, frozen, unknown fields rejected).

Every struct validates itself in ``__post_init__``, so a bad value raises
:class:`~llmrelay.errors.ConfigError` naming the parameter and the value whether
the struct is built in code, from a dict, from TOML or from the environment.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from llmrelay.errors import ConfigError

__all__ = [
    "CacheConfig",
    "CircuitBreakerConfig",
    "DedupConfig",
    "LLMServiceConfig",
    "ModelSelectionStrategy",
    "OrchestratorConfig",
    "ProviderConfig",
    "RateLimitConfig",
    "RequestTimeouts",
]

_S = TypeVar("_S", bound="_Config")

_ENV_KINDS = {
    "openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
    "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
}


def _num(
    name: str,
    value: float | None,
    *,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> None:
    """Raise ConfigError unless ``value`` is None or a finite number within the bounds."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(f"invalid {name}={value!r}: must be a number")
    if math.isinf(value):
        raise ConfigError(f"invalid {name}={value!r}: must be finite")
    if gt is not None and not value > gt:
        raise ConfigError(f"invalid {name}={value!r}: must be > {gt}")
    if ge is not None and not value >= ge:
        raise ConfigError(f"invalid {name}={value!r}: must be >= {ge}")
    if le is not None and not value <= le:
        raise ConfigError(f"invalid {name}={value!r}: must be <= {le}")
    if lt is not None and not value < lt:
        raise ConfigError(f"invalid {name}={value!r}: must be < {lt}")


class _Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Shared loading helpers of every config struct."""

    @classmethod
    def from_dict(cls: type[_S], data: Mapping[str, Any]) -> _S:
        """Build from a plain dict (as from JSON or TOML); errors name the field path."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"invalid config: expected a mapping, got {type(data).__name__}")
        try:
            return msgspec.convert(dict(data), cls, strict=False)
        except msgspec.ValidationError as e:
            raise ConfigError(f"invalid {cls.__name__}: {_describe(e, data)}") from None

    @classmethod
    def from_toml(cls: type[_S], path: str | os.PathLike[str]) -> _S:
        """Build from a TOML file."""
        import tomllib  # only when a file is read: keeps `import llmrelay` light

        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"invalid config path={str(p)!r}: file not found") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"invalid config path={str(p)!r}: {e}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (secrets included: never log the result)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out


def _describe(err: msgspec.ValidationError, data: Any) -> str:
    """msgspec's message, with the offending value appended when the path resolves."""
    msg = str(err)
    marker = " - at `$"
    if marker not in msg:
        return msg
    path = msg.rsplit(marker, 1)[1].rstrip("`")
    value: Any = data
    try:
        for part in path.replace("]", "").replace("[", ".").split("."):
            if not part:
                continue
            value = value[int(part)] if isinstance(value, list) else value[part]
    except (KeyError, IndexError, ValueError, TypeError):
        return msg
    if isinstance(value, Mapping | list):
        return msg
    name = "api_key" if path.endswith("api_key") else None
    return msg if name else f"{msg} (value {value!r})"


class RateLimitConfig(_Config, frozen=True):
    """Client-side limits of one deployment; ``burst`` is how many requests may go at once."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    input_tokens_per_minute: float | None = None
    output_tokens_per_minute: float | None = None
    burst: float | None = None

    def __post_init__(self) -> None:
        _num("requests_per_minute", self.requests_per_minute, gt=0)
        _num("tokens_per_minute", self.tokens_per_minute, gt=0)
        _num("input_tokens_per_minute", self.input_tokens_per_minute, gt=0)
        _num("output_tokens_per_minute", self.output_tokens_per_minute, gt=0)
        _num("burst", self.burst, ge=1)


class CircuitBreakerConfig(_Config, frozen=True):
    """A deployment's breaker (resilience4j semantics; see ``_core.CircuitBreaker``)."""

    failure_rate_threshold: float = 0.5
    minimum_calls: int = 10
    window_size: int = 20
    open_duration_s: float = 30.0
    half_open_max_calls: int = 1
    slow_call_threshold_s: float | None = None
    slow_call_rate_threshold: float = 1.0
    open_backoff_multiplier: float = 1.0
    max_open_duration_s: float = 300.0

    def __post_init__(self) -> None:
        _num("failure_rate_threshold", self.failure_rate_threshold, ge=0, le=1)
        _num("slow_call_rate_threshold", self.slow_call_rate_threshold, ge=0, le=1)
        _num("minimum_calls", self.minimum_calls, ge=1)
        _num("window_size", self.window_size, ge=1)
        _num("open_duration_s", self.open_duration_s, gt=0)
        _num("half_open_max_calls", self.half_open_max_calls, ge=1)
        _num("slow_call_threshold_s", self.slow_call_threshold_s, gt=0)
        _num("open_backoff_multiplier", self.open_backoff_multiplier, ge=1)
        _num("max_open_duration_s", self.max_open_duration_s, gt=0)


class RequestTimeouts(_Config, frozen=True):
    """Timeouts in seconds; ``total_s`` bounds a call end to end, retries and fallbacks included."""

    connect_s: float = 10.0
    read_s: float = 120.0
    write_s: float = 30.0
    pool_s: float = 30.0
    total_s: float = 300.0
    stream_idle_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("connect_s", "read_s", "write_s", "pool_s", "total_s", "stream_idle_s"):
            _num(name, getattr(self, name), gt=0)


class ProviderConfig(_Config, frozen=True):
    """One deployment: a provider kind at a base URL with a credential.

    ``api_key`` never shows in ``repr``; prefer ``api_key_env`` (read at service start).
    """

    name: str
    kind: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None
    models: list[str] = []
    rate_limit: RateLimitConfig | None = None
    max_concurrency: int | None = None
    weight: float = 1.0
    headers: dict[str, str] = {}
    timeouts: RequestTimeouts | None = None
    circuit_breaker: CircuitBreakerConfig | None = None
    default_model: str | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(f"invalid name={self.name!r}: must be non-empty and without '/'")
        _num("max_concurrency", self.max_concurrency, ge=1)
        _num("weight", self.weight, gt=0)
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"invalid base_url={self.base_url!r} for provider {self.name!r}: "
                "must start with http:// or https://"
            )

    @property
    def provider_kind(self) -> str:
        """The adapter kind (``kind``, defaulting to ``name``)."""
        return self.kind or self.name

    def resolve_api_key(self) -> str | None:
        """The key: ``api_key``, else the ``api_key_env`` variable, else the kind's default."""
        if self.api_key:
            return self.api_key
        env = self.api_key_env or _ENV_KINDS.get(self.provider_kind, (None, None))[0]
        return os.environ.get(env) if env else None

    def __repr__(self) -> str:
        shown = {
            f: getattr(self, f)
            for f in self.__struct_fields__
            if f != "api_key" and getattr(self, f) not in (None, [], {})
        }
        if self.api_key:
            shown["api_key"] = "***"
        inner = ", ".join(f"{k}={v!r}" for k, v in shown.items())
        return f"ProviderConfig({inner})"

    __str__ = __repr__


class OrchestratorConfig(_Config, frozen=True):
    """Scheduling, concurrency and retries shared by every deployment."""

    max_concurrency: int = 64
    max_queue_size: int = 10_000
    adaptive_concurrency: bool = True
    min_concurrency: int = 1
    max_retries: int = 3
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_budget_ratio: float = 0.2
    aging_s: float = 10.0
    #: With other candidates left (fallbacks, other deployments), the longest a call waits
    #: for one candidate's slot, client-side rate limit or retry backoff, as a share of the
    #: time it has left; then it moves on to the next candidate.
    fallback_wait_share: float = 0.25

    def __post_init__(self) -> None:
        _num("max_concurrency", self.max_concurrency, ge=1)
        _num("max_queue_size", self.max_queue_size, ge=0)
        _num("min_concurrency", self.min_concurrency, ge=1)
        if self.min_concurrency > self.max_concurrency:
            raise ConfigError(
                f"invalid min_concurrency={self.min_concurrency}: "
                f"must be <= max_concurrency={self.max_concurrency}"
            )
        _num("max_retries", self.max_retries, ge=0)
        _num("backoff_initial_s", self.backoff_initial_s, ge=0)
        _num("backoff_max_s", self.backoff_max_s, ge=0)
        _num("retry_budget_ratio", self.retry_budget_ratio, ge=0, le=1)
        _num("aging_s", self.aging_s, gt=0)
        _num("fallback_wait_share", self.fallback_wait_share, gt=0, le=1)


class CacheConfig(_Config, frozen=True):
    """The response cache: a memory tier over an optional disk tier."""

    enabled: bool = True
    memory_max_entries: int = 10_000
    memory_max_bytes: int | None = None
    disk_path: str | None = None
    disk_max_bytes: int | None = None
    ttl_s: float | None = None
    eviction: Literal["tinylfu", "lru"] = "tinylfu"
    promotion: Literal["on_hit", "after_n_hits"] = "on_hit"
    promote_after: int = 2
    write_mode: Literal["write_through", "write_behind"] = "write_through"
    #: How often the disk tier flushes to the file system (None: only on flush/close).
    flush_every_ms: int | None = 500
    cache_nondeterministic: bool = False

    def __post_init__(self) -> None:
        _num("memory_max_entries", self.memory_max_entries, ge=1)
        _num("memory_max_bytes", self.memory_max_bytes, ge=1)
        _num("disk_max_bytes", self.disk_max_bytes, ge=1)
        _num("ttl_s", self.ttl_s, gt=0)
        _num("promote_after", self.promote_after, ge=1)
        _num("flush_every_ms", self.flush_every_ms, ge=1)
        for name, allowed in (
            ("eviction", ("tinylfu", "lru")),
            ("promotion", ("on_hit", "after_n_hits")),
            ("write_mode", ("write_through", "write_behind")),
        ):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"invalid {name}={getattr(self, name)!r}: expected one of {allowed}"
                )


class DedupConfig(_Config, frozen=True):
    """In-flight joining of identical requests, plus an optional window after completion."""

    enabled: bool = True
    window_s: float = 0.0

    def __post_init__(self) -> None:
        _num("window_s", self.window_s, ge=0)


_STRATEGIES = ("priority", "latency", "least_busy", "weighted", "cost")
_CAPABILITIES = ("tools", "vision", "json_mode", "streaming")


class ModelSelectionStrategy(_Config, frozen=True):
    """How candidates are ordered, and where a request goes when its model fails."""

    strategy: Literal["priority", "latency", "least_busy", "weighted", "cost"] = "priority"
    fallbacks: dict[str, list[str]] = {}
    required_capabilities: list[str] = []
    cross_provider: bool = True

    def __post_init__(self) -> None:
        if self.strategy not in _STRATEGIES:
            raise ConfigError(f"invalid strategy={self.strategy!r}: expected one of {_STRATEGIES}")
        for cap in self.required_capabilities:
            if cap not in _CAPABILITIES:
                raise ConfigError(
                    f"invalid required_capabilities entry {cap!r}: expected one of {_CAPABILITIES}"
                )


class LLMServiceConfig(_Config, frozen=True):
    """Everything an :class:`~llmrelay.LLMService` needs."""

    providers: list[ProviderConfig] = []
    default_model: str | None = None
    orchestrator: OrchestratorConfig = OrchestratorConfig()
    cache: CacheConfig = CacheConfig()
    dedup: DedupConfig = DedupConfig()
    timeouts: RequestTimeouts = RequestTimeouts()
    selection: ModelSelectionStrategy = ModelSelectionStrategy()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    namespace: str = ""
    #: A deployment's HTTP client unused this long is closed (rebuilt on next use).
    client_idle_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        _num("client_idle_timeout_s", self.client_idle_timeout_s, gt=0)
        seen: set[str] = set()
        for p in self.providers:
            if p.name in seen:
                raise ConfigError(f"invalid providers: duplicate name={p.name!r}")
            seen.add(p.name)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LLMServiceConfig:
        """From ``LLMRELAY_CONFIG`` (a TOML file), else from provider variables.

        ``OPENAI_API_KEY`` (+ ``OPENAI_BASE_URL``), ``ANTHROPIC_API_KEY``
        (+ ``ANTHROPIC_BASE_URL``) and ``OLLAMA_HOST`` each add a provider.
        Raises ConfigError naming the variables to set when none is present.
        """
        env = os.environ if environ is None else environ
        path = env.get("LLMRELAY_CONFIG")
        if path:
            return cls.from_toml(path)
        providers: list[ProviderConfig] = []
        for kind, (key_env, url_env) in _ENV_KINDS.items():
            if env.get(key_env):
                providers.append(
                    ProviderConfig(
                        name=kind, api_key_env=key_env, base_url=env.get(url_env) or None
                    )
                )
        host = env.get("OLLAMA_HOST")
        if host:
            url = host if host.startswith(("http://", "https://")) else f"http://{host}"
            providers.append(ProviderConfig(name="ollama", base_url=url))
        if not providers:
            raise ConfigError(
                "no provider configured: set LLMRELAY_CONFIG to a TOML file, or one of "
                "OPENAI_API_KEY, ANTHROPIC_API_KEY, OLLAMA_HOST, or call llmrelay.configure(config)"
            )
        default = env.get("LLMRELAY_DEFAULT_MODEL") or None
        return cls(providers=providers, default_model=default)
