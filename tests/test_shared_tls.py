"""Shared state over TLS (``rediss://``) on a real ``redis-server --tls-port`` with a
certificate for 127.0.0.1 signed by a throwaway CA (openssl), started per module on
a free loopback port and stopped by PID.

The core trusts the system's roots; a private CA is added the way rustls's native
roots take one, with ``SSL_CERT_FILE`` (read when a connection opens). A server
whose certificate is not trusted is never spoken to in plaintext: its calls follow
``on_unavailable`` as if Redis were down.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from llmrelay import SharedStateConfig
from llmrelay._shared import SharedLimiter
from llmrelay._shared_tiers import SharedCacheTier
from redis_server import RedisServer

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("openssl") is None,
    reason="redis-server or openssl is not installed (.ci/run installs redis-server)",
)


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[RedisServer]:
    server = RedisServer(tls=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    return "tls-" + request.node.name


def test_the_fixture_speaks_tls_only(tls_redis: RedisServer) -> None:
    assert tls_redis.url.startswith("rediss://")
    assert tls_redis.resp("PING") == "PONG"  # through ssl, verified against the CA


async def test_limits_and_cache_over_tls_with_a_trusted_ca(
    tls_redis: RedisServer, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_redis.ca_file is not None
    monkeypatch.setenv("SSL_CERT_FILE", tls_redis.ca_file)
    sc = SharedStateConfig(url=tls_redis.url, namespace=ns, op_timeout_s=0.5)
    lim = SharedLimiter(sc)
    lim.configure("d/m:rpm", 0.01, 2)
    got = [await lim.reserve([("d/m:rpm", 1.0)]) for _ in range(3)]
    assert [g.admitted for g in got] == [True, True, False]
    assert {g.source for g in got} == {"redis"}
    st = lim.stats()
    assert st["connected"] is True and st["script_errors"] == 0
    assert tls_redis.resp("EXISTS", f"{ns}:{{d/m}}:c:rpm") == 1
    cache = SharedCacheTier(sc)
    assert cache.set(b"k" * 16, b"over tls", 60.0)
    assert await cache.drain(30.0) == 0
    hit = await cache.get(b"k" * 16)
    assert hit is not None and hit[0] == b"over tls"


async def test_an_untrusted_certificate_is_unavailable_never_plaintext(
    tls_redis: RedisServer, ns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    sc = SharedStateConfig(
        url=tls_redis.url, namespace=ns, op_timeout_s=0.3, on_unavailable="closed"
    )
    lim = SharedLimiter(sc)
    lim.configure("d/m:rpm", 1.0, 5)
    got = await lim.reserve([("d/m:rpm", 1.0)])
    assert not got.admitted and got.source == "closed"
    assert lim.stats()["connected"] is False
    assert tls_redis.resp("EXISTS", f"{ns}:{{d/m}}:c:rpm") == 0


async def test_plain_redis_to_a_tls_port_is_unavailable(tls_redis: RedisServer, ns: str) -> None:
    plain = tls_redis.url.replace("rediss://", "redis://")
    lim = SharedLimiter(SharedStateConfig(url=plain, namespace=ns, op_timeout_s=0.3))
    lim.configure("d/m:rpm", 1.0, 5)
    got = await lim.reserve([("d/m:rpm", 1.0)])
    assert got.admitted and got.source == "local_share"


def test_a_tls_password_never_shows(tls_redis: RedisServer) -> None:
    url = tls_redis.url.replace("rediss://", "rediss://user:s3cret@")
    lim = SharedLimiter(SharedStateConfig(url=url))
    assert "s3cret" not in repr(lim) and "s3cret" not in repr(lim.core)
