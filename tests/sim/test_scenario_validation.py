"""Every scenario field is checked when the file loads: one line naming the file and the dotted field."""

from __future__ import annotations

import math
import os
import random
import re
import signal
import sys
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from rollout.errors import ScenarioError, SimulatorError
from rollout.sim import ApiFault, Behaviour, LogLine, Route, Simulator, WorkerSpec, load_scenario, shipped_scenarios
from rollout.sim._behaviour import MAX_LINES_PER_REQUEST, Behaviours
from rollout.sim._faults import known_calls
from rollout.sim.scenario import MAX_LOGS_PER_HOUR, MAX_TRAFFIC_RATE

README = Path(__file__).resolve().parents[2] / "README.md"

# (test id, file text, dotted field, a phrase of the problem)
BAD_FIELDS = [
    ("api-delay-nan", "[faults]\napi_delay = nan\n", "faults.api_delay", "must be a finite number, got nan"),
    ("version-rate-nan", "[workers.cf-ssai.versions.2]\nerror_rate = nan\n", "workers.cf-ssai.versions.2.error_rate",
     "must be a finite number, got nan"),
    ("rate-inf", "[traffic]\nrate = inf\n", "traffic.rate", "must be a finite number, got inf"),
    ("latency-minus-inf", "[workers.w.behaviour]\nlatency_ms = -inf\n", "workers.w.behaviour.latency_ms",
     "got -inf"),
    ("rate-1e9", "[traffic]\nrate = 1e9\n", "traffic.rate", "from 0 to 10,000 requests/s per worker, got 1e+09"),
    ("worker-rate-1e9", "[workers.w]\ntraffic_rate = 1e9\n", "workers.w.traffic_rate", "10,000 requests/s"),
    ("rate-negative", "[traffic]\nrate = -1\n", "traffic.rate", "from 0 to 10,000"),
    ("close-code-99999", "[faults.tail]\nclose_code = 99999\n", "faults.tail.close_code", "got 99999"),
    ("close-code-1005", "[faults.tail]\nclose_code = 1005\n", "faults.tail.close_code", "got 1005"),
    ("close-code-1006", "[faults.tail]\nclose_code = 1006\n", "faults.tail.close_code", "got 1006"),
    ("close-code-1015", "[faults.tail]\nclose_code = 1015\n", "faults.tail.close_code", "got 1015"),
    ("close-code-999", "[faults.tail]\nclose_code = 999\n", "faults.tail.close_code", "1000-1003"),
    ("call-typo", '[[faults.api]]\ncall = "rolback"\n', "faults.api[0].call", "did you mean 'rollback'?"),
    ("call-case", '[[faults.api]]\ncall = "Deploy"\n', "faults.api[0].call", "did you mean 'deploy'?"),
    ("times-negative", '[[faults.api]]\ncall = "rollback"\ntimes = -1\n', "faults.api[0].times",
     "at least 0 (0: every matching call from then on), got -1"),
    ("skip-negative", '[[faults.api]]\ncall = "rollback"\nskip = -2\n', "faults.api[0].skip", "at least 0"),
    ("fault-delay-negative", '[[faults.api]]\ncall = "deploy"\ndelay = -0.5\n', "faults.api[0].delay",
     "from 0 to 3,600 seconds, got -0.5"),
    ("fault-delay-huge", '[[faults.api]]\ncall = "deploy"\ndelay = 86400\n', "faults.api[0].delay", "3,600"),
    ("api-delay-negative", "[faults]\napi_delay = -1\n", "faults.api_delay", "from 0 to 3,600 seconds"),
    ("onset-negative", "[workers.w.versions.2]\nonset_after = -3\n", "workers.w.versions.2.onset_after",
     "simulated seconds, got -3"),
    ("fault-status-99", '[[faults.api]]\ncall = "deploy"\nstatus = 99\n', "faults.api[0].status",
     "from 200 to 599"),
    ("fault-status-204", '[[faults.api]]\ncall = "deploy"\nstatus = 204\n', "faults.api[0].status", "204"),
    ("route-status-600", '[[workers.w.routes]]\npath = "/"\nstatus = 600\n', "workers.w.routes[0].status",
     "got 600"),
    ("route-204-body", '[[workers.w.routes]]\npath = "/"\nstatus = 204\nbody = "x"\n', "workers.w.routes[0].body",
     "has no body"),
    ("error-status-1xx", "[workers.w.behaviour]\nerror_status = 101\n", "workers.w.behaviour.error_status",
     "1xx are not final"),
    ("fault-code-zero", '[[faults.api]]\ncall = "deploy"\ncode = 0\n', "faults.api[0].code", "got 0"),
    ("probability-1.5", '[[workers.w.behaviour.logs]]\nmessage = "m"\nprobability = 1.5\n',
     "workers.w.behaviour.logs[0].probability", "from 0 to 1, got 1.5"),
    ("error-rate-1.5", "[workers.w.versions.2]\nerror_rate = 1.5\n", "workers.w.versions.2.error_rate",
     "from 0 to 1"),
    ("sampling-keep-2", "[faults.tail]\nsampling_keep = 2\n", "faults.tail.sampling_keep", "from 0 to 1"),
    ("per-hour-and-probability", '[[workers.w.behaviour.logs]]\nmessage = "m"\nper_hour = 3\nprobability = 0.5\n',
     "workers.w.behaviour.logs[0].probability", "not both"),
    ("per-hour-huge", '[[workers.w.behaviour.logs]]\nmessage = "m"\nper_hour = 1e12\n',
     "workers.w.behaviour.logs[0].per_hour", "lines per hour"),
    ("bool-for-int", "[faults.tail]\nclose_code = true\n", "faults.tail.close_code", "expected an integer, got true"),
    ("bool-for-seed", "seed = false\n", "seed", "expected an integer, got false"),
    ("bool-for-number", "[traffic]\nrate = true\n", "traffic.rate", "expected a number, got true"),
    ("float-for-int", "[workers.w.behaviour]\nerror_status = 500.0\n", "workers.w.behaviour.error_status",
     "expected an integer, got 500.0"),
    ("string-for-number", '[workers.w]\ntraffic_rate = "fast"\n', "workers.w.traffic_rate",
     "expected a number, got 'fast'"),
    ("unknown-top-key", "trafic = 3\n", "trafic", "unknown field; did you mean traffic?"),
    ("unknown-traffic-key", "[traffic]\nrat = 5\n", "traffic.rat", "did you mean rate?"),
    ("unknown-behaviour-key", "[workers.w.behaviour]\nlatncy_ms = 5\n", "workers.w.behaviour.latncy_ms",
     "did you mean latency_ms?"),
    ("do-instances-negative", "[workers.w.durable_objects]\ninstances = -1\n",
     "workers.w.durable_objects.instances", "from 0 to 100,000"),
    ("do-wave-inf", "[workers.w.durable_objects]\ninstances = 4\nwave_s = inf\n",
     "workers.w.durable_objects.wave_s", "finite"),
    ("drop-every-tiny", "[faults.tail]\ndrop_every = 0.01\n", "faults.tail.drop_every", "0.1"),
    ("expire-after-huge", "[faults.tail]\nexpire_after = 1e9\n", "faults.tail.expire_after", "604,800"),
    ("weight-inf", '[[workers.w.routes]]\npath = "/"\nweight = inf\n', "workers.w.routes[0].weight", "finite"),
    ("method-typo", '[[workers.w.routes]]\npath = "/"\nmethod = "GTE"\n', "workers.w.routes[0].method", "GTE"),
    ("example-relative", '[[workers.w.routes]]\npath = "/*"\nexample = "x"\n', "workers.w.routes[0].example",
     "must start with /"),
    ("header-value", '[[workers.w.routes]]\npath = "/"\nheaders = { x-a = "caf\u00e9" }\n',
     "workers.w.routes[0].headers.x-a", "not a valid HTTP header value"),
    ("header-name", '[[workers.w.routes]]\npath = "/"\nheaders = { "x a" = "b" }\n',
     "workers.w.routes[0].headers.x a", "not a valid HTTP header name"),
    ("header-content-length", '[[workers.w.routes]]\npath = "/"\nheaders = { content-length = "3" }\n',
     "workers.w.routes[0].headers.content-length", "sets this header itself"),
    ("content-type-newline", '[[workers.w.routes]]\npath = "/"\ncontent_type = "a\\nb"\n',
     "workers.w.routes[0].content_type", "header value"),
    ("version-key-leading-zero", "[workers.w.versions.02]\n", "workers.w.versions.02", "ordinals"),
    ("version-key-superscript", "[workers.w.versions.\"\u00b2\"]\n", "workers.w.versions.\u00b2", "ordinals"),
    ("binding-not-table", '[workers.w]\nbindings = ["KV"]\n', "workers.w.bindings[0]", "expected a table"),
    ("binding-type", '[workers.w]\nbindings = [{ type = "kv", name = "X" }]\n', "workers.w.bindings[0].type",
     "must be one of"),
    ("binding-do-class", '[workers.w]\nbindings = [{ type = "durable_object_namespace", name = "X" }]\n',
     "workers.w.bindings[0].class_name", "is required"),
    ("missing-kind", '[resources]\nmissing = ["queues:beacon-queue"]\n', "resources.missing[0]", "KIND:NAME"),
    ("r2-not-string", "[resources]\nr2 = [3]\n", "resources.r2[0]", "expected a string, got 3"),
]


