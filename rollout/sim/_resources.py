"""The JSON shapes of the simulated API's results (what real Cloudflare returns, trimmed)."""

from __future__ import annotations

from typing import Any

from rollout.sim._state import AUTHOR_EMAIL, Deployment, Version, Worker, iso


def version_json(worker: Worker, version: Version) -> dict[str, Any]:
    return {
        "id": version.id,
        "number": version.number,
        "metadata": {
            "author_email": AUTHOR_EMAIL, "author_id": "rollout-sim", "created_on": iso(version.created_at),
            "modified_on": iso(version.created_at), "source": version.source, "has_preview": False,
        },
        "annotations": dict(version.annotations),
        "resources": {
            "bindings": version.bindings,
            "script": {
                "etag": version.etag, "handlers": version.handlers, "last_deployed_from": "wrangler",
                "named_handlers": [],
            },
            "script_runtime": {
                "compatibility_date": version.compatibility_date,
                "compatibility_flags": version.compatibility_flags, "usage_model": "standard",
                "limits": {"cpu_ms": 30000},
            },
        },
        "startup_time_ms": 7,
    }


def deployment_json(deployment: Deployment) -> dict[str, Any]:
    return {
        "id": deployment.id,
        "source": deployment.source,
        "strategy": "percentage",
        "author_email": AUTHOR_EMAIL,
        "created_on": iso(deployment.created_at),
        "annotations": dict(deployment.annotations),
        "versions": [{"version_id": v, "percentage": p} for v, p in deployment.versions],
    }


def script_json(worker: Worker) -> dict[str, Any]:
    current = worker.version(worker.active[0][0]) if worker.active else None
    return {
        "id": worker.name,
        "tag": worker.name.replace("-", "")[:32],
        "tags": list(worker.tags),
        "etag": current.etag if current else "",
        "handlers": current.handlers if current else ["fetch"],
        "compatibility_date": current.compatibility_date if current else "",
        "migration_tag": worker.migration_tag,
        "last_deployed_from": "wrangler",
        "usage_model": "standard",
        "has_modules": True,
        "created_on": iso(worker.created_at),
        "modified_on": iso(worker.deployments[-1].created_at if worker.deployments else worker.created_at),
    }


def service_json(worker: Worker) -> dict[str, Any]:
    return {
        "id": worker.name,
        "default_environment": {"environment": "production", "script": script_json(worker)},
        "created_on": iso(worker.created_at),
        "modified_on": iso(worker.created_at),
        "usage_model": "standard",
        "environments": [{"environment": "production"}],
    }


def settings_json(worker: Worker) -> dict[str, Any]:
    current = worker.version(worker.active[0][0]) if worker.active else None
    return {
        "bindings": current.bindings if current else [],
        "compatibility_date": current.compatibility_date if current else "",
        "compatibility_flags": current.compatibility_flags if current else [],
        "logpush": False,
        "placement": {},
        "tags": list(worker.tags),
        "tail_consumers": [],
        "usage_model": "standard",
        "observability": worker.settings.get("observability", {"enabled": False}),
    }


def worker_json(worker: Worker) -> dict[str, Any]:
    return {
        "id": worker.name,
        "name": worker.name,
        "subdomain": {"enabled": worker.subdomain_enabled, "previews_enabled": worker.previews_enabled},
        "observability": worker.settings.get("observability", {"enabled": False}),
        "logpush": False,
        "tags": list(worker.tags),
        "tail_consumers": [],
        "created_on": iso(worker.created_at),
        "updated_on": iso(worker.created_at),
    }
