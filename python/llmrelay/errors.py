"""The exceptions llmrelay raises.

Every failure a caller can see is one of these, so one ``except LLMRelayError``
catches them all, and each subclasses the matching stdlib class where one
exists, so existing ``except ValueError`` / ``except TimeoutError`` clauses keep
working::

    LLMRelayError
    ├── ConfigError (ValueError)             a bad setting, named with its value
    ├── InvalidRequestError (ValueError)     a bad call argument, named by field
    ├── ProviderError                        the provider answered with a failure
    │   ├── RateLimitError                   429; ``retry_after`` in seconds
    │   │   └── ClientThrottledError         the client-side limit had no room; not sent
    │   ├── AuthenticationError              401 / 403
    │   ├── ProviderTimeoutError (TimeoutError)
    │   │   └── DeadlineExceededError        the caller's own deadline cut the call
    │   ├── ProviderUnavailableError         5xx, 529, resets, streams cut short
    │   ├── ProviderResponseError            a reply that breaks the wire protocol
    │   ├── ContextLengthError               the prompt exceeds the model's window
    │   └── ContentFilterError               refused by the provider's filter
    ├── CircuitOpenError                     the deployment's breaker is open
    ├── QueueFullError                       the scheduler's queue is full
    ├── QueueTimeoutError (TimeoutError)     waited too long for a deployment's slot
    ├── CacheMissError                       replay mode found no cached answer; not sent
    ├── StructuredOutputError (ValueError)   the reply did not validate, repair included
    ├── BudgetExceededError                  a USD budget has no room for the call; not sent
    └── AllProvidersFailedError              every candidate failed; see ``attempts``

No exception carries an API key: messages are built from provider names,
models, status codes and request ids only.
"""

from __future__ import annotations

__all__ = [
    "AllProvidersFailedError",
    "Attempt",
    "AuthenticationError",
    "BudgetExceededError",
    "CacheMissError",
    "CircuitOpenError",
    "ClientThrottledError",
    "ConfigError",
    "ContentFilterError",
    "ContextLengthError",
    "DeadlineExceededError",
    "InvalidRequestError",
    "LLMRelayError",
    "ProviderError",
    "ProviderResponseError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "QueueFullError",
    "QueueTimeoutError",
    "RateLimitError",
    "StructuredOutputError",
]


class LLMRelayError(Exception):
    """Base class of every error llmrelay raises."""

    #: Whether retrying the same request may succeed.
    retryable: bool = False


class ConfigError(LLMRelayError, ValueError):
    """A configuration value is invalid; the message names the parameter and value.

    ``field`` is the path of the setting from the struct being built (or loaded),
    e.g. ``"providers[0].models"`` or ``"selection.fallbacks['openai/gpt-4o'][0]"``;
    None when the error is not about one setting (a missing file, no provider).
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidRequestError(LLMRelayError, ValueError):
    """A call's arguments are invalid; the message names the field."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ProviderError(LLMRelayError):
    """A provider answered with a failure (or did not answer at all)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        model: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.model = model
        self.status_code = status_code
        self.request_id = request_id

    def __str__(self) -> str:
        base = super().__str__()
        parts = [
            f"{name}={value}"
            for name, value in (
                ("provider", self.provider),
                ("model", self.model),
                ("status", self.status_code),
                ("request_id", self.request_id),
            )
            if value is not None
        ]
        return f"{base} ({', '.join(parts)})" if parts else base


class RateLimitError(ProviderError):
    """The provider refused for rate (HTTP 429); ``retry_after`` is in seconds if known."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ClientThrottledError(RateLimitError):
    """The client-side rate limit (configured, or learnt from the provider's headers) had
    no room within the time the call could wait; nothing was sent to the provider."""


class AuthenticationError(ProviderError):
    """The credential was rejected (HTTP 401 or 403)."""


class ProviderTimeoutError(ProviderError, TimeoutError):
    """The provider did not answer in time (connect, read, stream idle or total)."""

    retryable = True


class DeadlineExceededError(ProviderTimeoutError):
    """The call's own deadline (``timeout=`` or ``RequestTimeouts.total_s``) ran out.

    The deployment is not blamed: a deadline cut is ignored by its circuit breaker
    and its adaptive concurrency limit, and counted as ``failures.DeadlineExceeded``.
    """

    retryable = False


class ProviderUnavailableError(ProviderError):
    """The provider failed transiently: 5xx, 529 overloaded, reset, or a stream cut short."""

    retryable = True


