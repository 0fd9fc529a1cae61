"""A local simulator of the part of Cloudflare that wrangler talks to.

``async with Simulator(scenario="bad-release") as sim:`` serves the Cloudflare API subset under
``sim.api_base_url``, tail WebSockets, and an edge at ``sim.edge_url`` that serves the deployed
workers and generates traffic per the scenario.  ``rollout sim`` runs it from the shell.
"""

from rollout.sim._api import ApiCall
from rollout.sim._tail import TailStats
from rollout.sim.scenario import (
    ApiFault,
    Behaviour,
    LogLine,
    Route,
    Scenario,
    TailFaults,
    WorkerSpec,
    load_scenario,
    shipped_scenarios,
)
from rollout.sim.simulator import DeploymentInfo, Simulator, VersionInfo

__all__ = [
    "ApiCall",
    "ApiFault",
    "Behaviour",
    "DeploymentInfo",
    "LogLine",
    "Route",
    "Scenario",
    "Simulator",
    "TailFaults",
    "TailStats",
    "VersionInfo",
    "WorkerSpec",
    "load_scenario",
    "shipped_scenarios",
]
