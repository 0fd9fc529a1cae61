"""The real wrangler (4.164.0 and 4.86.0) against the simulator."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from rollout.sim import ApiFault, Simulator, load_scenario

from .helpers import EXAMPLES, WRANGLER_VERSIONS, Wrangler, json_stream

pytestmark = [pytest.mark.wrangler, pytest.mark.slow]

WORKER = "cf-ssai-vast-parser"


@pytest.mark.parametrize("version", WRANGLER_VERSIONS)
async def test_deploy_split_traffic_and_rollback(version: str, project: Path, home: Path) -> None:
    """deploy makes version 2 live at 100%; a 90/10 split routes traffic; rollback restores version 2."""
    async with Simulator("healthy", traffic_rate=0) as sim:
        w = Wrangler(version, sim.env(), project, home)
        result = await w.run("deploy")
        assert result.returncode == 0, result.stderr
        v1, v2 = sim.versions(WORKER)
        assert v2.number == 2
        assert f"Current Version ID: {v2.id}" in result.stdout
        assert sim.active_versions(WORKER) == [(v2.id, 100.0)]

        result = await w.run("versions", "upload", "--message", "canary build", "--tag", "v3")
        assert result.returncode == 0, result.stderr
        v3 = sim.versions(WORKER)[2]
        assert f"Worker Version ID: {v3.id}" in result.stdout
        assert sim.active_versions(WORKER) == [(v2.id, 100.0)]

        result = await w.run("versions", "deploy", f"{v2.id}@90", f"{v3.id}@10", "-y", "--name", WORKER)
        assert result.returncode == 0, result.stderr
        assert sim.active_versions(WORKER) == [(v2.id, 90.0), (v3.id, 10.0)]
        served = sim.generate(WORKER, 2000)
        assert abs(served[v3.id] / 2000 * 100 - 10) <= 3
        assert served[v2.id] + served[v3.id] == 2000

        result = await w.run("rollback", "--name", WORKER, "--message", "bad canary", "-y")
        assert result.returncode == 0, result.stderr
        assert f"Worker Version {v2.id} has been deployed to 100% of traffic" in result.stdout
        assert sim.active_versions(WORKER) == [(v2.id, 100.0)]
        commands = [c.command for c in sim.api_calls() if c.operation == "deployment-create"]
        assert commands == ["deploy", "versions-deploy", "rollback"]
        assert v1.id not in dict(sim.active_versions(WORKER))


@pytest.mark.parametrize("version", WRANGLER_VERSIONS)
async def test_tail_json_delivers_events_of_active_versions(version: str, project: Path, home: Path) -> None:
    """Every tailed event names the live version in scriptVersion.id; SIGTERM ends wrangler with 0."""
    async with Simulator("healthy", traffic_rate=30) as sim:
        w = Wrangler(version, sim.env(), project, home)
        (live, _), = sim.active_versions("cf-ssai")
        result = await w.tail("cf-ssai", lambda out: out.count('"scriptVersion"') >= 20, within=20)
        events = json_stream(result.stdout)
        assert len(events) >= 20, result.stderr
        assert {e["scriptVersion"]["id"] for e in events} == {live}
        assert all(e["scriptName"] == "cf-ssai" and e["event"]["response"]["status"] == 200 for e in events)
        assert result.returncode == 0
        deletes = [c for c in sim.api_calls() if c.operation == "tail-delete"]
        # 4.86.0 exits on SIGTERM without deleting its tail (orphaned); 4.164.0 deletes it first.
        assert len(deletes) == (0 if version == "4.86.0" else 1)
        assert sim.tail_stats().unmasked_frames >= 1


@pytest.mark.parametrize("version", WRANGLER_VERSIONS)
async def test_dropped_tail_socket(version: str, project: Path, home: Path) -> None:
    """4.86.0 deletes the tail and exits 0 when the socket drops; 4.164.0 reconnects with a new tail."""
    scenario = load_scenario("healthy")
    scenario = replace(scenario, tail=replace(scenario.tail, drop_every=1.5))
    async with Simulator(scenario, traffic_rate=10) as sim:
        w = Wrangler(version, sim.env(), project, home)

        def creates() -> int:
            return sum(c.operation == "tail-create" for c in sim.api_calls())

        result = await w.tail("cf-ssai", lambda out: creates() >= 2, within=12)
        ops = [c.operation for c in sim.api_calls()]
        if version == "4.86.0":
            assert result.returncode == 0
            assert ops == ["tail-create", "tail-delete"]
            assert "Reconnecting" not in result.stderr
        else:
            assert ops[:3] == ["tail-create", "tail-delete", "tail-create"]
            assert "Tail connection lost. Reconnecting" in result.stderr
        assert json_stream(result.stdout)


@pytest.mark.parametrize("version", WRANGLER_VERSIONS)
async def test_injected_api_error_reaches_wrangler(version: str, project: Path, home: Path) -> None:
    """A fault on the first deploy shows wrangler's [code: N] on stderr and a non-zero exit."""
    scenario = load_scenario("healthy")
    fault = ApiFault(call="deploy", status=400, code=7003, message="Could not route to the script")
    async with Simulator(replace(scenario, api_faults=(fault,)), traffic_rate=0) as sim:
        w = Wrangler(version, sim.env(), project, home)
        result = await w.run("deploy")
        assert result.returncode != 0
        assert "Could not route to the script [code: 7003]" in result.stderr
        assert len(sim.versions(WORKER)) == 1
        result = await w.run("deploy")  # the fault fired once; the next deploy works
        assert result.returncode == 0, result.stderr


