"""Shared state on a Redis Cluster: three masters on loopback (the ``redis_cluster``
fixture of conftest.py, stopped by PID), with the limiter, the shared cache tier
and cross-process dedup unchanged on it: no CROSSSLOT error (every script's keys
share one hash tag), each (deployment, model) on one shard, several deployments
spread over the shards, and dedup's notices heard across shards.

Timing: every wait has a wide margin (a loaded 2-core machine); nothing asserts a
speed.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from llmrelay import (
    CacheConfig,
    DedupConfig,
    LLMService,
    LLMServiceConfig,
    OrchestratorConfig,
    RateLimitConfig,
    SharedStateConfig,
    _core,
)
from llmrelay._shared import SharedLimiter, core_url
from llmrelay._shared_tiers import SharedCacheTier, SharedDedupTier
from llmrelay.errors import ConfigError, RateLimitError
from llmrelay.testing import FakeProvider
from redis_server import RedisCluster, RedisServer, free_port
from shared_tier_worker import ask

SPAWN = multiprocessing.get_context("spawn")
WAIT_S = 90.0  # the longest any step may take before the test fails


@pytest.fixture
def ns(request: pytest.FixtureRequest) -> str:
    """A namespace of this test's own (tests share the cluster, not keys)."""
    return "k-" + request.node.name.replace("[", "-").replace("]", "")


def limiter(url: str, ns: str, **kw: Any) -> SharedLimiter:
    kw.setdefault("op_timeout_s", 0.5)  # a slow reply on a loaded machine is not a fallback
    return SharedLimiter(SharedStateConfig(url=url, cluster=True, namespace=ns, **kw))


def where(cluster: RedisCluster, pattern: str) -> dict[int, list[str]]:
    """The keys matching ``pattern`` on each master (by port), from a SCAN of each."""
    return {port: sorted(cluster.keys(port, pattern)) for port in cluster.ports}


def no_script_errors(lim: SharedLimiter) -> None:
    st = lim.stats()
    assert st["script_errors"] == 0, st  # a CROSSSLOT reply would be a script error
    assert st["connected"] is True, st


# ---- the config ------------------------------------------------------------------------------


