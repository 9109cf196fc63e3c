"""The Anthropic Messages wire protocol: JSON and the full SSE event sequence, models.

Like the real API, ``POST /v1/messages`` requires an ``x-api-key`` (401
``authentication_error``) and an ``anthropic-version`` header and ``max_tokens`` (400
``invalid_request_error``). Streams send ``message_start``, per block ``content_block_start``
/ ``content_block_delta`` (``text_delta`` or ``input_json_delta``) / ``content_block_stop``,
a ``ping``, ``message_delta`` with the stop reason and usage, then ``message_stop``. Errors
are ``{"type": "error", "error": {"type", "message"}, "request_id"}``; overload is 529.

Extended thinking: with ``thinking`` enabled the answer starts with a ``thinking``
block (the scripted ``reasoning``, else ``"Thinking about: <last user text>"``)
signed by the fake, or a ``redacted_thinking`` block; streamed as
``thinking_delta`` and ``signature_delta``. As the real API does, a request with
thinking enabled whose last assistant turn uses tools but lost its thinking
block, or carries a block whose signature was altered, is refused with a 400.
Prompt caching is emulated: the prefix up to the last ``cache_control``
breakpoint is written to the cache the first time (``cache_creation_input_tokens``)
and read from it afterwards (``cache_read_input_tokens``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any, ClassVar

from llmrelay.testing._dialect import (
    Dialect,
    ErrorKind,
    Exchange,
    Handler,
    content_text,
    encode,
    sse,
)
from llmrelay.testing._ratelimit import RateLimitInfo
from llmrelay.testing._script import ChatPlan, estimate_tokens, json_pieces, text_pieces

__all__ = ["AnthropicDialect"]

_ERRORS: dict[str, tuple[int, str, str]] = {
    "invalid_request": (400, "invalid_request_error", "Invalid request."),
    "auth": (401, "authentication_error", "invalid x-api-key"),
    "permission": (403, "permission_error", "Your API key does not have permission."),
    "not_found": (404, "not_found_error", "Not found"),
    "method_not_allowed": (405, "invalid_request_error", "Method not allowed"),
    "rate_limit": (429, "rate_limit_error", "Number of requests has exceeded your rate limit."),
    "server_error": (500, "api_error", "Internal server error"),
    "unavailable": (503, "api_error", "Service unavailable"),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "context_length": (400, "invalid_request_error", ""),
}
_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_PING = sse(b'{"type": "ping"}', "ping")
_STOP_EVENT = sse(b'{"type":"message_stop"}', "message_stop")


def _usage(input_tokens: int, output_tokens: int, read: int = 0, write: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "service_tier": "standard",
    }


def _sign(key: bytes, text: str) -> str:
    return base64.b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).decode()


def _thinking_on(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def _blocks_of(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return content if isinstance(content, list) else []


def _cache_prefix(body: dict[str, Any]) -> tuple[str, int] | None:
    """(hash, tokens) of the prompt up to its last ``cache_control`` breakpoint, if any."""
    parts: list[Any] = []
    tokens = 0
    last: tuple[str, int] | None = None
    system = body.get("system")
    seq: list[Any] = list(body.get("tools") or ())
    seq += _blocks_of(system) if system is not None else []
    for m in body.get("messages") or ():
        if isinstance(m, dict):
            seq += _blocks_of(m.get("content"))
    for block in seq:
        if not isinstance(block, dict):
            continue
        plain = {k: v for k, v in block.items() if k != "cache_control"}
        parts.append(plain)
        tokens += estimate_tokens(content_text([block]) or encode(plain).decode())
        if "cache_control" in block:
            last = (hashlib.sha256(encode(parts)).hexdigest(), tokens)
    return last


def _rfc3339(seconds_from_now: float) -> str:
    at = time.time() + seconds_from_now
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(-(-at // 1)))


class AnthropicDialect(Dialect):
    name: ClassVar[str] = "anthropic"
    default_model: ClassVar[str] = "claude-haiku-4-5"
    request_id_header: ClassVar[str] = "request-id"
    malformed_stream: ClassVar[bytes] = b'event: message_start\ndata: {"type": "message_sta\n\n'

    def routes(self) -> dict[str, dict[str, Handler]]:
        return {
            "/v1/messages": {"POST": self.messages},
            "/v1/messages/count_tokens": {"POST": self.count_tokens},
            "/v1/models": {"GET": self.models},
        }

    def request_id(self, n: int) -> str:
        return f"req_011C{n:020x}"

    def error(self, kind: ErrorKind, message: str | None, ctx: dict[str, Any]) -> tuple[int, bytes]:
        status, type_, default = _ERRORS[kind]
        if kind == "context_length":
            limit = ctx.get("limit", 200_000)
            default = f"prompt is too long: {ctx.get('tokens', limit + 1)} tokens > {limit} maximum"
        body = {
            "type": "error",
            "error": {"type": type_, "message": message or default},
            "request_id": ctx["request_id"],
        }
        return status, encode(body)

    def rate_limit_headers(self, info: RateLimitInfo) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for kind, limit, remaining, reset in info.by_kind():
            if limit is not None:
                out.append((f"anthropic-ratelimit-{kind}-limit", str(limit)))
            if remaining is not None:
                out.append((f"anthropic-ratelimit-{kind}-remaining", str(remaining)))
            if reset is not None:
                out.append((f"anthropic-ratelimit-{kind}-reset", _rfc3339(reset)))
        return out

    def check(self, ex: Exchange) -> tuple[ErrorKind, str] | None:
        headers = ex.request.headers
        key = headers.get("x-api-key")
        if key is None:
            auth = headers.get("authorization", "")
            key = auth[7:].strip() if auth.startswith("Bearer ") else None
            if not key:
                return "auth", "x-api-key header is required"
        if ex.fake.api_key is not None and key != ex.fake.api_key:
            return "auth", "invalid x-api-key"
        if "anthropic-version" not in headers:
            return "invalid_request", "anthropic-version: header is required"
        return None

    def _check_thinking(self, ex: Exchange) -> str | None:
        """The real API's 400s for thinking blocks lost or altered in the history."""
        body = ex.body
        key = ex.fake._signing_key
        messages = body["messages"]
        last_assistant = None
        for i, m in enumerate(messages):
            if m.get("role") != "assistant":
                continue
            last_assistant = i
            for j, b in enumerate(_blocks_of(m.get("content"))):
                kind = b.get("type") if isinstance(b, dict) else None
                if kind == "thinking":
                    sig = b.get("signature")
                    text = b.get("thinking")
                    if (
                        not isinstance(sig, str)
                        or not isinstance(text, str)
                        or not hmac.compare_digest(sig, _sign(key, text))
                    ):
                        return f"messages.{i}.content.{j}: Invalid `signature` in `thinking` block"
                elif kind == "redacted_thinking":
                    data = b.get("data")
                    if not isinstance(data, str) or not _redacted_ok(key, data):
                        return (
                            f"messages.{i}.content.{j}: Invalid `data` in `redacted_thinking` block"
                        )
        if last_assistant is None or not _thinking_on(body):
            return None
        blocks = _blocks_of(messages[last_assistant].get("content"))
        uses_tools = any(isinstance(b, dict) and b.get("type") == "tool_use" for b in blocks)
        first = blocks[0].get("type") if blocks and isinstance(blocks[0], dict) else None
        if uses_tools and first not in ("thinking", "redacted_thinking"):
            return (
                f"messages.{last_assistant}.content.0.type: Expected `thinking` or "
                f"`redacted_thinking`, but found `{first}`. When `thinking` is enabled, a final "
                "`assistant` message must start with a thinking block (preceeding the lastmost "
                "set of `tool_use` and `tool_result` blocks). We recommend you include thinking "
                "blocks from previous turns."
            )
        return None

    def _cache(self, ex: Exchange, prompt_tokens: int) -> tuple[int, int]:
        """(read, written) prompt tokens of the emulated prompt cache."""
        prefix = _cache_prefix(ex.body)
        if prefix is None:
            return 0, 0
        digest, tokens = prefix
        tokens = min(tokens, prompt_tokens)
        with ex.fake._lock:
            if digest in ex.fake._prompt_cache:
                return tokens, 0
            ex.fake._prompt_cache.add(digest)
        return 0, tokens

    def _prompt(self, body: dict[str, Any]) -> tuple[int, str] | str:
        """(input tokens, last user text), or the name of the missing/invalid field."""
        messages = body.get("messages")
        if not isinstance(messages, list):
            return "messages"
        tokens = estimate_tokens(content_text(body.get("system")))
        last_user = ""
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                return "messages"
            text = content_text(m.get("content"))
            tokens += estimate_tokens(text) + 3
            if m["role"] == "user":
                last_user = text
        return tokens + 3, last_user

    async def messages(self, ex: Exchange) -> None:
        body = ex.body
        for field in ("model", "messages", "max_tokens"):
            if field not in body:
                return await self.send_error(ex, "invalid_request", f"{field}: Field required")
        max_tokens = body["max_tokens"]
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return await self.send_error(
                ex, "invalid_request", "max_tokens: Input should be a valid integer >= 1"
            )
        prompt = self._prompt(body)
        if isinstance(prompt, str):
            return await self.send_error(ex, "invalid_request", f"{prompt}: Input is invalid")
        problem = self._check_thinking(ex)
        if problem is not None:
            return await self.send_error(ex, "invalid_request", problem)
        plan = ex.plan(prompt[0], prompt[1], max_tokens)
        read, write = self._cache(ex, plan.prompt_tokens)
        if plan.cached_tokens is not None:
            read = plan.cached_tokens
        if plan.cache_write_tokens is not None:
            write = plan.cache_write_tokens
        usage = _usage(
            max(0, plan.prompt_tokens - read - write), plan.completion_tokens, read, write
        )
        thought = self._thought(ex, plan, prompt[1])
        ident = f"msg_011C{ex.fake._next_id():020x}"
        model = ex.model(body.get("model"))
        tool_ids = [c.id or f"toolu_011C{ex.fake._next_id():020x}" for c in plan.tool_calls]
        if body.get("stream") is True:
            events = self._events(plan, ident, model, tool_ids, usage, thought)
            return await self.send_stream(ex, events)
        content: list[dict[str, Any]] = [thought] if thought is not None else []
        if plan.text or not plan.tool_calls:
            content.append({"type": "text", "text": plan.text})
        for call, call_id in zip(plan.tool_calls, tool_ids, strict=True):
            content.append(
                {"type": "tool_use", "id": call_id, "name": call.name, "input": call.arguments}
            )
        await self.send_json(
            ex,
            {
                "id": ident,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": _STOP[plan.finish],
                "stop_sequence": None,
                "usage": usage,
            },
        )

    def _thought(self, ex: Exchange, plan: ChatPlan, last_user: str) -> dict[str, Any] | None:
        """The thinking (or redacted_thinking) block of the answer, when thinking is on."""
        if not _thinking_on(ex.body):
            return None
        key = ex.fake._signing_key
        if plan.redacted:
            raw = secrets_bytes(plan.reasoning or last_user)
            data = base64.b64encode(raw + hmac.new(key, raw, hashlib.sha256).digest()).decode()
            return {"type": "redacted_thinking", "data": data}
        text = plan.reasoning if plan.reasoning is not None else f"Thinking about: {last_user}"
        return {"type": "thinking", "thinking": text, "signature": _sign(key, text)}

    def _events(
        self,
        plan: ChatPlan,
        ident: str,
        model: str,
        tool_ids: list[str],
        usage: dict[str, Any],
        thought: dict[str, Any] | None,
    ) -> list[bytes]:
        start = {
            "type": "message_start",
            "message": {
                "id": ident,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {**usage, "output_tokens": 1},
            },
        }
        events = [sse(encode(start), "message_start")]
        index = 0
        if thought is not None and thought["type"] == "redacted_thinking":
            events.append(_block_start(index, thought))
            events.append(_block_stop(index))
            index += 1
        elif thought is not None:
            events.append(
                _block_start(index, {"type": "thinking", "thinking": "", "signature": ""})
            )
            for piece in text_pieces(thought["thinking"]):
                events.append(_delta(index, {"type": "thinking_delta", "thinking": piece}))
            events.append(
                _delta(index, {"type": "signature_delta", "signature": thought["signature"]})
            )
            events.append(_block_stop(index))
            index += 1
        if plan.text or not plan.tool_calls:
            events.append(_block_start(index, {"type": "text", "text": ""}))
            events.append(_PING)
            for piece in text_pieces(plan.text):
                events.append(_delta(index, {"type": "text_delta", "text": piece}))
            events.append(_block_stop(index))
            index += 1
        else:
            events.append(_PING)
        for call, call_id in zip(plan.tool_calls, tool_ids, strict=True):
            block = {"type": "tool_use", "id": call_id, "name": call.name, "input": {}}
            events.append(_block_start(index, block))
            for piece in json_pieces(call.arguments_json):
                events.append(_delta(index, {"type": "input_json_delta", "partial_json": piece}))
            events.append(_block_stop(index))
            index += 1
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": _STOP[plan.finish], "stop_sequence": None},
            "usage": {
                "output_tokens": plan.completion_tokens,
                "input_tokens": usage["input_tokens"],
                "cache_creation_input_tokens": usage["cache_creation_input_tokens"],
                "cache_read_input_tokens": usage["cache_read_input_tokens"],
            },
        }
        events.append(sse(encode(delta), "message_delta"))
        events.append(_STOP_EVENT)
        return events

    async def count_tokens(self, ex: Exchange) -> None:
        for field in ("model", "messages"):
            if field not in ex.body:
                return await self.send_error(ex, "invalid_request", f"{field}: Field required")
        prompt = self._prompt(ex.body)
        if isinstance(prompt, str):
            return await self.send_error(ex, "invalid_request", f"{prompt}: Input is invalid")
        await self.send_json(ex, {"input_tokens": prompt[0]})

    async def models(self, ex: Exchange) -> None:
        data = [
            {
                "type": "model",
                "id": m,
                "display_name": m,
                "created_at": "2025-10-01T00:00:00Z",
                "lifecycle": "active",
                "max_input_tokens": 200_000,
                "max_tokens": 64_000,
            }
            for m in ex.fake.models
        ]
        await self.send_json(
            ex,
            {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            },
        )


def secrets_bytes(seed: str) -> bytes:
    """The opaque payload of a redacted thinking block (derived from ``seed``)."""
    return hashlib.sha256(b"redacted:" + seed.encode()).digest()


def _redacted_ok(key: bytes, data: str) -> bool:
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        return False
    body, mac = raw[:-32], raw[-32:]
    return len(raw) > 32 and hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest())


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    event = {"type": "content_block_start", "index": index, "content_block": block}
    return sse(encode(event), "content_block_start")


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    event = {"type": "content_block_delta", "index": index, "delta": delta}
    return sse(encode(event), "content_block_delta")


def _block_stop(index: int) -> bytes:
    return sse(b'{"type":"content_block_stop","index":%d}' % index, "content_block_stop")
