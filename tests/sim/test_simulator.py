"""The simulator without wrangler: API envelope, edge, scenarios, faults, tails, persistence, CLI."""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect

from rollout.errors import ScenarioError, SimulatorError
from rollout.sim import ApiFault, Simulator, load_scenario, shipped_scenarios
from rollout.sim._ws import FrameParser, accept_key, encode_frame

SCRIPT = b'export default { fetch() { return new Response("hi"); } };\n'


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def upload_and_deploy(client: httpx.AsyncClient, sim: Simulator, worker: str) -> str:
    """Upload a version over the API (multipart, like wrangler) and deploy it at 100%."""
    base = f"{sim.api_base_url}/accounts/{sim.account_id}/workers/scripts/{worker}"
    metadata = {"main_module": "index.js", "bindings": [], "compatibility_date": "2026-04-01"}
    files: dict[str, tuple[str | None, bytes, str]] = {
        "metadata": (None, json.dumps(metadata).encode(), "application/json"),
        "index.js": ("index.js", SCRIPT, "application/javascript+module"),
    }
    response = await client.post(f"{base}/versions", files=files)
    assert response.json()["success"], response.text
    version_id = str(response.json()["result"]["id"])
    body = {"strategy": "percentage", "versions": [{"version_id": version_id, "percentage": 100}]}
    response = await client.post(f"{base}/deployments", content=json.dumps(body),
                                 headers={"content-type": "text/plain;charset=UTF-8"})
    assert response.json()["success"], response.text
    return version_id


async def open_tail(client: httpx.AsyncClient, sim: Simulator, worker: str,
                    filters: list[dict[str, Any]] | None = None) -> str:
    url = f"{sim.api_base_url}/accounts/{sim.account_id}/workers/scripts/{worker}/tails"
    response = await client.post(url, content=json.dumps({"filters": filters or []}))
    result = response.json()["result"]
    assert set(result) == {"id", "url", "expires_at"}
    return str(result["url"])


def test_refuses_non_loopback_unless_explicit() -> None:
    """Binding elsewhere than loopback needs allow_remote (the CLI's explicit --host)."""
    with pytest.raises(SimulatorError, match="refusing to bind"):
        Simulator(host="0.0.0.0")
    Simulator(host="0.0.0.0", allow_remote=True)
    Simulator(host="::1")


async def test_unknown_api_call_is_a_404_envelope_naming_the_path() -> None:
    """Calls the simulator does not implement fail loudly, in Cloudflare's envelope."""
    async with Simulator(traffic_rate=0) as sim, httpx.AsyncClient() as client:
        response = await client.get(f"{sim.api_base_url}/accounts/{sim.account_id}/workers/dispatch/namespaces")
        assert response.status_code == 404
        body = response.json()
        assert body["success"] is False
        assert body["result"] is None
        assert body["messages"] == []
        assert body["errors"][0]["code"] == 7003
        assert f"GET /client/v4/accounts/{sim.account_id}/workers/dispatch/namespaces" in body["errors"][0]["message"]
        assert sim.api_calls()[-1].operation == "unknown"


async def test_whoami_and_missing_worker_envelopes() -> None:
    async with Simulator(traffic_rate=0) as sim, httpx.AsyncClient() as client:
        me = (await client.get(f"{sim.api_base_url}/memberships")).json()
        assert me["result"][0]["account"]["id"] == sim.account_id
        missing = await client.get(f"{sim.api_base_url}/accounts/{sim.account_id}/workers/services/nope")
        assert missing.status_code == 404
        assert missing.json()["errors"][0]["code"] == 10090