class ProviderResponseError(ProviderError):
    """The provider's reply does not follow its wire protocol (bad JSON, wrong content type)."""

    retryable = True


class ContextLengthError(ProviderError):
    """The request does not fit the model's context window."""


class ContentFilterError(ProviderError):
    """The provider's content filter refused the request or the answer."""


class CircuitOpenError(LLMRelayError):
    """The deployment's circuit breaker is open; calls fail fast until it half-opens."""

    retryable = True

    def __init__(
        self, message: str, *, deployment: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.deployment = deployment
        self.retry_after = retry_after


class QueueFullError(LLMRelayError):
    """The scheduler's queue is at capacity; the request was refused at once."""

    retryable = True

    def __init__(self, message: str, *, capacity: int | None = None) -> None:
        super().__init__(message)
        self.capacity = capacity


class QueueTimeoutError(LLMRelayError, TimeoutError):
    """The call waited for a slot of a deployment as long as it could afford.

    With other candidates left the wait is bounded by a share of the time left
    (``OrchestratorConfig.fallback_wait_share``) and the call moves on; nothing was sent.
    """

    retryable = True

    def __init__(self, message: str, *, deployment: str | None = None) -> None:
        super().__init__(message)
        self.deployment = deployment


class CacheMissError(LLMRelayError):
    """``replay`` cache mode found no stored answer, so nothing was sent to a provider.

    ``model`` is the model asked; ``reason`` says why there was no answer: ``"miss"``
    (looked up, not found), ``"not_cacheable"`` (temperature > 0 with no seed and no
    sample), ``"changed"`` (a middleware changed the request) or ``"disabled"`` (the
    service has no cache).
    """

    def __init__(self, message: str, *, model: str | None = None, reason: str = "miss") -> None:
        super().__init__(message)
        self.model = model
        self.reason = reason


class StructuredOutputError(LLMRelayError, ValueError):
    """A call made with ``response_format=Model`` got a reply that does not validate,
    after its one repair attempt (a stream: at its end; a stream is not repaired).

    ``raw`` is the last reply's text (the JSON it gave, or whatever it wrote);
    ``validation_error`` says what is wrong with it; ``response`` is that reply
    (a streamed call: None).
    """

    def __init__(
        self,
        message: str,
        *,
        raw: str,
        validation_error: str,
        response: object | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(message)
        self.raw = raw
        self.validation_error = validation_error
        self.response = response
        self.model = model


class BudgetExceededError(LLMRelayError):
    """A USD budget (a deployment's, or a ``with_options`` view's) has no room for the call,
    so nothing was sent. Not retried, and not a failure of the deployment.

    ``budget`` names it (``"deployment:<name>"`` or ``"view"``); ``limit_usd`` is its
    limit, ``spent_usd`` what its period has spent, ``needed_usd`` the call's reservation
    (the most it can cost); ``retry_after`` the seconds until its period restarts, or
    None when it never does.
    """

    def __init__(
        self,
        message: str,
        *,
        budget: str,
        limit_usd: float,
        spent_usd: float,
        needed_usd: float,
        retry_after: float | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(message)
        self.budget = budget
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.needed_usd = needed_usd
        self.retry_after = retry_after
        self.model = model


class Attempt:
    """One try of a request: where it went and how it failed."""

    __slots__ = ("error", "model", "provider")

    def __init__(self, provider: str, model: str, error: LLMRelayError) -> None:
        self.provider = provider
        self.model = model
        self.error = error

    def __repr__(self) -> str:
        return f"Attempt(provider={self.provider!r}, model={self.model!r}, error={self.error!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Attempt):
            return NotImplemented
        return (self.provider, self.model, self.error) == (other.provider, other.model, other.error)

    def __hash__(self) -> int:
        return hash((self.provider, self.model, id(self.error)))


class AllProvidersFailedError(LLMRelayError):
    """Every candidate deployment failed; ``attempts`` lists what was tried, in order."""

    def __init__(self, message: str, *, attempts: list[Attempt] | None = None) -> None:
        self.attempts: list[Attempt] = list(attempts or [])
        detail = "; ".join(
            f"{a.provider}/{a.model}: {type(a.error).__name__}: {a.error}" for a in self.attempts
        )
        super().__init__(f"{message}: {detail}" if detail else message)

    @property
    def last_error(self) -> LLMRelayError | None:
        """The error of the final attempt, if any attempt was made."""
        return self.attempts[-1].error if self.attempts else None
