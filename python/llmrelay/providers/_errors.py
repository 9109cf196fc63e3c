"""Classify a provider's failure (HTTP status + body, or a transport exception) into the
typed errors of :mod:`llmrelay.errors`.

Messages are built from the provider's own error text (API keys scrubbed), the
deployment name, the model, the status and the request id, never from secrets.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import httpx
import msgspec

from llmrelay._wire import HeaderPairs, header, header_map
from llmrelay.errors import (
    AuthenticationError,
    ContentFilterError,
    ContextLengthError,
    DeadlineExceededError,
    ProviderError,
    ProviderResponseError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
)
from llmrelay.providers._ratelimit import parse_rate_limit_headers

__all__ = [
    "error_from_payload",
    "error_from_reply",
    "error_from_status",
    "error_from_transport",
    "request_id_of",
    "response_error",
    "transport_error",
]

_CONTEXT_WORDS = (
    "context_length_exceeded",
    "prompt is too long",
    "maximum context length",
    "context length",
    "context window",
    "too many tokens",
    "exceed_context_size",  # llama.cpp's server: "exceeds the available context size"
    "context size",
)
_FILTER_WORDS = (
    "content_filter",
    "content_policy",
    "content management policy",
    "safety system",
)
_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-*]{4,}|sk-ant-[A-Za-z0-9_\-*]{4,})")
_MAX_MESSAGE = 500


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The provider's request id (``x-request-id`` or ``request-id``), if sent."""
    return headers.get("x-request-id") or headers.get("request-id")


def scrub(text: str, secret: str | None) -> str:
    """Remove an API key (and anything shaped like one) from provider-supplied text."""
    if secret:
        text = text.replace(secret, "***")
    text = _KEYLIKE.sub("sk-***", text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _describe(payload: Any) -> tuple[str, str]:
    """(message, type-and-code words) of an error payload in any provider's shape."""
    if isinstance(payload, dict):
        err = payload.get("error", payload)
        if isinstance(err, str):
            return err, ""
        if isinstance(err, dict):
            message = err.get("message")
            kind = " ".join(str(err.get(k) or "") for k in ("type", "code"))
            return (message if isinstance(message, str) else ""), kind
    return "", ""


def _decode(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None


def error_from_payload(
    status: int | None,
    payload: Any,
    *,
    provider: str,
    model: str | None,
    headers: Mapping[str, str] | None = None,
    secret: str | None = None,
    fallback_text: str = "",
) -> ProviderError:
    """The typed error of a failed reply (``status`` None: an error event inside a stream)."""
    message, kind = _describe(payload)
    message = scrub(message or fallback_text.strip(), secret)
    words = f"{kind} {message}".lower()
    hdrs = headers if headers is not None else {}
    ctx: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "status_code": status,
        "request_id": request_id_of(hdrs),
    }
    label = message or (f"HTTP {status}" if status else "error event in the stream")
    in_stream = status is None
    if status == 429 or (in_stream and "rate_limit" in words):
        err = RateLimitError(label, retry_after=parse_rate_limit_headers(hdrs).retry_after_s, **ctx)
        if "insufficient_quota" in words:
            err.retryable = False  # out of credit: waiting will not help
        return err
    if status in (401, 403) or (in_stream and ("authentication" in words or "permission" in words)):
        return AuthenticationError(label, **ctx)
    if status == 408:
        return ProviderTimeoutError(label, **ctx)
    transient = "overloaded" in words or "server_error" in words or "api_error" in words
    if (status is not None and status >= 500) or (in_stream and transient):
        return ProviderUnavailableError(label, **ctx)
    if any(w in words for w in _CONTEXT_WORDS):
        return ContextLengthError(label, **ctx)
    if any(w in words for w in _FILTER_WORDS):
        return ContentFilterError(label, **ctx)
    if in_stream:
        return ProviderUnavailableError(label, **ctx)  # an unknown failure mid-stream
    return ProviderError(label, **ctx)


def error_from_reply(
    status: int,
    headers: HeaderPairs,
    body: bytes,
    provider: str,
    model: str | None,
    secret: str | None,
) -> ProviderError:
    """The typed error of an HTTP error reply, from its status, raw headers and body."""
    payload = _decode(body)
    text = "" if payload is not None else body[:200].decode("utf-8", "replace")
    return error_from_payload(
        status,
        payload,
        provider=provider,
        model=model,
        headers=header_map(headers),
        secret=secret,
        fallback_text=text,
    )


def error_from_status(
    resp: httpx.Response, provider: str, model: str | None, body: bytes, secret: str | None
) -> ProviderError:
    """The typed error of an httpx error reply (see :func:`error_from_reply`)."""
    pairs = [(k.lower(), v) for k, v in resp.headers.raw]
    return error_from_reply(resp.status_code, pairs, body, provider, model, secret)


def error_from_transport(
    exc: Exception, provider: str, model: str | None, secret: str | None = None
) -> ProviderError:
    """The typed error of an httpx exception raised while sending or reading."""
    return transport_error(type(exc), provider, model, scrub(str(exc), secret))


def transport_error(
    cls: type[Exception],
    provider: str,
    model: str | None,
    detail: str = "",
    *,
    deadline_cut: bool = False,
) -> ProviderError:
    """The one conversion of a transport failure, named by its httpx exception class
    (the core's client maps its failures to the same classes): a timeout is a
    ProviderTimeoutError, unless the read timer was the caller's own deadline
    (``deadline_cut``), which is the caller's DeadlineExceededError; a connection
    failure is a ProviderUnavailableError; anything else a ProviderResponseError.
    ``detail`` must already be scrubbed of secrets."""
    name = f"{cls.__name__}: {detail}" if detail else cls.__name__
    if issubclass(cls, httpx.TimeoutException):
        if deadline_cut and issubclass(cls, httpx.ReadTimeout):
            return DeadlineExceededError(
                "total timeout exceeded waiting for the reply", provider=provider, model=model
            )
        return ProviderTimeoutError(f"timed out: {name}", provider=provider, model=model)
    if issubclass(cls, httpx.TransportError | httpx.StreamError):
        return ProviderUnavailableError(f"transport error: {name}", provider=provider, model=model)
    return ProviderResponseError(name, provider=provider, model=model)


def response_error(
    text: str,
    provider: str,
    model: str | None,
    resp: httpx.Response | None = None,
    *,
    status: int | None = None,
    headers: HeaderPairs | None = None,
) -> ProviderResponseError:
    """A reply that breaks the wire protocol (from an httpx reply, or its status and
    raw headers)."""
    if resp is not None:
        status = resp.status_code
        request_id = request_id_of(resp.headers)
    elif headers is not None:
        request_id = header(headers, b"x-request-id") or header(headers, b"request-id")
    else:
        request_id = None
    return ProviderResponseError(
        text, provider=provider, model=model, status_code=status, request_id=request_id
    )