@pytest.mark.parametrize(("text", "field", "problem"), [case[1:] for case in BAD_FIELDS],
                         ids=[case[0] for case in BAD_FIELDS])
def test_bad_field_is_one_line_naming_file_and_field(tmp_path: Path, text: str, field: str, problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"scenario {path}: field {field}: "), message
    assert problem in message, message


# Each table of the format with a typo'd key in it: every one of them reports leftovers.
TABLES = [
    ("top", "colour = 1\n", "colour"),
    ("traffic", "[traffic]\nx = 1\n", "traffic.x"),
    ("faults", "[faults]\nx = 1\n", "faults.x"),
    ("faults.tail", "[faults.tail]\nx = 1\n", "faults.tail.x"),
    ("faults.api", '[[faults.api]]\ncall = "deploy"\ntime = 2\n', "faults.api[0].time"),
    ("worker", "[workers.w]\npre_seed = true\n", "workers.w.pre_seed"),
    ("behaviour", "[workers.w.behaviour]\nx = 1\n", "workers.w.behaviour.x"),
    ("version", "[workers.w.versions.2]\nerror_rat = 0.1\n", "workers.w.versions.2.error_rat"),
    ("route", '[[workers.w.routes]]\npath = "/"\nbdy = "x"\n', "workers.w.routes[0].bdy"),
    ("log", '[[workers.w.behaviour.logs]]\nmessage = "m"\nlevle = "warn"\n', "workers.w.behaviour.logs[0].levle"),
    ("fault_log", '[[workers.w.versions.2.fault_logs]]\nmessage = "m"\nx = 1\n',
     "workers.w.versions.2.fault_logs[0].x"),
    ("durable_objects", "[workers.w.durable_objects]\ninstances = 1\nwave = 3\n", "workers.w.durable_objects.wave"),
    ("reset_log", '[workers.w.durable_objects]\ninstances = 1\n[[workers.w.durable_objects.reset_logs]]\n'
     'message = "m"\nx = 1\n', "workers.w.durable_objects.reset_logs[0].x"),
    ("resources", "[resources]\nr3 = []\n", "resources.r3"),
    ("resources.d1", '[resources]\nd1 = [{ name = "db", uid = "x" }]\n', "resources.d1[0].uid"),
    ("resources.kv", '[resources]\nkv = [{ title = "kv", idd = "x" }]\n', "resources.kv[0].idd"),
]


