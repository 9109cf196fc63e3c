"""The checks ``LLMService()`` runs on its config before it builds anything.

A config struct checks itself when it is built; what it cannot check alone
depends on the provider registry (a plug-in may register after the config is
built) or on the environment the service starts in:

- every provider's kind is registered;
- an ``api_key_env`` names a variable that is set;
- a kind's base-URL variable (``OPENAI_BASE_URL``, ``ANTHROPIC_BASE_URL``,
  ``OLLAMA_HOST``), where a provider without ``base_url`` takes it, is a URL, and
  a kind without a default URL (``azure``) has one;
- ``default_model`` and every fallback name a model a provider serves (by the
  selector's own rule, :func:`llmrelay._selection.route`).

Each failure is a ConfigError whose ``field`` is the path in the
:class:`~llmrelay.LLMServiceConfig`, raised before anything is sent.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from llmrelay._config import LLMServiceConfig
from llmrelay._selection import route
from llmrelay.errors import ConfigError, InvalidRequestError
from llmrelay.providers._registry import get_provider, knows_model

__all__ = ["check_service_config"]


def check_service_config(
    config: LLMServiceConfig, environ: Mapping[str, str] | None = None
) -> None:
    """Raise ConfigError (``field`` = the path) for the first mistake found."""
    env = os.environ if environ is None else environ
    for i, p in enumerate(config.providers):
        where = f"providers[{i}]"
        try:
            reg = get_provider(p.provider_kind)
        except ConfigError as e:
            field = f"{where}.kind" if p.kind else f"{where}.name"
            raise ConfigError(f"invalid {field}: {e}", field=field) from None
        if not p.api_key and p.api_key_env and not env.get(p.api_key_env):
            raise ConfigError(
                f"invalid {where}.api_key_env={p.api_key_env!r}: the environment variable "
                f"{p.api_key_env} is not set (provider {p.name!r}); set it, or give api_key",
                field=f"{where}.api_key_env",
            )
        if p.base_url is None:
            try:
                resolved = reg.resolve_base_url(env)
            except ConfigError as e:
                raise ConfigError(
                    f"invalid {where}.base_url, taken from the environment: {e}",
                    field=f"{where}.base_url",
                ) from None
            if not resolved:  # a kind with no default URL (azure: one per resource)
                hint = f" or set {reg.base_url_env}" if reg.base_url_env else ""
                raise ConfigError(
                    f"invalid {where}.base_url=None: kind {reg.kind!r} has no default URL; "
                    f"give base_url{hint} (provider {p.name!r})",
                    field=f"{where}.base_url",
                )
    for field, name in config.model_names():
        try:
            route(name, config.providers, knows_model)
        except InvalidRequestError as e:
            reason = str(e).split(": ", 1)[-1]
            raise ConfigError(
                f"invalid {field}={name!r}: {reason}; list it in a provider's models",
                field=field,
            ) from None
