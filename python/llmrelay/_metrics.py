"""ServiceMetrics: what a service did, per provider, model and deployment.

Counters and HDR latency histograms live in the core (``_core.Metrics``); this
module names them, adds the live state of breakers, concurrency limits, the
cache and the deduplicator, and renders a ``MetricsSnapshot`` or Prometheus
text (OpenTelemetry GenAI names where they exist, ours under ``llmrelay_``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from llmrelay import _core

__all__ = ["COST_COUNTER", "MetricsSnapshot", "SeriesSnapshot", "ServiceMetrics"]

#: The counter of what calls cost, in nano-USD (the core's counters are integers);
#: read it as ``SeriesSnapshot.cost_usd``, exported as ``llmrelay_cost_usd_total``.
COST_COUNTER = "cost_nanousd"

#: Histogram bucket bounds (seconds) for the Prometheus export.
BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class SeriesSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """The counters and latency summaries of one (provider, model, deployment)."""

    provider: str
    model: str
    deployment: str
    counters: dict[str, int]
    gauges: dict[str, float]
    histograms: dict[str, dict[str, float]]

    def counter(self, name: str) -> int:
        """A counter's value (0 if never incremented)."""
        return self.counters.get(name, 0)

    @property
    def cost_usd(self) -> float:
        """What this series' calls cost in USD (calls of unknown price count
        ``cost_unknown``, not here)."""
        return self.counters.get(COST_COUNTER, 0) / 1e9


class MetricsSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """A point-in-time copy of every metric, as plain data."""

    series: list[SeriesSnapshot]
    breakers: dict[str, dict[str, Any]]
    concurrency: dict[str, dict[str, float]]
    cache: dict[str, int]
    dedup: dict[str, int]
    health: dict[str, dict[str, float | int | None]] = {}
    #: per deployment: ``outstanding`` (rate-limit reservations booked and neither sent
    #: nor refunded: 0 when nothing is waiting) and the capacity ``available`` per limit
    limiter: dict[str, dict[str, float]] = {}
    #: the disk tier when one is configured: ``path``, ``enabled`` and why it is off
    #: (``error``: held by another process, forked from the process that opened it...)
    disk_tier: dict[str, Any] = {}
    #: the shared state (``LLMServiceConfig.shared``) as this process sees it: ``pid``,
    #: ``connected``, ``degraded``, ``script_errors``, ``reservations``, ``reconciles``,
    #: ``fallback_calls``, per-deployment ``shared_checks``... ({} without it)
    shared: dict[str, Any] = {}

    def total(self, name: str) -> int:
        """A counter summed over every series."""
        return sum(s.counters.get(name, 0) for s in self.series)

    def cost_usd(self, deployment: str | None = None) -> float:
        """What the calls cost in USD, of every series or of one deployment."""
        return sum(s.cost_usd for s in self.series if deployment in (None, s.deployment))

    def for_deployment(self, deployment: str) -> list[SeriesSnapshot]:
        """The series of one deployment."""
        return [s for s in self.series if s.deployment == deployment]

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (JSON-ready)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kv.items()) + "}"