@pytest.mark.parametrize(("text", "field"), [case[1:] for case in TABLES], ids=[case[0] for case in TABLES])
def test_every_table_rejects_unknown_keys(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "typo.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=re.escape(f"scenario {path}: field {field}: unknown field")):
        load_scenario(path)


def test_binary_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "binary.toml"
    path.write_bytes(b"name = 1\n\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == (f"scenario {path}: not a text file: line 2: byte 0x89 is not UTF-8 "
                               "(a scenario is a UTF-8 TOML file)")


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        (b"name = \n", ", line 1, column 8: not valid TOML: Invalid value"),
        (b"[traffic]\nrate = 1\n[traffic]\n", ", line 3, column "),
        (b"x = [1,", ", at the end of the file: not valid TOML"),
        (b"\x00\x01\x02", ", line 1, column 1: not valid TOML"),
    ],
    ids=["syntax", "duplicate-table", "truncated", "control-bytes"],
)
def test_toml_errors_name_file_line_and_column(tmp_path: Path, raw: bytes, where: str) -> None:
    path = tmp_path / "broken.toml"
    path.write_bytes(raw)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"scenario {path}{where}"), str(info.value)


def test_a_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbfname = "bom"\n')
    assert load_scenario(path).name == "bom"


def test_error_in_a_base_names_the_base_file(tmp_path: Path) -> None:
    """A bad value set in a base file is reported against that file, reached through the one loaded."""
    (tmp_path / "base.toml").write_text('base = "healthy"\n[faults]\napi_delay = nan\n[traffic]\nrate = 2\n')
    (tmp_path / "child.toml").write_text('base = "base.toml"\n[traffic]\nrate = 3\n')
    with pytest.raises(ScenarioError) as info:
        load_scenario(tmp_path / "child.toml")
    assert str(info.value).startswith(f"scenario {tmp_path / 'base.toml'} (via {tmp_path / 'child.toml'}): "
                                      "field faults.api_delay: must be a finite number, got nan")
    (tmp_path / "child.toml").write_text('base = "base.toml"\n[faults]\napi_delay = 1\n[traffic]\nrate = 1e9\n')
    with pytest.raises(ScenarioError, match=re.escape(f"scenario {tmp_path / 'child.toml'}: field traffic.rate:")):
        load_scenario(tmp_path / "child.toml")