async def test_edge_serves_the_scenario_routes() -> None:
    """/health, the m3u8 manifest, POST /cue, Host-header routing and unknown workers."""
    async with Simulator("healthy", traffic_rate=0) as sim, httpx.AsyncClient() as client:
        edge = sim.edge_url
        health = await client.get(f"{edge}/cf-ssai/health")
        assert (health.status_code, health.text) == (200, "ok")
        assert health.headers["x-rollout-sim-version"] == sim.active_versions("cf-ssai")[0][0]
        manifest = await client.get(f"{edge}/cf-ssai/demo/sports1/master.m3u8")
        assert manifest.text.startswith("#EXTM3U")
        assert "mpegurl" in manifest.headers["content-type"]
        cue = await client.post(f"{edge}/cf-ssai/cue", json={"channel": "sports1", "duration": 30})
        assert cue.json()["ok"] is True
        by_host = await client.get(f"{edge}/health", headers={"host": "cf-ssai-decision.example.test"})
        assert by_host.text == "ok"
        assert (await client.get(f"{edge}/nope/health")).status_code == 404


async def test_bad_release_fault_onset_follows_the_clock() -> None:
    """Version 2 of cf-ssai fails ~30% from 5 s after it takes traffic; the onset is recorded."""
    clock = FakeClock()
    async with Simulator("bad-release", traffic_rate=0, clock=clock) as sim, httpx.AsyncClient() as client:
        sim.generate("cf-ssai", 200)
        assert sim.first_fault_onset() is None
        v2 = await upload_and_deploy(client, sim, "cf-ssai")
        clock.now += 4
        sim.generate("cf-ssai", 200)
        assert sim.first_fault_onset() is None
        clock.now += 2
        statuses = [(await client.get(f"{sim.edge_url}/cf-ssai/health")).status_code for _ in range(60)]
        assert sim.first_fault_onset() == clock.now
        assert 5 <= statuses.count(500) <= 35
        assert sim.active_versions("cf-ssai") == [(v2, 100.0)]


async def test_tail_events_filters_and_churn_rate() -> None:
    """Trace items carry the §4 fields; churn-storm logs DO Instance Churn far above 50/hour."""
    clock = FakeClock()
    async with Simulator("churn-storm", traffic_rate=0, clock=clock) as sim, httpx.AsyncClient() as client:
        await upload_and_deploy(client, sim, "cf-ssai")
        clock.now += 10
        url = await open_tail(client, sim, "cf-ssai", [{"outcome": ["ok"]}])
        async with connect(url, subprotocols=["trace-v1"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "trace-v1"
            await ws.send('{"debug":false}')
            pong = await ws.ping(b"wrangler tail ping")
            with anyio.fail_after(5):
                await pong
            for _ in range(200):  # 10 simulated seconds at 20 requests/s
                clock.now += 0.05
                sim.generate("cf-ssai", 1)
            events = [json.loads(await ws.recv()) for _ in range(200)]
        first = events[0]
        assert list(first)[:6] == ["wallTime", "cpuTime", "truncated", "executionModel", "outcome", "scriptName"]
        assert first["event"]["request"]["cf"]["colo"]
        assert first["scriptVersion"]["id"]
        churn = sum("DO Instance Churn" in log["message"][0] for e in events for log in e["logs"])
        assert churn / 10 * 3600 > 50 * 10  # per hour, at least ten times the runbook's alert line


async def test_tail_sampling_notices_and_expiry() -> None:
    """Sampling sends overload/overload-stop in-band; an expired tail goes silent but stays open."""
    scenario = load_scenario("healthy")
    tail = replace(scenario.tail, sampling_after=0.3, sampling_for=0.4, expire_after=1.5)
    async with Simulator(replace(scenario, tail=tail), traffic_rate=100) as sim, httpx.AsyncClient() as client:
        url = await open_tail(client, sim, "cf-ssai-decision")
        types: list[str] = []
        async with connect(url, subprotocols=["trace-v1"]) as ws:  # type: ignore[list-item]
            with anyio.move_on_after(3):
                async for message in ws:
                    event = json.loads(message)["event"]
                    types.append(event.get("type", "fetch"))
            assert ws.state.name == "OPEN"
        assert types.index("overload") < types.index("overload-stop")
        assert sim.tail_stats().withheld > 0
        # 100 req/s for ~1.5 s before expiry, nothing after: far fewer than 3 s worth
        assert 50 < types.count("fetch") < 200


async def test_state_survives_a_restart(tmp_path: Path) -> None:
    """With state_path, versions and deployments come back; the pre-seed is not repeated."""
    db = tmp_path / "sim.sqlite"
    async with Simulator("healthy", state_path=db, traffic_rate=0) as sim, httpx.AsyncClient() as client:
        v2 = await upload_and_deploy(client, sim, "cf-ssai-beacon")
    async with Simulator("healthy", state_path=db, traffic_rate=0) as sim:
        assert [v.number for v in sim.versions("cf-ssai-beacon")] == [1, 2]
        assert sim.active_versions("cf-ssai-beacon") == [(v2, 100.0)]
        assert len(sim.deployments("cf-ssai")) == 1


def test_shipped_scenarios_load() -> None:
    assert {"healthy", "bad-release", "churn-storm", "flaky-api"} <= set(shipped_scenarios())
    flaky = load_scenario("flaky-api")
    assert flaky.tail.drop_every == 10.0
    assert flaky.api_faults[0].times == 2
    assert flaky.workers["cf-ssai"].behaviour_for(2).error_rate == 0.30
    assert set(flaky.workers) == {"cf-ssai", "cf-ssai-decision", "cf-ssai-beacon", "cf-ssai-vast-parser"}


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[workers.w]\ntraffic_rate = "fast"\n', "workers.w.traffic_rate"),
        ("[workers.w.versions.2]\nerror_rate = 1.5\n", "workers.w.versions.2.error_rate"),
        ("[workers.w.versions.second]\n", "workers.w.versions.second"),
        ('[[faults.api]]\ncode = 7003\n', "faults.api[0].call"),
        ('[faults.tail]\ndrop_mode = "explode"\n', "faults.tail.drop_mode"),
        ("[workers.w]\nerror_rat = 0.1\n", "workers.w.error_rat"),
    ],
)
def test_bad_scenario_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(path) in str(info.value)
    assert f"field {field}" in str(info.value)