class ServiceMetrics:
    """The metrics of one service (shared by its ``with_options`` views)."""

    def __init__(self, live: Callable[[], dict[str, Any]] | None = None) -> None:
        self.core = _core.Metrics()
        self._live = live or dict

    def snapshot(self) -> MetricsSnapshot:
        """Every counter, histogram summary and live state, as plain data."""
        series = [
            SeriesSnapshot(
                provider=str(s["provider"]),
                model=str(s["model"]),
                deployment=str(s["deployment"]),
                counters=dict(s["counters"]),  # type: ignore[call-overload]
                gauges=dict(s["gauges"]),  # type: ignore[call-overload]
                histograms={k: dict(v) for k, v in s["histograms"].items()},  # type: ignore[attr-defined]
            )
            for s in self.core.snapshot()
        ]
        live = self._live()
        return MetricsSnapshot(
            series=series,
            breakers=live.get("breakers", {}),
            concurrency=live.get("concurrency", {}),
            cache=live.get("cache", {}),
            dedup=live.get("dedup", {}),
            health=live.get("health", {}),
            limiter=live.get("limiter", {}),
            disk_tier=live.get("disk_tier", {}),
            shared=live.get("shared", {}),
        )

    def reset(self) -> None:
        """Zero every counter and histogram (live state such as breakers is not touched)."""
        self.core.reset()

    def prometheus(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        snap = self.snapshot()
        out: list[str] = []
        dur = "gen_ai_client_operation_duration_seconds"
        out.append(f"# HELP {dur} GenAI operation duration (gen_ai.client.operation.duration).")
        out.append(f"# TYPE {dur} histogram")
        for s in snap.series:
            h = s.histograms.get("latency")
            if not h:
                continue
            base = {
                "gen_ai_operation_name": "chat",
                "gen_ai_system": s.provider,
                "gen_ai_request_model": s.model,
                "llmrelay_deployment": s.deployment,
            }
            counts = self.core.histogram_buckets(
                s.provider, s.model, s.deployment, "latency", list(BUCKETS_S)
            )
            for bound, n in zip(BUCKETS_S, counts, strict=True):
                out.append(f"{dur}_bucket{_labels(**base, le=repr(bound))} {n}")
            out.append(f"{dur}_bucket{_labels(**base, le='+Inf')} {int(h['count'])}")
            out.append(f"{dur}_sum{_labels(**base)} {h['sum_s']}")
            out.append(f"{dur}_count{_labels(**base)} {int(h['count'])}")
        tok = "gen_ai_client_token_usage"
        out.append(f"# HELP {tok} Tokens used (gen_ai.client.token.usage).")
        out.append(f"# TYPE {tok} summary")
        for s in snap.series:
            for kind, name in (("input", "tokens_in"), ("output", "tokens_out")):
                if name in s.counters:
                    lab = _labels(
                        gen_ai_system=s.provider,
                        gen_ai_request_model=s.model,
                        llmrelay_deployment=s.deployment,
                        gen_ai_token_type=kind,
                    )
                    out.append(f"{tok}_sum{lab} {s.counters[name]}")
                    out.append(f"{tok}_count{lab} {s.counters.get('successes', 0)}")
        cost = "llmrelay_cost_usd_total"
        rows = [
            f"{cost}{_labels(provider=s.provider, model=s.model, deployment=s.deployment)}"
            f" {s.cost_usd!r}"
            for s in snap.series
            if COST_COUNTER in s.counters
        ]
        if rows:
            out.append(f"# HELP {cost} What the calls cost in USD, from the price table.")
            out.append(f"# TYPE {cost} counter")
            out.extend(rows)
        counters: dict[str, list[str]] = {}
        for s in snap.series:
            for name, value in sorted(s.counters.items()):
                if name == COST_COUNTER:
                    continue
                metric, _, sub = name.partition(".")
                extra: dict[str, str] = {}
                if metric == "failures" and sub:
                    extra["error_type"] = sub
                elif sub:
                    extra["tier"] = sub
                lab = _labels(provider=s.provider, model=s.model, deployment=s.deployment, **extra)
                counters.setdefault(f"llmrelay_{metric}_total", []).append(f"{lab} {value}")
        for metric, rows in sorted(counters.items()):
            out.append(f"# TYPE {metric} counter")
            out.extend(f"{metric}{row}" for row in rows)
        for hname, metric in (("ttft", "time_to_first_token"), ("queue_wait", "queue_wait")):
            full = f"llmrelay_{metric}_seconds"
            rows = []
            for s in snap.series:
                h = s.histograms.get(hname)
                if not h:
                    continue
                base = {"provider": s.provider, "model": s.model, "deployment": s.deployment}
                for q in ("p50", "p95", "p99"):
                    quant = "0." + q[1:]
                    rows.append(f"{full}{_labels(**base, quantile=quant)} {h[q + '_s']}")
                rows.append(f"{full}_sum{_labels(**base)} {h['sum_s']}")
                rows.append(f"{full}_count{_labels(**base)} {int(h['count'])}")
            if rows:
                out.append(f"# TYPE {full} summary")
                out.extend(rows)
        state_code = {"closed": 0, "half_open": 1, "open": 2}
        if snap.breakers:
            out.append("# HELP llmrelay_breaker_state 0 closed, 1 half open, 2 open.")
            out.append("# TYPE llmrelay_breaker_state gauge")
            for dep, b in sorted(snap.breakers.items()):
                code = state_code.get(str(b.get("state")), -1)
                out.append(f"llmrelay_breaker_state{_labels(deployment=dep)} {code}")
            out.append("# TYPE llmrelay_breaker_transitions_total counter")
            for dep, b in sorted(snap.breakers.items()):
                for tr, n in sorted(dict(b.get("transitions", {})).items()):
                    src, _, dst = tr.partition("->")
                    lab = _labels(deployment=dep, **{"from": src, "to": dst})
                    out.append(f"llmrelay_breaker_transitions_total{lab} {n}")
        if snap.concurrency:
            out.append("# TYPE llmrelay_concurrency_limit gauge")
            for dep, c in sorted(snap.concurrency.items()):
                out.append(f"llmrelay_concurrency_limit{_labels(deployment=dep)} {c['limit']}")
            out.append("# TYPE llmrelay_in_flight gauge")
            for dep, c in sorted(snap.concurrency.items()):
                out.append(f"llmrelay_in_flight{_labels(deployment=dep)} {c['in_flight']}")
        if snap.cache:
            out.append("# TYPE llmrelay_cache gauge")
            for k, v in sorted(snap.cache.items()):
                out.append(f"llmrelay_cache{_labels(stat=k)} {v}")
        pid = snap.shared.get("pid")
        if pid is not None:
            # many processes share the state: keep each one's samples apart
            out = [_with_pid(line, str(pid)) for line in out]
        out.extend(_shared_lines(snap.shared))
        return "\n".join(out) + "\n"


def _with_pid(line: str, pid: str) -> str:
    """A sample line with ``pid`` as its first label (comments are left alone)."""
    if line.startswith("#"):
        return line
    cut = min((i for i in (line.find("{"), line.find(" ")) if i >= 0), default=len(line))
    name, rest = line[:cut], line[cut:]
    if rest.startswith("{"):
        sep = "" if rest.startswith("{}") else ","
        return f'{name}{{pid="{_esc(pid)}"{sep}{rest[1:]}'
    return f'{name}{{pid="{_esc(pid)}"}}{rest}'


#: The shared state's numbers exported to Prometheus, as (stat, metric type).
_SHARED_STATS = (
    ("connected", "gauge"),
    ("degraded", "gauge"),
    ("live_processes", "gauge"),
    ("ok", "counter"),
    ("timeouts", "counter"),
    ("unavailable", "counter"),
    ("script_errors", "counter"),
    ("script_loads", "counter"),
    ("connects", "counter"),
    ("fallback_calls", "counter"),
    ("degraded_episodes", "counter"),
    ("reservations", "counter"),
    ("refusals", "counter"),
    ("refunds", "counter"),
    ("reconciles", "counter"),
    ("pauses", "counter"),
    # local usage charged back after a local_share episode (docs/scaleout.md)
    ("chargebacks", "counter"),
    ("units_charged_back", "counter"),
    ("chargeback_failures", "counter"),
    ("units_owed", "gauge"),
    # leased mode
    ("leases_taken", "counter"),
    ("leases_returned", "counter"),
    ("local_admissions", "counter"),
    ("lease_calls", "counter"),
)


def _shared_lines(shared: dict[str, Any]) -> list[str]:
    """``llmrelay_shared_*`` lines, labelled with the process id (metrics are per process:
    a scrape of several workers keeps them apart)."""
    if "connected" not in shared:
        return []
    pid = str(shared.get("pid", ""))
    out: list[str] = []
    for stat, kind in _SHARED_STATS:
        name = f"llmrelay_shared_{stat}" + ("_total" if kind == "counter" else "")
        out.append(f"# TYPE {name} {kind}")
        out.append(f"{name}{_labels(pid=pid)} {float(shared.get(stat, 0))}")
    return out
