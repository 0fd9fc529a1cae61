"""Where a plan runs: Cloudflare itself, or the local simulator.  Plans never hard-code either.

Probe URLs are written against a worker name and a path; the target turns them into a URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import UsageError


@dataclass(frozen=True)
class Target:
    """The account wrangler talks to and the way to reach the workers' HTTP routes.

    Args:
        name: ``"cloudflare"`` or ``"simulator"``; shown in reports.
        env: variables for every wrangler subprocess (token, account, API base URL).
        edge_url: the simulator's edge; worker routes are served at ``{edge_url}/{worker}{path}``.
        workers_subdomain: the account's workers.dev subdomain, for Cloudflare.
        routes: explicit base URLs per worker (custom domains), which win over the rest.
    """

    name: str
    env: Mapping[str, str] = field(default_factory=dict)
    edge_url: str | None = None
    workers_subdomain: str | None = None
    routes: Mapping[str, str] = field(default_factory=dict)

    @property
    def api_base(self) -> str | None:
        return self.env.get("CLOUDFLARE_API_BASE_URL")

    @property
    def is_simulator(self) -> bool:
        return self.name == "simulator"

    def url(self, worker: str, path: str = "/") -> str:
        """The URL of ``path`` on ``worker``."""
        if not path.startswith("/"):
            path = "/" + path
        if worker in self.routes:
            return self.routes[worker].rstrip("/") + path
        if self.edge_url:
            return f"{self.edge_url.rstrip('/')}/{worker}{path}"
        if self.workers_subdomain:
            return f"https://{worker}.{self.workers_subdomain}.workers.dev{path}"
        raise UsageError(
            f"cannot build a URL for worker {worker!r}: set ROLLOUT_WORKERS_SUBDOMAIN (your workers.dev "
            "subdomain) or give the plan explicit routes"
        )

    @classmethod
    def simulator(cls, env: Mapping[str, str]) -> Target:
        return cls(name="simulator", env=dict(env), edge_url=env.get("ROLLOUT_EDGE_URL"))

    @classmethod
    def from_api_base(cls, api_base: str, environ: Mapping[str, str] | None = None) -> Target:
        """A running simulator given by ``--api-base`` (its edge from ROLLOUT_EDGE_URL or derived).

        Raises:
            UsageError: ``CLOUDFLARE_ACCOUNT_ID`` is not set.  There is no default account: a made-up one
                makes every call of a real simulator answer 404, and a watch then sits blind all night.
        """
        environ = os.environ if environ is None else environ
        account = environ.get("CLOUDFLARE_ACCOUNT_ID") or environ.get("CF_ACCOUNT_ID")
        if not account:
            raise UsageError(
                f"--api-base {api_base} needs CLOUDFLARE_ACCOUNT_ID: export the variables `rollout sim` "
                "printed when it started (CLOUDFLARE_ACCOUNT_ID=…, CLOUDFLARE_API_TOKEN=…), or pass --sim to "
                "start a simulator here"
            )
        env = {
            "CLOUDFLARE_API_BASE_URL": api_base,
            "CLOUDFLARE_ACCOUNT_ID": account,
            "CLOUDFLARE_API_TOKEN": environ.get("CLOUDFLARE_API_TOKEN", "rollout-sim-token"),
        }
        edge = environ.get("ROLLOUT_EDGE_URL")
        if edge:
            env["ROLLOUT_EDGE_URL"] = edge
        return cls(name="simulator", env=env, edge_url=edge)

    @classmethod
    def cloudflare(cls, environ: Mapping[str, str] | None = None) -> Target:
        """Cloudflare itself, with the token and account from the environment."""
        environ = os.environ if environ is None else environ
        missing = [name for name in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID") if not environ.get(name)]
        if missing:
            raise UsageError(
                f"{' and '.join(missing)} not set: export them to run against Cloudflare, or pass --sim to "
                "rehearse against the local simulator"
            )
        env = {name: environ[name] for name in ("CLOUDFLARE_API_TOKEN", "CLOUDFLARE_ACCOUNT_ID")}
        return cls(name="cloudflare", env=env, workers_subdomain=environ.get("ROLLOUT_WORKERS_SUBDOMAIN"))
