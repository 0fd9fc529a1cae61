"""For the Prometheus/Grafana stack: alerting rules from a plan's guards, and a dashboard of the exported series.

Alerting across many watchers is Alertmanager's job, not rollout's: ``rollout prometheus-rules PLAN`` writes
one rule per guard (its breach state), plus the rules every watch needs (blind tail, no data, an
unverified rollback, the exporter gone).  ``rollout grafana`` writes a dashboard whose every expression is
listed in :data:`PANELS`, so a test can evaluate each one against a real Prometheus scraping a watch.

Both are plain JSON.  YAML is a superset of JSON, so Prometheus and ``promtool check rules`` read the rules
file as it is, and no YAML library is needed; Grafana imports the dashboard JSON directly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .guards import Guard

_SEVERITY = {"rollback": "critical", "alert": "warning", "warn": "info"}


def _alert_name(guard: str) -> str:
    words = re.split(r"[^A-Za-z0-9]+", guard)
    return "RolloutGuardBreach" + "".join(w[:1].upper() + w[1:] for w in words if w)


def _label(value: str) -> str:
    """A PromQL string literal."""
    return json.dumps(value)


def _guard_rule(guard: Guard) -> dict[str, Any]:
    return {
        "alert": _alert_name(guard.name),
        "expr": f"max by (worker) (rollout_guard_state{{guard={_label(guard.name)}, state=\"breach\"}}) == 1",
        "labels": {"severity": _SEVERITY.get(guard.action, "warning"), "guard": guard.name, "action": guard.action},
        "annotations": {
            "summary": f"{guard.name} breached on {{{{ $labels.worker }}}}",
            "description": (f"rollout judged {guard.name} in breach on {{{{ $labels.worker }}}} (action "
                            f"{guard.action}); see rollout_guard_value and the watch's journal"),
        },
    }


def prometheus_rules(guards: Sequence[Guard], *, job: str = "rollout", blind_for: str = "2m",
                     no_data_for: str = "10m") -> dict[str, Any]:
    """A Prometheus rule file (as a dict) for these guards and for the watch itself."""
    rules: list[dict[str, Any]] = [_guard_rule(guard) for guard in guards]
    rules += [
        {"alert": "RolloutTailBlind",
         "expr": "max by (worker) (rollout_tail_connected) == 0", "for": blind_for,
         "labels": {"severity": "warning"},
         "annotations": {"summary": "tail of {{ $labels.worker }} is blind",
                         "description": "no tail stream: the guards cannot see; nothing about this worker is known"}},
        {"alert": "RolloutGuardNoData",
         "expr": "max by (worker, guard) (rollout_guard_state{state=\"no_data\"}) == 1", "for": no_data_for,
         "labels": {"severity": "warning"},
         "annotations": {"summary": "{{ $labels.guard }} on {{ $labels.worker }} has no data",
                         "description": "no requests in the guard's window: health is not observed"}},
        {"alert": "RolloutRollbackUnverified",
         "expr": "sum by (worker) (increase(rollout_rollbacks_total{result=\"unverified\"}[15m])) > 0",
         "labels": {"severity": "critical"},
         "annotations": {"summary": "a rollback of {{ $labels.worker }} is NOT verified",
                         "description": "act by hand: wrangler deployments status --name {{ $labels.worker }}"}},
        {"alert": "RolloutExporterDown",
         "expr": f"up{{job={_label(job)}}} == 0", "for": "2m",
         "labels": {"severity": "warning"},
         "annotations": {"summary": "rollout's metrics at {{ $labels.instance }} cannot be scraped",
                         "description": "the watch is gone or unreachable: nothing is being watched"}},
    ]
    return {"groups": [{"name": "rollout", "rules": rules}]}


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    expr: str
    unit: str = "short"
    legend: str = "{{worker}}"
    kind: str = "timeseries"


#: Every panel of the dashboard: each expression is evaluated by the test against a real Prometheus.
PANELS: tuple[Panel, ...] = (
    Panel("Requests per second (tail)", "sum by (worker) (rate(rollout_requests_total[1m]))", "reqps"),
    Panel("Error ratio vs baseline", "max by (worker) (rollout_error_ratio)", "percentunit"),
    Panel("Baseline error ratio", "max by (worker) (rollout_baseline_error_ratio)", "percentunit"),
    Panel("Guard state (1 = current)", "max by (worker, guard, state) (rollout_guard_state)", "short",
          "{{worker}} {{guard}} {{state}}", "state-timeline"),
    Panel("Guard value against its threshold", "max by (worker, guard) (rollout_guard_value)", "short",
          "{{worker}} {{guard}}"),
    Panel("Guard thresholds", "max by (worker, guard) (rollout_guard_threshold)", "short", "{{worker}} {{guard}}"),
    Panel("Log patterns per hour", "max by (worker, pattern) (rollout_log_pattern_per_hour)", "short",
          "{{worker}} {{pattern}}"),
    Panel("Tail connected", "max by (worker) (rollout_tail_connected)", "bool", "{{worker}}", "state-timeline"),
    Panel("Blind seconds per minute", "sum by (worker) (increase(rollout_tail_blind_seconds_total[1m]))", "s"),
    Panel("Tail reconnects (1h)", "sum by (worker) (increase(rollout_tail_reconnects_total[1h]))"),
    Panel("Tail sampled share", "max by (worker) (rollout_tail_sampled_ratio)", "percentunit"),
    Panel("Parse errors (1h)", "sum by (worker) (increase(rollout_tail_parse_errors_total[1h]))"),
    Panel("Breaches (24h)", "sum by (worker, guard) (increase(rollout_breaches_total[24h]))", "short",
          "{{worker}} {{guard}}"),
    Panel("Rollbacks (24h)", "sum by (worker, result) (increase(rollout_rollbacks_total[24h]))", "short",
          "{{worker}} {{result}}"),
    Panel("Watch time remaining", "max(rollout_watch_remaining_seconds)", "s", "remaining", "stat"),
)


def grafana_dashboard(*, title: str = "rollout", datasource: str = "${DS_PROMETHEUS}") -> dict[str, Any]:
    """A Grafana dashboard (JSON model) with one panel per entry of :data:`PANELS`, two per row."""
    panels = []
    for index, panel in enumerate(PANELS):
        panels.append({
            "id": index + 1,
            "type": panel.kind,
            "title": panel.title,
            "datasource": {"type": "prometheus", "uid": datasource},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
            "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
            "targets": [{"refId": "A", "expr": panel.expr, "legendFormat": panel.legend,
                         "datasource": {"type": "prometheus", "uid": datasource}}],
        })
    return {
        "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                      "pluginId": "prometheus", "pluginName": "Prometheus"}],
        "title": title,
        "uid": "rollout-watch",
        "tags": ["rollout", "cloudflare-workers"],
        "timezone": "utc",
        "schemaVersion": 39,
        "refresh": "10s",
        "time": {"from": "now-6h", "to": "now"},
        "panels": panels,
    }
