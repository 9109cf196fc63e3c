"""Configuration structs (msgspec, frozen, unknown fields rejected).

Every struct validates itself in ``__post_init__``, so a bad value raises
:class:`~llmrelay.errors.ConfigError` naming the parameter and the value whether
the struct is built in code, from a dict, from TOML or from the environment. Its
``field`` is the path of the setting below the struct being built
(``providers[0].models``, ``selection.fallbacks['openai/gpt-4o'][0]``).
"""

from __future__ import annotations

import functools
import math
import os
import re
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec

from llmrelay.errors import ConfigError

__all__ = [
    "BudgetConfig",
    "CacheConfig",
    "CircuitBreakerConfig",
    "DedupConfig",
    "LLMServiceConfig",
    "ModelPrice",
    "ModelSelectionStrategy",
    "OrchestratorConfig",
    "ProviderConfig",
    "RateLimitConfig",
    "RequestTimeouts",
    "SharedStateConfig",
    "TelemetryConfig",
]

_S = TypeVar("_S", bound="_Config")

_SENSITIVE_HEADER = re.compile(r"auth|key|token|secret|cookie|session|password", re.I)

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
    """Raise ConfigError (``field=name``) unless ``value`` is None or a finite number in bounds."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ConfigError(f"invalid {name}={value!r}: must be a number", field=name)
    if math.isinf(value):
        raise ConfigError(f"invalid {name}={value!r}: must be finite", field=name)
    for ok, rule in (
        (gt is None or value > gt, f"> {gt}"),
        (ge is None or value >= ge, f">= {ge}"),
        (le is None or value <= le, f"<= {le}"),
        (lt is None or value < lt, f"< {lt}"),
    ):
        if not ok:
            raise ConfigError(f"invalid {name}={value!r}: must be {rule}", field=name)


class _Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Shared loading helpers of every config struct.

    ``__post_init__`` first checks every field against its declared type (msgspec
    checks types only when decoding, and users build configs in code): a mapping
    given for a nested struct is converted into it, a wrong type raises
    ConfigError. Then the struct's own ``_validate`` checks bounds and rules.
    """

    def __post_init__(self) -> None:
        self._coerce_fields()
        self._validate()

    def _validate(self) -> None:
        """Checks beyond the field types (bounds, cross-field rules); structs override it."""
        return None

    def _coerce_fields(self) -> None:
        for name, typ in _field_types(type(self)):
            value = getattr(self, name)
            conv = _coerce(value, typ, name, type(self).__name__)
            if conv is not value:
                msgspec.structs.force_setattr(self, name, conv)

    @classmethod
    def from_dict(cls: type[_S], data: Mapping[str, Any]) -> _S:
        """Build from a plain dict (as from JSON or TOML); errors name the field path."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"invalid config: expected a mapping, got {type(data).__name__}")
        try:
            return msgspec.convert(dict(data), cls, strict=False)
        except msgspec.ValidationError as e:
            raise _config_error(e, "", data, cls.__name__) from None

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


@functools.cache
def _field_types(cls: type[_Config]) -> tuple[tuple[str, Any], ...]:
    return tuple((f.name, f.type) for f in msgspec.structs.fields(cls))


def _coerce(value: Any, typ: Any, path: str, owner: str) -> Any:
    """``value`` as ``typ`` (a mapping becomes the nested struct); ConfigError naming ``path``.

    A ``dict[str, X]`` is walked key by key so that an error names the key
    (msgspec's own paths show dict keys as ``[...]``).
    """
    if typing.get_origin(typ) is dict and isinstance(value, Mapping):
        _, item_type = typing.get_args(typ)
        out: dict[str, Any] = {}
        for k, v in value.items():
            where = f"{path}[{k!r}]"
            if not isinstance(k, str):
                raise ConfigError(f"invalid {owner}.{where}: keys must be str", field=where)
            out[k] = _coerce(v, item_type, where, owner)
        return value if out == value and isinstance(value, dict) else out
    try:
        return msgspec.convert(value, typ, strict=True)
    except msgspec.ValidationError as e:
        raise _config_error(e, path, value, owner, typ=typ) from None


def _join(prefix: str, rest: str | None) -> str:
    """Join two parts of a field path: ``providers[0]`` + ``models``, ``providers`` + ``[0]``."""
    if not rest:
        return prefix
    if not prefix:
        return rest
    return prefix + rest if rest.startswith("[") else f"{prefix}.{rest}"


def _config_error(
    err: msgspec.ValidationError, prefix: str, data: Any, owner: str, *, typ: Any = None
) -> ConfigError:
    """msgspec's error as a ConfigError whose ``field`` is the full path below ``owner``.

    ``data`` is what was converted (the path resolves in it to show the bad value);
    an error raised by a nested struct's ``__post_init__`` keeps that struct's field.
    """
    msg = str(err)
    path = ""
    marker = " - at `$"
    if marker in msg:
        msg, _, tail = msg.rpartition(marker)
        path = tail.rstrip("`").removeprefix(".")
    inner = err.__cause__
    if isinstance(inner, ConfigError):
        field = _join(_join(prefix, path), inner.field)
        return ConfigError(f"invalid {owner}: {inner} (at {field})", field=field or None)
    got = re.search(r"got `(\w+)`", msg)
    path, found, value = _value_at(data, path, got.group(1) if got else None)
    field = _join(prefix, path)
    unknown = re.search(r"unknown field `([^`]+)`", msg)
    if unknown:
        field = _join(field, unknown.group(1))
    detail = msg
    if typ is not None and "Invalid enum value" in msg:
        detail = f"{msg}: expected one of {_literals(typ)}"
    if found and not _secret(field) and not isinstance(value, Mapping | list):
        detail = f"{detail} (value {value!r})"
        if isinstance(value, str) and "Expected `array`" in msg:
            detail += f": give a list, e.g. [{value!r}]"
    where = f" at {field}" if field else ""
    return ConfigError(f"invalid {owner}{where}: {detail}", field=field or None)


def _literals(typ: Any) -> tuple[Any, ...]:
    args = typing.get_args(typ)
    if typing.get_origin(typ) is Literal:
        return args
    return tuple(a for t in args for a in _literals(t))


def _secret(field: str) -> bool:
    """Whether the value at ``field`` may be a secret (never shown in an error)."""
    return field.endswith("api_key") or "headers" in field


_JSON_TYPES = ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (list, "array"))


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for t, name in _JSON_TYPES:
        if isinstance(value, t):
            return name
    return "object" if isinstance(value, Mapping) else type(value).__name__


def _value_at(data: Any, path: str, got: str | None = None) -> tuple[str, bool, Any]:
    """Resolve a msgspec path (``providers[0].models``) in ``data``: (path, found, value).

    msgspec writes a dict key as ``[...]``: the key is recovered as the first one
    whose value resolves the rest of the path to a value of the type msgspec
    reported (``got``), and the returned path names it.
    """
    pieces = re.findall(r"\[[^\]]*\]|[^.\[]+", path)
    parts = [p.strip("[]") for p in pieces]

    def walk(value: Any, i: int) -> tuple[str, bool, Any]:
        if i == len(parts):
            ok = got is None or _json_type(value) == got
            return "", ok, value
        part, piece = parts[i], pieces[i]
        sep = "" if piece.startswith("[") else "."
        try:
            if part == "...":
                if not isinstance(value, Mapping):
                    return "", False, None
                for k, v in value.items():
                    rest, ok, found = walk(v, i + 1)
                    if ok:
                        return f"[{k!r}]{rest}", True, found
                return "", False, None
            sub = value[int(part)] if isinstance(value, list | tuple) else value[part]
        except (KeyError, IndexError, ValueError, TypeError):
            return "", False, None
        rest, ok, found = walk(sub, i + 1)
        return (f"{sep}{piece}{rest}" if ok else ""), ok, found

    resolved, found, value = walk(data, 0)
    if not found:
        return path, False, None
    return resolved.removeprefix("."), True, value


class RateLimitConfig(_Config, frozen=True):
    """Client-side limits of one deployment; ``burst`` is how many requests may go at once."""

    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    input_tokens_per_minute: float | None = None
    output_tokens_per_minute: float | None = None
    burst: float | None = None

    def _validate(self) -> None:
        _num("requests_per_minute", self.requests_per_minute, gt=0)
        _num("tokens_per_minute", self.tokens_per_minute, gt=0)
        _num("input_tokens_per_minute", self.input_tokens_per_minute, gt=0)
        _num("output_tokens_per_minute", self.output_tokens_per_minute, gt=0)
        _num("burst", self.burst, ge=1)


class BudgetConfig(_Config, frozen=True):
    """A USD budget: at most ``limit_usd`` spent per ``period_s`` seconds (fixed windows
    from the first call; None: over the budget's whole life).

    Each call reserves the most it can cost (its prompt estimate and output limit at
    the model's price) before it is sent, and the reservation is settled to the real
    cost when it ends; a call that does not fit raises ``BudgetExceededError``.
    """

    limit_usd: float
    period_s: float | None = None

    def _validate(self) -> None:
        _num("limit_usd", self.limit_usd, ge=0)
        _num("period_s", self.period_s, gt=0)


class ModelPrice(_Config, frozen=True):
    """A model's price in USD per million tokens: ``input`` (uncached prompt),
    ``cached_input`` (read from the provider's prompt cache), ``cache_write``
    (written to it), ``output`` (completion, reasoning included). An unknown cached
    rate is None: a call that used the cache then has no cost rather than a guess."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None

    def _validate(self) -> None:
        for name in ("input", "output", "cached_input", "cache_write"):
            _num(name, getattr(self, name), ge=0)


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

    def _validate(self) -> None:
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
    #: A stream that has handed nothing to the caller and yields no content (text, tool
    #: call, finish) within this is retried or falls back like a failed plain call. Two
    #: minutes by default: a reasoning model's first token can take a minute or more.
    first_token_s: float = 120.0

    def _validate(self) -> None:
        for name in (
            "connect_s",
            "read_s",
            "write_s",
            "pool_s",
            "total_s",
            "stream_idle_s",
            "first_token_s",
        ):
            _num(name, getattr(self, name), gt=0)


class ProviderConfig(_Config, frozen=True):
    """One deployment: a provider kind at a base URL with a credential.

    ``api_key`` never shows in ``repr``; prefer ``api_key_env`` (read at service
    start; unset is a ConfigError then). Without ``base_url`` the kind's variable
    (``OPENAI_BASE_URL``, ``ANTHROPIC_BASE_URL``, ``OLLAMA_HOST``) is used when
    set, else the registry's default URL.
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
    #: the deployment's USD budget (None: no limit)
    budget: BudgetConfig | None = None

    def _validate(self) -> None:
        if not self.name or "/" in self.name:
            raise ConfigError(
                f"invalid name={self.name!r}: must be non-empty and without '/'", field="name"
            )
        for fname in ("kind", "api_key_env", "default_model"):
            value = getattr(self, fname)
            if value is not None and not value.strip():
                raise ConfigError(
                    f"invalid {fname}={value!r} for provider {self.name!r}: must be non-empty",
                    field=fname,
                )
        for i, model in enumerate(self.models):
            if not model.strip():
                raise ConfigError(
                    f"invalid models[{i}]={model!r} for provider {self.name!r}: "
                    "must be a non-empty model name",
                    field=f"models[{i}]",
                )
        _num("max_concurrency", self.max_concurrency, ge=1)
        _num("weight", self.weight, gt=0)
        if self.base_url is not None and not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"invalid base_url={self.base_url!r} for provider {self.name!r}: "
                "must start with http:// or https://",
                field="base_url",
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
        if self.headers:  # a custom gateway's credential may travel in a header
            shown["headers"] = {
                k: "***" if _SENSITIVE_HEADER.search(k) else v for k, v in self.headers.items()
            }
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

    def _validate(self) -> None:
        _num("max_concurrency", self.max_concurrency, ge=1)
        _num("max_queue_size", self.max_queue_size, ge=0)
        _num("min_concurrency", self.min_concurrency, ge=1)
        if self.min_concurrency > self.max_concurrency:
            raise ConfigError(
                f"invalid min_concurrency={self.min_concurrency}: "
                f"must be <= max_concurrency={self.max_concurrency}",
                field="min_concurrency",
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
    #: The default of ``CacheControl.mode``: ``read_write`` (look up and store),
    #: ``read_only``, ``write_only`` or ``replay`` (never call a provider; a miss raises
    #: CacheMissError).
    mode: Literal["read_write", "read_only", "write_only", "replay"] = "read_write"
    #: Store empty replies and replies cut by ``finish_reason == "length"`` too.
    cache_incomplete: bool = False

    def _validate(self) -> None:
        if self.mode == "replay" and not self.enabled:
            raise ConfigError(
                "invalid mode='replay' with enabled=False: replay answers only from the cache",
                field="mode",
            )
        _num("memory_max_entries", self.memory_max_entries, ge=1)
        _num("memory_max_bytes", self.memory_max_bytes, ge=1)
        _num("disk_max_bytes", self.disk_max_bytes, ge=1)
        _num("ttl_s", self.ttl_s, gt=0)
        _num("promote_after", self.promote_after, ge=1)
        _num("flush_every_ms", self.flush_every_ms, ge=1)


class DedupConfig(_Config, frozen=True):
    """In-flight joining of identical requests, plus an optional window after completion."""

    enabled: bool = True
    window_s: float = 0.0

    def _validate(self) -> None:
        _num("window_s", self.window_s, ge=0)


class TelemetryConfig(_Config, frozen=True):
    """Traces, metrics and logs of each call (see :mod:`llmrelay.events`).

    ``otel``: a span per call and per attempt, and the GenAI client metrics, through
    the OpenTelemetry API's global providers (needs ``pip install llmrelay[otel]``).
    ``capture_content``: the prompt and the reply on the call's span
    (``gen_ai.input.messages``, ``gen_ai.output.messages``); off by default.
    ``log_content``: the prompt and the reply in the ``llmrelay`` log lines; off by default.
    """

    otel: bool = False
    capture_content: bool = False
    log_content: bool = False


_CAPABILITIES = ("tools", "vision", "json_mode", "streaming")


_REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+unix")


class SharedStateConfig(_Config, frozen=True):
    """State shared by every process of a deployment, on Redis (or Valkey).

    ``url`` is ``redis://[user:password@]host[:port][/db]``, ``rediss://`` (TLS: the
    server's certificate is checked against the system's roots, or the CA bundle named
    by ``SSL_CERT_FILE``) or ``unix:///path/to/redis.sock``; its password never shows
    in ``repr``.
    ``mode="exact"`` checks every admission in Redis (one Lua script);
    ``"leased"`` admits locally from slices each process leases of the cells
    (booked in Redis first, so the cluster never admits above the limit); a
    slice lives ``lease_ttl_s`` (0.01..60 s), which bounds the over-admission of
    any window ``W`` by ``rate x lease_ttl_s`` (a share ``lease_ttl_s / W``), and
    what is left of it goes back when it expires or the service closes.
    ``on_unavailable`` says what a limit check does when Redis does not answer
    within ``op_timeout_s``: ``"local_share"`` enforces the limit x 0.9 / live
    processes in each process (and charges what it admitted back into the
    cluster's cells when Redis answers again), ``"closed"`` refuses, ``"open"``
    admits. The switches pick which state is shared. ``dedup_lease_s`` is the TTL of a
    cross-process dedup leader's lease (renewed every third of it while its call
    runs): a leader that dies is taken over within about that long.

    ``cluster=True`` says ``url`` is a Redis Cluster: one seed or several, comma
    separated (``"redis://10.0.0.1:7000,10.0.0.2:7000"``; a seed after the first may
    be a bare ``host:port``, which takes the first's scheme and credentials). Seeds
    are TCP (``redis://`` or ``rediss://``), on db 0; the client finds the other
    masters from any seed that answers.
    """

    url: str
    cluster: bool = False
    namespace: str = "llmrelay"
    mode: Literal["exact", "leased"] = "exact"
    on_unavailable: Literal["local_share", "closed", "open"] = "local_share"
    op_timeout_s: float = 0.025
    limits: bool = True
    cache: bool = True
    breakers: bool = True
    dedup: bool = True
    dedup_lease_s: float = 3.0
    lease_ttl_s: float = 1.0

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{f}={getattr(self, f)!r}"
            for f in ("namespace", "mode", "on_unavailable", "op_timeout_s")
        )
        cluster = "cluster=True, " if self.cluster else ""
        return f"SharedStateConfig(url={redact_url(self.url)!r}, {cluster}{fields})"

    def _validate(self) -> None:
        _num("op_timeout_s", self.op_timeout_s, gt=0, le=10)
        _num("dedup_lease_s", self.dedup_lease_s, ge=0.05, le=3600)
        _num("lease_ttl_s", self.lease_ttl_s, ge=0.01, le=60)
        url = self.url
        if self.cluster:
            url = cluster_seeds(self.url)[0]
        elif "," in self.url:
            raise ConfigError(
                f"invalid url={redact_url(self.url)!r}: several seeds need cluster=True",
                field="url",
            )
        bad = ConfigError(
            f"invalid url={redact_url(self.url)!r}: must be a redis://, rediss:// or unix:// URL",
            field="url",
        )
        try:
            parts = urlsplit(url.strip())
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            raise bad from None
        if parts.scheme not in _REDIS_SCHEMES:
            raise bad
        if parts.scheme in ("unix", "redis+unix") and not parts.path:
            raise bad
        if parts.scheme in ("redis", "rediss") and not parts.hostname:
            raise bad
        if (
            not self.namespace
            or any(c in self.namespace for c in "{}")
            or not (self.namespace.isprintable() and " " not in self.namespace)
        ):
            raise ConfigError(
                f"invalid namespace={self.namespace!r}: must be non-empty, printable, "
                "without spaces or braces",
                field="namespace",
            )


def cluster_seeds(url: str) -> list[str]:
    """The seed URLs of a Redis Cluster ``url`` (comma separated; a seed after the
    first may be ``host:port``, taking the first's scheme and credentials).

    ConfigError (field ``url``, password hidden) when a seed is not a TCP Redis URL
    on db 0, or the seeds differ in scheme or credentials.
    """
    items = [item.strip() for item in url.split(",")]
    first = items[0]
    seeds: list[str] = []
    base: tuple[str, str | None, str | None] | None = None
    for i, item in enumerate(items):

        def bad(why: str, item: str = item, i: int = i) -> ConfigError:
            return ConfigError(
                f"invalid url={redact_url(url)!r}: cluster seed {i} ({redact_url(item)!r}) {why}",
                field="url",
            )

        if not item:
            raise bad("is empty")
        if "://" not in item:
            if i == 0:
                raise bad("must be a redis:// or rediss:// URL")
            scheme, _, rest = first.partition("://")
            creds, at, _ = rest.split("/", 1)[0].rpartition("@")
            item = f"{scheme}://{creds}{at}{item}"
        try:
            parts = urlsplit(item)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            raise bad("has a port that is not a number") from None
        if parts.scheme not in ("redis", "rediss"):
            raise bad("must be TCP: redis:// or rediss:// (a cluster has no unix sockets)")
        if not parts.hostname:
            raise bad("has no host")
        if parts.path.strip("/") not in ("", "0"):
            raise bad("names a db other than 0 (a Redis Cluster has only db 0)")
        if parts.query or parts.fragment:
            raise bad("has a query or fragment")
        this = (parts.scheme, parts.username, parts.password)
        if base is None:
            base = this
        elif this != base:
            raise bad("differs from seed 0 in scheme, user or password")
        seeds.append(item)
    return seeds


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (each seed of a list on its own)."""
    if "," in url:
        return ",".join(redact_url(part) for part in url.split(","))
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at:
        return url
    user, colon, _ = creds.partition(":")
    return (
        f"{scheme}://{user}{':***' if colon else ''}@{host}" if user else f"{scheme}://***@{host}"
    )


class ModelSelectionStrategy(_Config, frozen=True):
    """How candidates are ordered, and where a request goes when its model fails."""

    strategy: Literal["priority", "latency", "least_busy", "weighted", "cost"] = "priority"
    fallbacks: dict[str, list[str]] = {}
    required_capabilities: list[str] = []
    cross_provider: bool = True

    def _validate(self) -> None:
        for i, cap in enumerate(self.required_capabilities):
            if cap not in _CAPABILITIES:
                raise ConfigError(
                    f"invalid required_capabilities entry {cap!r}: expected one of {_CAPABILITIES}",
                    field=f"required_capabilities[{i}]",
                )
        for model, targets in self.fallbacks.items():
            _nonempty_model(model, f"fallbacks[{model!r}]")
            for i, target in enumerate(targets):
                _nonempty_model(target, f"fallbacks[{model!r}][{i}]")

    def model_names(self) -> Iterator[tuple[str, str]]:
        """Every model name the fallbacks mention, with its field path (keys, then targets)."""
        for model, targets in self.fallbacks.items():
            yield f"fallbacks[{model!r}]", model
            for i, target in enumerate(targets):
                yield f"fallbacks[{model!r}][{i}]", target


def _nonempty_model(name: str, field: str) -> None:
    if not name.strip() or name.startswith("/") or name.endswith("/"):
        raise ConfigError(
            f"invalid {field}={name!r}: must be a model name ('<model>' or '<provider>/<model>')",
            field=field,
        )


def base_url_from_env(var: str, value: str, default_base_url: str) -> str:
    """The base URL a ``*_BASE_URL`` / ``OLLAMA_HOST`` variable gives.

    A value without a scheme (``OLLAMA_HOST=0.0.0.0:11434``, as the ollama CLI
    takes it) gets ``http://``, and the default URL's port when it names none.
    ConfigError names the variable when the value is not an http(s) URL.
    """
    bad = ConfigError(f"invalid {var}={value!r}: must be an http:// or https:// URL", field=var)
    url = value.strip()
    try:
        if url and "://" not in url:
            hostport, slash, rest = url.partition("/")
            default = urlsplit(default_base_url)
            if default.scheme == "http" and default.port and urlsplit(f"//{hostport}").port is None:
                hostport = f"{hostport}:{default.port}"
            url = f"http://{hostport}{slash}{rest}"
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise bad from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise bad
    url = url.rstrip("/")
    return url


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
    #: State shared across processes on Redis (None: every process on its own).
    shared: SharedStateConfig | None = None
    #: OpenTelemetry and log content settings (nothing is traced by default)
    telemetry: TelemetryConfig = TelemetryConfig()
    namespace: str = ""
    #: A deployment's HTTP client unused this long is closed (rebuilt on next use).
    client_idle_timeout_s: float = 300.0
    #: Short names for models (``{"fast": "groq/llama-3.1-8b-instant"}``), usable
    #: wherever a model is named: calls, ``default_model``, fallbacks.
    aliases: dict[str, str] = {}
    #: Prices over the bundled table: ``"<deployment or kind>/<model>"``, ``"<model>"``
    #: or ``"<deployment or kind>/*"`` -> ModelPrice (see ``llmrelay._pricing``).
    pricing: dict[str, ModelPrice] = {}

    def _validate(self) -> None:
        _num("client_idle_timeout_s", self.client_idle_timeout_s, gt=0)
        self._check_aliases()
        seen: set[str] = set()
        for i, p in enumerate(self.providers):
            if p.name in seen:
                raise ConfigError(
                    f"invalid providers: duplicate name={p.name!r}", field=f"providers[{i}].name"
                )
            seen.add(p.name)
        for field, name in self.model_names():
            self._check_deployment(field, name)

    def model_names(self) -> Iterator[tuple[str, str]]:
        """``default_model``, every fallback model name and every alias's target, each
        with its field path (an alias named here is given as its target)."""
        if self.default_model is not None:
            yield "default_model", self.aliases.get(self.default_model, self.default_model)
        for field, name in self.selection.model_names():
            yield f"selection.{field}", self.aliases.get(name, name)
        for alias, target in self.aliases.items():
            yield f"aliases[{alias!r}]", target

    def _check_aliases(self) -> None:
        """An alias is a plain name (no ``/``: that is a deployment's) for a model name
        that is not itself an alias (aliases take one step)."""
        names = {p.name for p in self.providers}
        for alias, target in self.aliases.items():
            field = f"aliases[{alias!r}]"
            if not alias.strip() or "/" in alias or alias != alias.strip():
                raise ConfigError(
                    f"invalid alias name {alias!r}: must be a non-empty name without '/' or "
                    "surrounding spaces ('<provider>/<model>' names a deployment's model)",
                    field=field,
                )
            if alias in names:
                raise ConfigError(
                    f"invalid alias name {alias!r}: a provider has that name", field=field
                )
            _nonempty_model(target, field)
            if target in self.aliases:
                raise ConfigError(
                    f"invalid {field}={target!r}: it names another alias; an alias names "
                    "a model ('<provider>/<model>' or a listed model name)",
                    field=field,
                )

    def _check_deployment(self, field: str, name: str) -> None:
        """A ``provider/model`` name must start with a provider's name (or be a listed model).

        A bare model name is checked against the registry when the service starts
        (a plug-in kind may register after the config is built).
        """
        if field == "default_model":
            _nonempty_model(name, field)
        head, sep, _ = name.partition("/")
        if not sep or any(p.name == head for p in self.providers):
            return
        if any(name in p.models for p in self.providers):
            return  # a model whose own name has a '/' (``meta-llama/Llama-3.1-8B``)
        names = [p.name for p in self.providers]
        raise ConfigError(
            f"invalid {field}={name!r}: no provider is named {head!r} (providers: {names}); "
            f"name a model '<provider>/<model>', or list {name!r} in a provider's models",
            field=field,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LLMServiceConfig:
        """From ``LLMRELAY_CONFIG`` (a TOML file), else from provider variables.

        ``OPENAI_API_KEY`` (+ ``OPENAI_BASE_URL``), ``ANTHROPIC_API_KEY``
        (+ ``ANTHROPIC_BASE_URL``) and ``OLLAMA_HOST`` each add a provider, in
        that order. ``LLMRELAY_DEFAULT_MODEL`` and ``LLMRELAY_CACHE_DIR`` fill
        ``default_model`` and ``cache.disk_path`` where the file sets none;
        ``LLMRELAY_REDIS_URL`` fills ``shared`` (with its defaults) likewise.
        Raises ConfigError naming the variables to set when no provider is given.
        """
        env = os.environ if environ is None else environ
        path = env.get("LLMRELAY_CONFIG")
        cfg = cls.from_toml(path) if path else cls(providers=_env_providers(env))
        default = env.get("LLMRELAY_DEFAULT_MODEL") or None
        if default and cfg.default_model is None:
            try:
                cfg = msgspec.structs.replace(cfg, default_model=default)
            except ConfigError as e:
                raise ConfigError(f"{e} (from LLMRELAY_DEFAULT_MODEL)", field=e.field) from None
        cache_dir = env.get("LLMRELAY_CACHE_DIR") or None
        if cache_dir and cfg.cache.disk_path is None:
            cache = msgspec.structs.replace(cfg.cache, disk_path=cache_dir)
            cfg = msgspec.structs.replace(cfg, cache=cache)
        redis_url = env.get("LLMRELAY_REDIS_URL") or None
        if redis_url and cfg.shared is None:
            try:
                cfg = msgspec.structs.replace(cfg, shared=SharedStateConfig(url=redis_url))
            except ConfigError as e:
                raise ConfigError(
                    f"{e} (from LLMRELAY_REDIS_URL)", field="LLMRELAY_REDIS_URL"
                ) from None
        return cfg


def _env_providers(env: Mapping[str, str]) -> list[ProviderConfig]:
    providers: list[ProviderConfig] = []
    for kind, (key_env, url_env) in _ENV_KINDS.items():
        if env.get(key_env):
            url = env.get(url_env)
            providers.append(
                ProviderConfig(
                    name=kind,
                    api_key_env=key_env,
                    base_url=base_url_from_env(url_env, url, "https://") if url else None,
                )
            )
    host = env.get("OLLAMA_HOST")
    if host:
        url = base_url_from_env("OLLAMA_HOST", host, "http://127.0.0.1:11434")
        providers.append(ProviderConfig(name="ollama", base_url=url))
    if not providers:
        raise ConfigError(
            "no provider configured: set LLMRELAY_CONFIG to a TOML file, or one of "
            "OPENAI_API_KEY, ANTHROPIC_API_KEY, OLLAMA_HOST, or call llmrelay.configure(config)"
        )
    return providers
