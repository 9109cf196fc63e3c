"""Azure OpenAI's differences from OpenAI, served over the OpenAI dialect.

Chat completions and embeddings at ``/openai/deployments/{deployment}/...``
with an ``api-version`` query parameter (a request without one, or with one not
shaped ``YYYY-MM-DD[-preview]``, gets a 404 ``Resource not found``, as Azure
answers), the key in an ``api-key`` header (401 without it), the deployment
as the model when the body names none, and the model list at ``/openai/models``.
Bodies, streams and errors are OpenAI's.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar
from urllib.parse import parse_qs

from llmrelay.testing._dialect import ErrorKind, Exchange, Handler, encode
from llmrelay.testing._openai import OpenAIDialect

__all__ = ["AzureDialect"]

_DEPLOYMENT = re.compile(r"^/openai/deployments/([^/]+)/(chat/completions|embeddings)$")
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide "
    "a valid key for an active subscription and use a correct regional API endpoint for your "
    "resource."
)


class AzureDialect(OpenAIDialect):
    name: ClassVar[str] = "azure"
    request_id_header: ClassVar[str] = "apim-request-id"

    def routes(self) -> dict[str, dict[str, Handler]]:
        return {"/openai/models": {"GET": self.models}}

    def route(self, routes: dict[str, dict[str, Handler]], path: str) -> dict[str, Handler] | None:
        found = _DEPLOYMENT.match(path)
        if found is None:
            return routes.get(path)
        deployment, what = found.group(1), found.group(2)
        handler = self.chat if what == "chat/completions" else self.embeddings

        async def for_deployment(ex: Exchange) -> None:
            if isinstance(ex.json, dict):
                ex.json.setdefault("model", deployment)
            await handler(ex)

        return {"POST": for_deployment}

    def error(self, kind: ErrorKind, message: str | None, ctx: dict[str, Any]) -> tuple[int, bytes]:
        if kind == "auth":
            return 401, encode({"error": {"code": "401", "message": message or _DENIED}})
        if kind == "not_found":
            body = {"error": {"code": "404", "message": message or "Resource not found"}}
            return 404, encode(body)
        return super().error(kind, message, ctx)

    def check(self, ex: Exchange) -> tuple[ErrorKind, str] | None:
        version = next(iter(parse_qs(ex.request.query).get("api-version") or ()), None)
        if version is None or not _VERSION.match(version):
            return "not_found", "Resource not found"
        key = ex.request.headers.get("api-key", "").strip()
        if not key or (ex.fake.api_key is not None and key != ex.fake.api_key):
            return "auth", _DENIED
        return None