async def test_rollback_fails_twice_then_works(project: Path, home: Path) -> None:
    """flaky-api: the first two rollbacks get a 5xx, the third takes."""
    async with Simulator("flaky-api", traffic_rate=0) as sim:
        w = Wrangler("4.164.0", sim.env(), project, home)
        assert (await w.run("deploy")).returncode == 0
        v1 = sim.versions(WORKER)[0]
        for _ in range(2):
            result = await w.run("rollback", v1.id, "--name", WORKER, "-y")
            assert result.returncode == 1
            assert "[code: 10013]" in result.stderr
        result = await w.run("rollback", v1.id, "--name", WORKER, "-y")
        assert result.returncode == 0, result.stderr
        assert sim.active_versions(WORKER) == [(v1.id, 100.0)]


async def test_deploy_that_fails_after_going_live(project: Path, home: Path) -> None:
    """A workers.dev subdomain error after the deployment: exit 1, yet the new version is live."""
    scenario = load_scenario("healthy")
    fault = ApiFault(call="account-subdomain", status=404, code=10007, message="no subdomain")
    async with Simulator(replace(scenario, api_faults=(fault,)), traffic_rate=0) as sim:
        w = Wrangler("4.86.0", sim.env(), project, home)
        result = await w.run("deploy")
        assert result.returncode == 1
        v2 = sim.versions(WORKER)[1]
        assert sim.active_versions(WORKER) == [(v2.id, 100.0)]


@pytest.mark.parametrize(
    ("version", "workers"),
    [("4.164.0", ("decision", "vast-parser", "beacon", "manifest")), ("4.86.0", ("manifest",))],
)
async def test_example_workers_deploy(version: str, workers: tuple[str, ...], tmp_path: Path, home: Path) -> None:
    """The examples/cf_ssai workers (DO, KV, queue, service bindings) deploy against the simulator."""
    async with Simulator("healthy", traffic_rate=0) as sim:
        for name in workers:
            cwd = tmp_path / name
            shutil.copytree(EXAMPLES / name, cwd)
            w = Wrangler(version, sim.env(), cwd, home)
            result = await w.run("deploy")
            assert result.returncode == 0, result.stderr
            worker = "cf-ssai" if name == "manifest" else f"cf-ssai-{name}"
            assert [v.number for v in sim.versions(worker)] == [1, 2]
        assert not [c for c in sim.api_calls() if c.operation == "unknown"]


async def test_rollback_retries_with_force_after_10220(project: Path, home: Path) -> None:
    """Code 10220 (secrets changed) makes wrangler retry the rollback with ?force=true."""
    scenario = load_scenario("healthy")
    fault = ApiFault(call="rollback", status=400, code=10220, message="The following secrets have changed: API_KEY")
    async with Simulator(replace(scenario, api_faults=(fault,)), traffic_rate=0) as sim:
        w = Wrangler("4.86.0", sim.env(), project, home)
        assert (await w.run("deploy")).returncode == 0
        v1 = sim.versions(WORKER)[0]
        result = await w.run("rollback", v1.id, "--name", WORKER, "-y")
        assert result.returncode == 0, result.stderr
        posts = [c for c in sim.api_calls() if c.operation == "deployment-create"]
        assert [(p.query, p.status) for p in posts[-2:]] == [("", 400), ("force=true", 200)]
        assert sim.active_versions(WORKER) == [(v1.id, 100.0)]
