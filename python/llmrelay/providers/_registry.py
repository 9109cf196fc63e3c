"""The provider registry: built-in kinds, explicit registrations and entry-point plug-ins.

A third-party package registers a kind by exposing, in the entry-point group
``llmrelay.providers``, a :class:`ProviderRegistration` or a callable returning
one. Plug-ins are discovered lazily, once; a broken one is skipped with a logged
warning.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import msgspec

from llmrelay._config import base_url_from_env
from llmrelay.errors import ConfigError

if TYPE_CHECKING:
    from llmrelay.providers._base import ProviderAdapter

__all__ = [
    "ENTRY_POINT_GROUP",
    "ModelInfo",
    "ProviderRegistration",
    "capabilities",
    "get_provider",
    "knows_model",
    "list_providers",
    "register_provider",
]

ENTRY_POINT_GROUP = "llmrelay.providers"
_log = logging.getLogger("llmrelay.providers")


class ModelInfo(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """What a model can do; None means unknown (not "no").

    Prices are US dollars per million tokens.
    """

    tools: bool | None = None
    vision: bool | None = None
    json_mode: bool | None = None
    #: takes a JSON schema natively (OpenAI ``json_schema``; Anthropic and Ollama always)
    json_schema: bool | None = None
    streaming: bool | None = None
    embeddings: bool | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    input_price_per_mtok: float | None = None
    output_price_per_mtok: float | None = None


UNKNOWN_MODEL = ModelInfo()


class ProviderRegistration(msgspec.Struct, kw_only=True, frozen=True):
    """A provider kind: how to build its adapter and what its models can do."""

    kind: str
    adapter_factory: Callable[..., ProviderAdapter]
    default_base_url: str
    api_key_env: str | None = None
    base_url_env: str | None = None
    default_model: str | None = None
    models: dict[str, ModelInfo] = {}
    requires_api_key: bool = True

    def resolve_base_url(self, environ: Mapping[str, str] | None = None) -> str:
        """The base URL of a deployment that sets no ``base_url``.

        The ``base_url_env`` variable when it is set and non-empty (as the
        provider's SDK reads it), else ``default_base_url``; ConfigError naming
        the variable when its value is not an http(s) URL.
        """
        env = os.environ if environ is None else environ
        value = env.get(self.base_url_env) if self.base_url_env else None
        if self.base_url_env and value:
            return base_url_from_env(self.base_url_env, value, self.default_base_url)
        return self.default_base_url


_lock = threading.Lock()
_registry: dict[str, ProviderRegistration] = {}
_started = False  # discovery began (re-entrant calls return at once)
_done = False  # discovery finished
_discover_lock = threading.RLock()


def register_provider(reg: ProviderRegistration, *, replace: bool = False) -> None:
    """Add a provider kind; an existing kind needs ``replace=True`` (else ConfigError)."""
    if not isinstance(reg, ProviderRegistration):
        raise ConfigError(f"reg={reg!r}: expected a ProviderRegistration")
    if not isinstance(reg.kind, str) or not reg.kind or "/" in reg.kind:
        raise ConfigError(f"kind={reg.kind!r}: expected a non-empty name without '/'", field="kind")
    if not callable(reg.adapter_factory):
        raise ConfigError(
            f"adapter_factory={reg.adapter_factory!r}: expected a callable",
            field="adapter_factory",
        )
    with _lock:
        if reg.kind in _registry and not replace:
            raise ConfigError(
                f"kind={reg.kind!r}: a provider of this kind is already registered "
                "(pass replace=True to override it)",
                field="kind",
            )
        _registry[reg.kind] = reg


def unregister_provider(kind: str) -> None:
    """Remove a kind (tests and plug-in development); unknown kinds are ignored."""
    with _lock:
        _registry.pop(kind, None)


def _discover() -> None:
    global _started, _done
    if _done:
        return
    with _discover_lock:  # reentrant: a plug-in may call back into the registry
        if _started:
            return
        _started = True
        try:
            _load_plugins()
        finally:
            _done = True


def _load_plugins() -> None:
    try:
        from importlib.metadata import entry_points  # lazy: costs ~25 ms to import

        found = list(entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:  # a broken environment must not break llmrelay
        _log.warning("llmrelay: cannot list provider plug-ins: %s", exc)
        return
    for ep in found:
        try:
            obj: Any = ep.load()
            reg = obj if isinstance(obj, ProviderRegistration) else obj()
            if not isinstance(reg, ProviderRegistration):
                raise TypeError(f"{ep.value} gave {type(reg).__name__}, not ProviderRegistration")
            register_provider(reg)
        except Exception as exc:
            _log.warning("llmrelay: skipping provider plug-in %r: %s", ep.name, exc)


def get_provider(kind: str) -> ProviderRegistration:
    """The registration of ``kind``; an unknown kind raises ConfigError listing the known ones."""
    reg = _registry.get(kind)
    if reg is not None:
        return reg
    _discover()
    reg = _registry.get(kind)
    if reg is None:
        raise ConfigError(
            f"kind={kind!r}: unknown provider kind (known: {', '.join(list_providers())})",
            field="kind",
        )
    return reg


def list_providers() -> list[str]:
    """The registered kinds, sorted (plug-ins included)."""
    _discover()
    return sorted(_registry)


def capabilities(kind: str, model: str) -> ModelInfo:
    """What ``model`` of ``kind`` can do; a model not listed gives an all-unknown ModelInfo.

    Looks up the exact name, then the name without an Ollama ``:tag``, then the
    longest listed name the model extends with ``-`` (dated snapshots such as
    ``gpt-4o-2024-08-06``).
    """
    models = get_provider(kind).models
    info = models.get(model)
    if info is not None:
        return info
    base = model.split(":", 1)[0]
    info = models.get(base)
    if info is not None:
        return info
    best = ""
    for name in models:
        if len(name) > len(best) and base.startswith(name + "-"):
            best = name
    return models[best] if best else UNKNOWN_MODEL


def knows_model(kind: str, model: str) -> bool:
    """Whether ``kind``'s registration lists ``model`` (exact name)."""
    return model in get_provider(kind).models


def _reset_discovery_for_tests() -> None:
    global _started, _done
    _started = _done = False