def test_bad_scenario_references(tmp_path: Path) -> None:
    (tmp_path / "broken.toml").write_text("name = ")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(tmp_path / "broken.toml")
    with pytest.raises(ScenarioError, match="no such shipped scenario"):
        load_scenario("no-such-scenario")


def test_frame_codec_accepts_masked_and_unmasked_frames() -> None:
    """wrangler's first frame is unmasked; RFC clients mask.  Both decode, also split across reads."""
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    unmasked = encode_frame(0x1, b'{"debug":false}')
    mask = b"\x01\x02\x03\x04"
    payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"wrangler tail ping"))
    masked = bytes([0x89, 0x80 | len(payload)]) + mask + payload
    parser = FrameParser()
    frames = parser.feed(unmasked + masked[:5]) + parser.feed(masked[5:])
    assert [(f.opcode, f.payload, f.masked) for f in frames] == [
        (0x1, b'{"debug":false}', False), (0x9, b"wrangler tail ping", True),
    ]


async def test_cli_prints_the_environment_first() -> None:
    """``python -m rollout.sim`` prints the four KEY=value lines first and stops on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PROXY")}
    process = await anyio.open_process(
        [sys.executable, "-m", "rollout.sim", "--scenario", "healthy", "--traffic-rate", "0"], env=env,
    )
    async with process:
        assert process.stdout is not None
        text = ""
        with anyio.fail_after(20):
            while text.count("\n") < 4:
                try:
                    text += (await process.stdout.receive()).decode()
                except anyio.EndOfStream:
                    assert process.stderr is not None
                    errors = b"".join([chunk async for chunk in process.stderr]).decode()
                    pytest.fail(f"rollout sim exited early:\n{text}{errors}")
        lines = text.splitlines()[:4]
        keys = [line.split("=", 1)[0] for line in lines]
        assert keys == ["CLOUDFLARE_API_BASE_URL", "CLOUDFLARE_ACCOUNT_ID", "CLOUDFLARE_API_TOKEN", "ROLLOUT_EDGE_URL"]
        values = dict(line.split("=", 1) for line in lines)
        assert values["CLOUDFLARE_API_BASE_URL"].startswith("http://127.0.0.1:")
        async with httpx.AsyncClient() as client:
            await client.get(values["CLOUDFLARE_API_BASE_URL"] + "/user")
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            assert await process.wait() == 0
        rest = b""
        async for chunk in process.stdout:
            rest += chunk
        assert b"API GET /user -> 200" in rest


async def test_slow_api_fault() -> None:
    """A fault with only a delay slows the call down and lets it succeed."""
    scenario = replace(load_scenario("healthy"), api_faults=(ApiFault(call="whoami", delay=0.3, fail=False),))
    async with Simulator(scenario, traffic_rate=0) as sim, httpx.AsyncClient() as client:
        started = anyio.current_time()
        response = await client.get(f"{sim.api_base_url}/user")
        assert anyio.current_time() - started >= 0.3
        assert response.json()["success"] is True


async def test_deploys_restart_durable_objects_in_a_wave() -> None:
    """do-reset: a full traffic move restarts all 40 Durable Objects over 20 s, each logging churn once; a
    move of half the traffic restarts half of them, on the version that gained it; the pre-seeded deployment
    moves nothing."""
    clock = FakeClock()
    async with Simulator("do-reset", traffic_rate=0, clock=clock) as sim, httpx.AsyncClient() as client:
        url = await open_tail(client, sim, "cf-ssai")
        wave_versions: set[str] = set()

        async def churn_over(seconds: float) -> list[int]:
            """Serve 2 requests per simulated second; the wave's churn lines seen in each 5 s slice."""
            slices = []
            for _ in range(int(seconds / 5)):
                for _ in range(10):
                    clock.now += 0.5
                    sim.generate("cf-ssai", 1)
                events = [json.loads(await ws.recv()) for _ in range(10)]
                slices.append(sum("reason=version change" in log["message"][0]
                                  for e in events for log in e["logs"]))
                wave_versions.update(e["scriptVersion"]["id"] for e in events
                                     if any("reason=version change" in log["message"][0] for log in e["logs"]))
            return slices

        async with connect(url, subprotocols=["trace-v1"]) as ws:  # type: ignore[list-item]
            await ws.send('{"debug":false}')
            assert await churn_over(10) == [0, 0]  # the pre-seed is not a move
            v1 = sim.active_versions("cf-ssai")[0][0]
            v2 = await upload_and_deploy(client, sim, "cf-ssai")
            full = await churn_over(30)
            assert sum(full) == 40
            assert all(8 <= n <= 12 for n in full[:4]) and full[4:] == [0, 0]  # spread evenly over 20 s
            base = f"{sim.api_base_url}/accounts/{sim.account_id}/workers/scripts/cf-ssai/deployments"
            body = {"strategy": "percentage",
                    "versions": [{"version_id": v1, "percentage": 50}, {"version_id": v2, "percentage": 50}]}
            response = await client.post(base, content=json.dumps(body))
            assert response.json()["success"], response.text
            wave_versions.clear()
            assert sum(await churn_over(30)) == 20
            assert wave_versions == {v1}  # the objects that restart are the ones serving the version that gained


def test_durable_objects_table_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "do.toml"
    path.write_text("[workers.w.durable_objects]\ninstances = 4\nwave_s = 0\n")
    with pytest.raises(ScenarioError, match="field workers.w.durable_objects.wave_s"):
        load_scenario(path)
    path.write_text('[workers.w.durable_objects]\ninstances = 4\n[[workers.w.durable_objects.reset_logs]]\n'
                    'message = "x"\nper_hour = 3\n')
    with pytest.raises(ScenarioError, match=r"reset_logs\[0\].per_hour"):
        load_scenario(path)
    spec = load_scenario("do-reset").workers["cf-ssai"].durable_objects
    assert spec is not None and (spec.instances, spec.wave_s) == (40, 20.0)
