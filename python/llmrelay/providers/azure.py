"""Azure OpenAI: the OpenAI Chat Completions protocol at Azure's deployment URLs.

``base_url`` is the resource's endpoint, ``https://<resource>.openai.azure.com``
(``AZURE_OPENAI_ENDPOINT`` when unset). The model of a call is the name of the
deployment, so a request goes to
``{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...``
(embeddings at ``.../embeddings``), with the key in an ``api-key`` header
instead of ``Authorization: Bearer`` (a Microsoft Entra ID token goes in
``headers={"authorization": "Bearer ..."}`` instead). The API version is the
``api-version`` of ``base_url``'s query when it has one, else
``AZURE_OPENAI_API_VERSION`` or ``OPENAI_API_VERSION`` (as the openai SDK's
``AzureOpenAI`` reads it), else :data:`DEFAULT_API_VERSION`. Bodies and replies
are OpenAI's, so everything else is :class:`~llmrelay.providers.OpenAIAdapter`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from llmrelay._types import ChatRequest
from llmrelay._wire import WireRequest
from llmrelay.providers._errors import response_error
from llmrelay.providers.openai import OpenAIAdapter

__all__ = ["DEFAULT_API_VERSION", "AzureOpenAIAdapter"]

#: The latest GA version of the data-plane inference API (structured outputs included).
DEFAULT_API_VERSION = "2024-10-21"
_VERSION_ENV = ("AZURE_OPENAI_API_VERSION", "OPENAI_API_VERSION")
_SSE = {"accept": "text/event-stream"}


class AzureOpenAIAdapter(OpenAIAdapter):
    """OpenAI's wire protocol at Azure OpenAI's deployment URLs, with an ``api-key``."""

    kind = "azure"
    supports_n = True

    __slots__ = ("api_version", "endpoint")

    def __init__(
        self,
        *,
        deployment: str,
        base_url: str,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        api_version: str | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        query = parse_qs(parts.query)
        root = parts._replace(query="", fragment="").geturl().rstrip("/")
        if root.endswith("/openai"):  # the endpoint given with Azure's own prefix
            root = root[: -len("/openai")]
        super().__init__(deployment=deployment, base_url=root, api_key=api_key, headers=headers)
        env = os.environ if environ is None else environ
        from_env = next((env[v] for v in _VERSION_ENV if env.get(v)), None)
        given = next(iter(query.get("api-version") or ()), None)
        self.endpoint = root
        self.api_version: str = api_version or given or from_env or DEFAULT_API_VERSION

    def _auth(self) -> dict[str, str]:
        return {"api-key": self._api_key} if self._api_key else {}

    def _url(self, model: str, what: str) -> str:
        name = quote(model, safe="")
        version = quote(self.api_version, safe="")
        return f"{self.endpoint}/openai/deployments/{name}/{what}?api-version={version}"

    def wire_chat(self, req: ChatRequest, model: str, *, stream: bool) -> WireRequest:
        return self._wire(
            "POST",
            self._url(model, "chat/completions"),
            self.chat_body(req, model, stream=stream),
            _SSE if stream else None,
            key=("chat", stream),
            secret=self._auth(),
        )

    def wire_embed(self, inputs: list[str], model: str, params: dict[str, Any]) -> WireRequest:
        params = dict(params)
        extra = params.pop("extra", None) or {}
        body = {"input": inputs, **params, **extra}
        return self._wire(
            "POST", self._url(model, "embeddings"), body, key="embed", secret=self._auth()
        )

    async def list_models(self, client: httpx.AsyncClient) -> list[str]:
        """The models the resource offers (``/openai/models``; deployments are named
        in the Azure portal, not listed by the inference API)."""
        version = quote(self.api_version, safe="")
        url = f"{self.endpoint}/openai/models?api-version={version}"
        request = self._request("GET", url, secret=self._auth())
        resp, data = await self._call_json(client, request, None)
        try:
            return [str(m["id"]) for m in data["data"]]
        except (KeyError, TypeError) as exc:
            raise response_error(
                f"reply is not a model list ({type(exc).__name__})", self.deployment, None, resp
            ) from None