def test_bounds_themselves_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(
        '[traffic]\nrate = 10000\n[faults]\napi_delay = 3600\n[faults.tail]\nclose_code = 4999\nsampling_keep = 1\n'
        '[[faults.api]]\ncall = "*"\ntimes = 0\nstatus = 599\n'
        '[workers.w.behaviour]\nerror_rate = 1\nerror_status = 204\nerror_body = ""\n'
        '[[workers.w.routes]]\npath = "/"\nmethod = "*"\nstatus = 304\nheaders = { etag = "\\"v1\\"" }\n'
    )
    scenario = load_scenario(path)
    assert scenario.traffic_rate == MAX_TRAFFIC_RATE
    assert (scenario.tail.close_code, scenario.api_faults[0].times) == (4999, 0)
    assert scenario.workers["w"].routes[0].headers == {"etag": '"v1"'}


@pytest.mark.parametrize("name", shipped_scenarios())
def test_every_shipped_scenario_loads(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.name == name
    assert all(f.call in known_calls() for f in scenario.api_faults)


def test_readme_examples_load(tmp_path: Path) -> None:
    """The full example and the ``[resources]`` example of the README's scenario section are valid."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Scenarios"):]
    blocks = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    full = next(b for b in blocks if "[[faults.api]]" in b)
    resources = next(b for b in blocks if b.startswith("[resources]"))
    path = tmp_path / "readme.toml"
    path.write_text(full)
    assert load_scenario(path).name == "my-release"
    path.write_text('base = "healthy"\n' + resources)
    assert "worker:cf-ssai-decision" in load_scenario(path).resources.missing


def test_every_documented_call_name_is_known() -> None:
    """The README's list of call names and the simulator's agree (every documented one exists)."""
    text = README.read_text(encoding="utf-8")
    part = text[text.index("#### Call names for `faults.api.call`"):]
    part = part[:part.index("\nExample:")]
    documented = set(re.findall(r"`([a-z0-9*-]+)`", part))
    assert documented and documented <= set(known_calls())


@pytest.mark.parametrize("rate", [math.nan, math.inf, -1.0, 1e9, MAX_TRAFFIC_RATE + 1, True])
def test_traffic_rate_override_is_bounded(rate: float) -> None:
    with pytest.raises(SimulatorError, match="traffic rate .* from 0 to 10,000 requests/s per worker"):
        Simulator("healthy", traffic_rate=rate)


def test_programmatic_fault_with_unknown_call_is_refused() -> None:
    scenario = replace(load_scenario("healthy"), api_faults=(ApiFault(call="rolback"),))
    with pytest.raises(SimulatorError, match="did you mean 'rollback'"):
        Simulator(scenario)


async def test_traffic_at_the_max_rate_stays_cancellable() -> None:
    """Four workers at the maximum rate (more than one core serves): the loop keeps running other tasks
    and a cancel scope stops the generator within a second."""
    async with Simulator("healthy", traffic_rate=MAX_TRAFFIC_RATE, speed=50) as sim:
        gaps: list[float] = []

        async def heartbeat() -> None:
            while True:
                before = anyio.current_time()
                await anyio.sleep(0.01)
                gaps.append(anyio.current_time() - before)

        async with anyio.create_task_group() as tg:
            tg.start_soon(heartbeat)
            with anyio.move_on_after(1.5):
                await sim.edge.run_traffic()  # a second generator, besides the simulator's own
            stopped = anyio.current_time()
            tg.cancel_scope.cancel()
        assert sum(sum(c.values()) for c in sim.edge.served.values()) > 10_000
        assert max(gaps) < 0.5, max(gaps)
    assert anyio.current_time() - stopped < 1.5  # the simulator's own generator stopped as fast


async def test_sigterm_stops_the_simulator_at_the_max_rate() -> None:
    """``rollout sim --traffic-rate 10000 --speed 50`` still stops on SIGTERM (it used to spin on)."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_PROXY")}
    argv = [sys.executable, "-m", "rollout.sim", "--scenario", "healthy", "--traffic-rate", "10000", "--speed", "50"]
    async with await anyio.open_process(argv, env=env) as process:
        assert process.stdout is not None
        text = ""
        with anyio.fail_after(20):
            while text.count("\n") < 4:
                text += (await process.stdout.receive()).decode()
        await anyio.sleep(1.5)
        process.send_signal(signal.SIGTERM)
        with anyio.fail_after(3):
            assert await process.wait() == 0


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(b"\xff\xfe\x00binary", "not a text file"), (b"[faults]\napi_delay = nan\n", "field faults.api_delay")],
    ids=["binary", "nan"],
)
async def test_cli_reports_a_bad_scenario_in_one_line(tmp_path: Path, raw: bytes, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(raw)
    result = await anyio.run_process([sys.executable, "-m", "rollout.sim", "--scenario", str(path)], check=False)
    stderr = result.stderr.decode()
    assert result.returncode == 2
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    assert stderr.startswith(f"rollout sim: scenario {path}") and expected in stderr, stderr


def test_a_long_quiet_spell_does_not_burst_logs() -> None:
    """A per_hour line at the maximum rate, first request after a simulated week: one request writes at most
    MAX_LINES_PER_REQUEST lines of it, not the 600 million owed."""
    spec = WorkerSpec(name="w", routes=(Route(path="/"),),
                      behaviour=Behaviour(logs=(LogLine("churn", per_hour=MAX_LOGS_PER_HOUR),)))
    behaviours = Behaviours(spec, random.Random(1))
    behaviours.serve("v1", 1, 0.0, "GET", "/", now=0.0)
    outcome = behaviours.serve("v1", 1, 0.0, "GET", "/", now=7 * 86400.0)
    assert len(outcome.logs) == MAX_LINES_PER_REQUEST
    # the excess is dropped, not carried: a request a millisecond later owes one more line
    assert len(behaviours.serve("v1", 1, 0.0, "GET", "/", now=7 * 86400.0 + 0.001).logs) <= 2