def test_cluster_seeds_are_normalised_for_the_core() -> None:
    sc = SharedStateConfig(url="redis://:pw@127.0.0.1:7000, 127.0.0.1:7001", cluster=True)
    assert core_url(sc) == "cluster:redis://:pw@127.0.0.1:7000,redis://:pw@127.0.0.1:7001"
    one = SharedStateConfig(url="redis://127.0.0.1:7000/0", cluster=True)
    assert core_url(one) == "cluster:redis://127.0.0.1:7000/0"
    assert core_url(SharedStateConfig(url="redis://h:1/2")) == "redis://h:1/2"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("unix:///tmp/redis.sock", "must be TCP"),
        ("redis://h:7000,unix:///tmp/r.sock", "must be TCP"),
        ("h:7000,h:7001", "must be a redis:// or rediss:// URL"),
        ("redis://h:7000,,h:7002", "is empty"),
        ("redis://h:7000/1", "db other than 0"),
        ("redis://h:7000,redis://h:x", "not a number"),
        ("redis://:a@h:7000,redis://:b@h:7001", "differs from seed 0"),
        ("redis://h:7000,rediss://h:7001", "differs from seed 0"),
        ("redis://h:7000?db=1", "query"),
        ("http://h:7000", "must be TCP"),
    ],
)
def test_a_bad_cluster_seed_is_a_config_error_naming_url(url: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as e:
        SharedStateConfig(url=url, cluster=True)
    assert e.value.field == "url"


def test_a_cluster_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "llmrelay.toml"
    path.write_text('[shared]\nurl = "redis://10.0.0.1:7000,10.0.0.2:7000"\ncluster = true\n')
    shared = LLMServiceConfig.from_toml(path).shared
    assert shared is not None and shared.cluster
    assert core_url(shared) == "cluster:redis://10.0.0.1:7000,redis://10.0.0.2:7000"
    path.write_text('[shared]\nurl = "redis://10.0.0.1:7000,10.0.0.2:7000"\n')
    with pytest.raises(ConfigError, match="cluster=True") as e:
        LLMServiceConfig.from_toml(path)
    assert (e.value.field or "").endswith("url")


def test_several_seeds_need_cluster_true() -> None:
    with pytest.raises(ConfigError, match="several seeds need cluster=True") as e:
        SharedStateConfig(url="redis://h:7000,redis://h:7001")
    assert e.value.field == "url"


def test_no_seed_password_shows_in_repr_or_errors() -> None:
    sc = SharedStateConfig(url="redis://u:s3cret@h:7000,redis://u:s3cret@h:7001", cluster=True)
    assert "s3cret" not in repr(sc) and "cluster=True" in repr(sc)
    assert "h:7000" in repr(sc) and "h:7001" in repr(sc)
    with pytest.raises(ConfigError) as e:
        SharedStateConfig(url="redis://u:s3cret@h:7000,redis://u:s3cret@h:7001/3", cluster=True)
    assert "s3cret" not in str(e.value)
    with pytest.raises(ConfigError) as e2:
        _core.SharedLimiter("cluster:redis://u:s3cret@h:7000,unix:///x")
    assert "s3cret" not in str(e2.value) and "TCP" in str(e2.value)


def test_the_core_refuses_a_bad_seed_list() -> None:
    for spec in ("cluster:", "cluster:redis://h:1,", "cluster:redis://:a@h:1,redis://:b@h:2"):
        with pytest.raises(ConfigError):
            _core.SharedCache(spec)
        with pytest.raises(ConfigError):
            _core.SharedDedup(spec)


def test_tls_seeds_keep_their_scheme() -> None:
    sc = SharedStateConfig(url="rediss://:pw@h:7000,h:7001", cluster=True)
    assert core_url(sc) == "cluster:rediss://:pw@h:7000,rediss://:pw@h:7001"
    shown = repr(SharedLimiter(sc).core)  # nothing opened until a call
    assert "pw" not in shown and "h:7000" in shown and "h:7001" in shown


# ---- the limiter -----------------------------------------------------------------------------


async def test_limits_are_exact_and_shared_on_the_cluster(
    redis_cluster: RedisCluster, ns: str
) -> None:
    a, b = limiter(redis_cluster.url, ns), limiter(redis_cluster.url, ns)
    for lim in (a, b):  # two limiters: two processes' worth, as Redis sees them
        lim.configure("openai/gpt-4o:rpm", 0.01, 3)
        lim.configure("openai/gpt-4o:tpm_in", 0.01, 100)
    items = [("openai/gpt-4o:rpm", 1.0), ("openai/gpt-4o:tpm_in", 10.0)]
    got = [await (a if i % 2 else b).reserve(items) for i in range(4)]
    assert [x.admitted for x in got] == [True, True, True, False]
    assert {x.source for x in got} == {"redis"}
    assert got[3].wait_s > 50  # the next unit in 1 / 0.01 s
    # cells + pause + reservation in one script: one hash tag, no CROSSSLOT
    assert (await a.refund([("openai/gpt-4o:rpm", 1.0)])) == "redis"
    res = await b.reserve(items, reservation="r-1")
    assert res.admitted and res.source == "redis"
    assert await a.reconcile("r-1", [("openai/gpt-4o:rpm", 1.0), ("openai/gpt-4o:tpm_in", 4.0)])
    assert not await b.reconcile("r-1", items)  # applied once
    assert (await a.observe_headers("openai/gpt-4o:tpm_in", 5, 100, 60.0)) == "redis"
    left, source = await b.available("openai/gpt-4o:tpm_in")
    assert source == "redis" and left <= 5.0
    assert await a.pause("openai/gpt-4o:rpm", 30.0) > 20
    paused = await b.reserve([("openai/gpt-4o:tpm_in", 1.0)])
    assert not paused.admitted and paused.wait_s > 20 and paused.source == "redis"
    assert (await a.heartbeat() or 0) >= 1
    no_script_errors(a)
    no_script_errors(b)


async def test_each_deployment_is_on_one_shard_and_deployments_spread(
    redis_cluster: RedisCluster, ns: str
) -> None:
    lim = limiter(redis_cluster.url, ns)
    scopes = [f"dep{i}/model-{i}" for i in range(12)]
    for s in scopes:
        lim.configure(f"{s}:rpm", 0.01, 5)  # cells live 100 s: still there for the SCAN
        lim.configure(f"{s}:tpm_in", 0.01, 500)
        got = await lim.reserve([(f"{s}:rpm", 1.0), (f"{s}:tpm_in", 7.0)], reservation=f"r-{s}")
        assert got.admitted and got.source == "redis"
        assert await lim.pause(f"{s}:rpm", 60.0) > 0
    no_script_errors(lim)
    found = where(redis_cluster, f"{ns}:*")
    shards_of = {
        s: {port for port, keys in found.items() if any(f"{{{s}}}" in k for k in keys)}
        for s in scopes
    }
    for s, shards in shards_of.items():
        assert len(shards) == 1, (s, shards)  # cells, pause, reservation: one slot
        (port,) = shards
        mine = [k for k in found[port] if f"{{{s}}}" in k]
        assert {k.rsplit(":", 1)[-1] for k in mine} >= {"rpm", "tpm_in", "pause"}
        assert any(f"}}:r:r-{s}" in k for k in mine), mine
    used = {next(iter(v)) for v in shards_of.values()}
    assert len(used) >= 2, found  # 12 tags on 3 masters: more than one shard
    # the slot Redis computes for a tag is the one the key went to
    s0 = scopes[0]
    slot = RedisCluster.resp(redis_cluster.ports[0], "CLUSTER", "KEYSLOT", f"{ns}:{{{s0}}}:c:rpm")
    assert slot == RedisCluster.resp(redis_cluster.ports[0], "CLUSTER", "KEYSLOT", f"x{{{s0}}}y")


async def test_a_node_not_in_cluster_mode_follows_on_unavailable(ns: str) -> None:
    single = RedisServer()
    try:
        lim = limiter(single.url.removesuffix("/0"), ns, on_unavailable="closed", op_timeout_s=0.2)
        lim.configure("d/m:rpm", 1.0, 1)
        got = await lim.reserve([("d/m:rpm", 1.0)])
        assert not got.admitted and got.source == "closed"
        assert lim.stats()["connected"] is False
    finally:
        single.stop()
    dead = limiter(f"redis://127.0.0.1:{free_port()}", ns, op_timeout_s=0.2)
    dead.configure("d/m:rpm", 1.0, 1)
    got = await dead.reserve([("d/m:rpm", 1.0)])
    assert got.admitted and got.source == "local_share"


async def test_a_dead_master_takes_only_its_deployments_to_the_fallback(ns: str) -> None:
    # a cluster of its own (one master is killed); live slots keep being served
    cluster = RedisCluster(extra_args=("--cluster-require-full-coverage", "no"))
    try:
        lim = limiter(cluster.url, ns, op_timeout_s=0.5)
        scopes = [f"dep{i}/m" for i in range(12)]
        for s in scopes:
            lim.configure(f"{s}:rpm", 0.01, 100)  # cells live 100 s: found by the SCAN
            assert (await lim.reserve([(f"{s}:rpm", 1.0)])).source == "redis"
        owner = {
            s: port
            for port in cluster.ports
            for s in scopes
            if any(f"{{{s}}}" in k for k in cluster.keys(port, f"{ns}:{{*"))
        }
        assert len(owner) == len(scopes)
        dead = next(p for p in cluster.ports if p in owner.values())
        i = cluster.ports.index(dead)
        cluster.procs[i].terminate()
        cluster.procs[i].wait(30)
        for _ in range(2):
            for s in scopes:
                got = await lim.reserve([(f"{s}:rpm", 1.0)])
                assert got.admitted, (s, got)
                assert got.source == ("local_share" if owner[s] == dead else "redis"), (s, got)
        st = lim.stats()
        on_dead = sum(1 for s in scopes if owner[s] == dead)
        assert st["unavailable"] == 2 * on_dead and st["script_errors"] == 0, st
        assert st["connects"] == 1  # the other masters' connections were kept
    finally:
        cluster.stop()


async def test_a_slot_moved_to_another_master_is_followed_with_its_state(
    redis_cluster: RedisCluster, ns: str
) -> None:
    lim = limiter(redis_cluster.url, ns)
    lim.configure("moving/m:rpm", 0.01, 2)
    got = [await lim.reserve([("moving/m:rpm", 1.0)]) for _ in range(2)]
    assert all(g.admitted and g.source == "redis" for g in got)
    slot = RedisCluster.resp(redis_cluster.ports[0], "CLUSTER", "KEYSLOT", "{moving/m}")
    before = redis_cluster.owner(slot)
    after = next(p for p in redis_cluster.ports if p != before)
    redis_cluster.move_slot(slot, after)  # the client's slot map is stale now
    assert redis_cluster.owner(slot) == after
    refused = await lim.reserve([("moving/m:rpm", 1.0)])
    assert not refused.admitted and refused.source == "redis"  # the cell moved with its slot
    assert refused.wait_s > 50
    assert redis_cluster.keys(after, f"{ns}:{{moving/m}}:*")
    assert not redis_cluster.keys(before, f"{ns}:{{moving/m}}:*")
    st = lim.stats()
    assert st["unavailable"] == 0 and st["script_errors"] == 0, st


# ---- the shared cache tier -------------------------------------------------------------------


async def test_cache_entries_spread_over_shards(redis_cluster: RedisCluster, ns: str) -> None:
    sc = SharedStateConfig(url=redis_cluster.url, cluster=True, namespace=ns, op_timeout_s=0.5)
    writer, reader = SharedCacheTier(sc), SharedCacheTier(sc)
    keys = [bytes([i]) * 16 for i in range(12)]
    for k in keys:
        assert writer.set(k, b"value-" + k, 600.0)
    assert await writer.drain(WAIT_S) == 0
    for k in keys:
        got = await reader.get(k)
        assert got is not None and got[0] == b"value-" + k
    st = reader.stats()
    assert st["hits"] == 12 and st["errors"] == 0
    assert writer.stats()["write_errors"] == 0
    found = where(redis_cluster, f"{ns}:c:*")
    assert sum(len(v) for v in found.values()) == 12
    assert sum(1 for v in found.values() if v) >= 2, found


def get(q: Any, what: str) -> dict[str, Any]:
    end = time.monotonic() + WAIT_S
    while True:
        try:
            msg: dict[str, Any] = q.get(timeout=max(0.1, end - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {what!r} from a worker within {WAIT_S}s") from None
        if what in msg:
            return msg


def run(target: Any, *args: Any) -> Any:
    p = SPAWN.Process(target=target, args=args, daemon=True)
    p.start()
    return p


def reap(*procs: Any) -> None:
    for p in procs:
        p.join(WAIT_S)
        if p.is_alive():
            p.kill()
            p.join()


@pytest.fixture(scope="module")
def fake_proc() -> Any:
    with FakeProvider.spawn("openai") as fake:
        yield fake


@pytest.fixture
def fake(fake_proc: Any) -> Any:
    fake_proc.reset()
    fake_proc.latency_s = 0.0
    return fake_proc


def cfg(cluster: RedisCluster, ns: str, fake: Any, **kw: Any) -> dict[str, Any]:
    return {
        "redis_url": cluster.url,
        "cluster": True,
        "namespace": ns,
        "base_url": fake.base_url,
        **kw,
    }


def test_a_reply_cached_by_process_a_is_a_hit_in_process_b_on_the_cluster(
    redis_cluster: RedisCluster, ns: str, fake: Any
) -> None:
    q = SPAWN.Queue()
    a = run(ask, cfg(redis_cluster, ns, fake), "What is the capital of Peru?", q)
    first = get(q, "text")
    reap(a)
    assert first["cached"] is False and fake.request_count == 1
    b = run(ask, cfg(redis_cluster, ns, fake), "What is the capital of Peru?", q)
    second = get(q, "text")
    reap(b)
    assert second["pid"] != first["pid"]
    assert second["cached"] is True and second["text"] == first["text"]
    assert fake.request_count == 1
    assert second["counters"].get("cache_hits.shared") == 1
    assert second["cache"].get("shared_errors", 0) == 0


# ---- cross-process dedup ---------------------------------------------------------------------


async def test_dedup_notices_are_heard_from_every_shard(
    redis_cluster: RedisCluster, ns: str
) -> None:
    sc = SharedStateConfig(
        url=redis_cluster.url, cluster=True, namespace=ns, op_timeout_s=0.5, dedup_lease_s=30.0
    )
    leader, follower = SharedDedupTier(sc), SharedDedupTier(sc)
    keys = [bytes([0x40 + i]) * 16 for i in range(6)]
    for k in keys:
        outcome, lease = await leader.join(k, 5.0)
        assert outcome == "lead", outcome
        waiting = asyncio.create_task(follower.join(k, WAIT_S))
        end = time.monotonic() + WAIT_S
        while follower.stats()["waits"] < keys.index(k) + 1:  # the follower found the lease
            assert time.monotonic() < end
            await asyncio.sleep(0.01)
        assert lease.complete(k, b"result-" + k)
        outcome, value = await waiting
        assert (outcome, bytes(value)) == ("done", b"result-" + k)
    end = time.monotonic() + WAIT_S
    while follower.stats()["notices_received"] < len(keys):
        assert time.monotonic() < end, follower.stats()
        await asyncio.sleep(0.02)
    st = follower.stats()
    assert st["joins"] == len(keys) and st["unavailable"] == 0
    assert leader.stats()["notices_sent"] == len(keys)
    # the leases' slots were on more than one master: notices crossed shards
    slots = [
        RedisCluster.resp(redis_cluster.ports[0], "CLUSTER", "KEYSLOT", f"{{d:{k.hex()}}}")
        for k in keys
    ]
    owners = {redis_cluster.owner(s) for s in slots}
    assert len(owners) >= 2, owners


def test_n_processes_asking_at_once_cause_one_provider_call_on_the_cluster(
    redis_cluster: RedisCluster, ns: str, fake: Any
) -> None:
    fake.latency_s = 2.0  # the leader's call outlasts every other process's join
    q, go = SPAWN.Queue(), SPAWN.Event()
    workers = [
        run(ask, cfg(redis_cluster, ns, fake, cache=False), "Tell me a fact.", q, go)
        for _ in range(3)
    ]
    try:
        for _ in workers:
            get(q, "ready")
        go.set()
        answers = [get(q, "text") for _ in workers]
    finally:
        go.set()
        reap(*workers)
    assert fake.request_count == 1
    assert len({a["text"] for a in answers}) == 1
    assert sum(a["dedup"]["shared_leads"] for a in answers) == 1
    assert sum(a["dedup"]["shared_joins"] for a in answers) == 2
    assert sum(a["dedup"].get("shared_unavailable", 0) for a in answers) == 0


# ---- through the service ---------------------------------------------------------------------


async def test_a_service_on_the_cluster_checks_its_limits_there(
    redis_cluster: RedisCluster, make_config: Any, fakes: dict[str, Any], ns: str
) -> None:
    limit = RateLimitConfig(requests_per_minute=2, burst=2)
    cfg = make_config(
        cache=CacheConfig(enabled=False),
        dedup=DedupConfig(enabled=False),
        orchestrator=OrchestratorConfig(max_retries=0),
        provider_kw={"openai": {"rate_limit": limit}},
    )
    shared = SharedStateConfig(
        url=redis_cluster.url, cluster=True, namespace=ns, op_timeout_s=0.5, breakers=False
    )
    cfg = msgspec.structs.replace(cfg, shared=shared)
    async with LLMService(cfg) as a, LLMService(cfg) as b:
        assert (await a.achat("one", max_tokens=5)).text
        assert (await b.achat("two", max_tokens=5)).text
        with pytest.raises(RateLimitError):  # the burst of 2 is spent across both
            await a.achat("three", max_tokens=5, timeout=0.5)
        snap = b.metrics.snapshot().shared
    assert snap["cluster"] is True and snap["script_errors"] == 0
    assert snap["url"] == redis_cluster.url
    assert snap["deployments"]["openai"]["shared_checks"] >= 1
    assert snap["deployments"]["openai"]["shared_fallbacks"] == 0
    assert fakes["openai"].request_count == 2
