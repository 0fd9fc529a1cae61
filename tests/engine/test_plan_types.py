"""Plans are type-checked at load: a wrong value is a PlanError naming the plan file, the line, what was
expected and what was given, never a traceback or a crash in the middle of a rollout."""

from __future__ import annotations

import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import httpx
import pytest

from phases import Deploy, Gradual, Smoke
from probes import Status
from rollout import ErrorRate, LogRate, Plan, PlanError, Worker, load_plan
from rollout._check import BadPlanValue, element_location, expect_argv, expect_duration, expect_str
from rollout.durations import parse_duration, parse_positive_duration

ROOT = Path(__file__).resolve().parents[2]

HEADER = """\
import sys

from phases import Deploy, Gradual, Migrate, Preflight, Smoke, Watch
from probes import BodyContains, BodyMatches, Header, JsonField, Latency, Post, Status
from rollout import Plan, Worker
from rollout.guards import ErrorRate, LogRate, NewExceptions

api = Worker("api", config="wrangler.toml")
"""

# (id, the plan's body after HEADER, a text on the line the error must point at, texts the message must hold)
CASES: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("guard-as-str", """
        plan = Plan(
            name="a",
            workers=[api],
            guards=[
                ErrorRate(),
                "error_rate",
            ],
            phases=[Deploy(api)],
        )
        """, '"error_rate"', ("Plan(guards=[...]) item #2", "a guard such as ErrorRate", "got the str 'error_rate'")),
    ("guards-not-a-list", """
        plan = Plan(name="a", workers=[api],
                    guards=ErrorRate(),
                    phases=[])
        """, "guards=ErrorRate()", ("Plan(guards=...) must be a list of guards", "got the ErrorRate")),
    ("phase-as-int", """
        plan = Plan(
            name="a",
            workers=[api],
            phases=[
                Deploy(api),
                42,
            ],
        )
        """, "42,", ("Plan(phases=[...]) item #2", "a phase such as Deploy", "async def", "got the int 42")),
    ("phase-class-not-instance", """
        plan = Plan(name="a", workers=[api], phases=[Deploy])
        """, "phases=[Deploy]", ("must be a phase", "got the class Deploy", "call it: Deploy(...)")),
    ("sync-def-phase", """
        def warm_caches(ctx):
            return None

        plan = Plan(name="a", workers=[api], phases=[Deploy(api), warm_caches])
        """, "def warm_caches", ("Plan(phases=[...]) item #2", "async def warm_caches(ctx)", "plain function (def)",
                                 "write `async def`")),
    ("status-code-as-str", """
        plan = Plan(name="a", workers=[api], phases=[
            Deploy(api),
            Smoke(api, [
                Status("/health", "200"),
            ]),
        ])
        """, 'Status("/health", "200")', ("Status(status=...) must be an int HTTP status such as 200",
                                          "got the str '200'")),
    ("status-out-of-range", """
        plan = Plan(name="a", workers=[api], phases=[Smoke(api, [Status("/health", 2000)])])
        """, "Status(", ("Status(status=...)", "got the int 2000", "100 to 599")),
    ("status-url-not-path", """
        plan = Plan(name="a", workers=[api], phases=[Smoke(api, [Status("https://example.com/health")])])
        """, "Status(", ("Status(path=...) must be a path on the worker such as '/health'", "got the URL")),
    ("post-expect-as-str", """
        plan = Plan(name="a", workers=[api], phases=[Smoke(api, [Post("/cue", json={}, expect="201")])])
        """, "Post(", ("Post(expect=...) must be an int HTTP status", "got the str '201'")),
    ("post-json-not-json", """
        plan = Plan(name="a", workers=[api], phases=[Smoke(api, [Post("/cue", json={"at": object()})])])
        """, "Post(", ("Post(json=...) must be JSON", "got the dict")),
    ("body-contains-int", """
        plan = Plan(name="a", workers=[api], phases=[Smoke(api, [BodyContains("/", 200)])])
        """, "BodyContains(", ("BodyContains(text=...) must be a non-empty str", "got the int 200")),
    ("body-matches-bad-regex", """
        plan = Plan(name="a", workers=[api], phases=[Smoke(api, [BodyMatches("/", "([a-z]")])])
        """, "BodyMatches(", ("BodyMatches(pattern=...) must be a regular expression", "'([a-z]'")),
    ("latency-as-str", """
        plan = Plan(name="a", workers=[api], phases=[Smoke(api, [Latency("/", "500ms")])])
        """, "Latency(", ("Latency(max_ms=...) must be a number of milliseconds > 0", "got the str '500ms'")),
    ("header-equals-int", """
        plan = Plan(name="a", workers=[api], phases=[Smoke(api, [Header("/", "x-version", equals=3)])])
        """, "Header(", ("Header(equals=...) must be a str or None", "got the int 3")),
    ("json-field-path-int", """
        plan = Plan(name="a", workers=[api], phases=[Smoke(api, [JsonField("/", 0)])])
        """, "JsonField(", ("JsonField(field_path=...)", "got the int 0")),
    ("smoke-probe-as-str", """
        plan = Plan(name="a", workers=[api], phases=[
            Smoke(api, [
                Status("/health"),
                "x",
            ]),
        ])
        """, '"x"', ("Smoke(probes=...) item #2", "a probe such as Status('/health')", "got the str 'x'")),
    ("smoke-probes-not-a-list", """
        plan = Plan(name="a", workers=[api], phases=[Smoke(api, Status("/health"))])
        """, "Smoke(", ("Smoke(probes=...) must be a list of probes", "got the Status")),
    ("smoke-sync-def-probe", """
        def probe_health(ctx, worker):
            return True

        plan = Plan(name="a", workers=[api], phases=[Smoke(api, [probe_health])])
        """, "def probe_health", ("Smoke(probes=...) item #1", "async def probe_health(ctx, worker)")),
    ("smoke-attempts-zero", """
        plan = Plan(name="a", workers=[api], phases=[Smoke(api, [Status("/")], attempts=0)])
        """, "Smoke(", ("Smoke(attempts=...) must be an int >= 1", "got the int 0")),
    ("lograte-unknown-keyword", """
        plan = Plan(name="a", workers=[api], guards=[
            LogRate(per_hour="x"),
        ], phases=[])
        """, "LogRate(per_hour", ("LogRate() has no argument per_hour=", "did you mean max_per_hour=...?",
                                  "it takes: pattern, max_per_hour")),
    ("lograte-rate-as-str", """
        plan = Plan(name="a", workers=[api], guards=[
            LogRate(pattern="do_churn", max_per_hour="x"),
        ], phases=[])
        """, "LogRate(", ("LogRate(max_per_hour=...) must be a number of lines per hour > 0", "got the str 'x'")),
    ("lograte-wave-negative", """
        plan = Plan(name="a", workers=[api], guards=[LogRate(wave=-1)], phases=[])
        """, "LogRate(", ("LogRate(wave=...) must be a number of lines >= 0", "got the int -1")),
    ("error-rate-margin-as-str", """
        plan = Plan(name="a", workers=[api], guards=[ErrorRate(above_baseline_by="5%")], phases=[])
        """, "ErrorRate(", ("ErrorRate(above_baseline_by=...) must be a rate in [0, 1)", "got the str '5%'")),
    ("error-rate-action-typo", """
        plan = Plan(name="a", workers=[api], guards=[ErrorRate(action="rollbak")], phases=[])
        """, "ErrorRate(", ("ErrorRate(action=...) must be one of 'rollback', 'alert', 'warn'", "'rollbak'")),
    ("error-rate-workers-str", """
        plan = Plan(name="a", workers=[api], guards=[ErrorRate(workers="api")], phases=[])
        """, "ErrorRate(", ("ErrorRate(workers=...) must be a list of worker names", "got the str 'api'")),
    ("guard-unknown-worker", """
        plan = Plan(name="a", workers=[api], guards=[
            ErrorRate(workers=["ap1"]),
        ], phases=[])
        """, "ErrorRate(", ("guard 'error_rate' names worker 'ap1'", "defined workers: api")),
    ("new-exceptions-window-zero", """
        plan = Plan(name="a", workers=[api], guards=[NewExceptions(window_s=0)], phases=[])
        """, "NewExceptions(", ("NewExceptions(window_s=...) must be a number of seconds > 0", "got the int 0")),
    ("worker-name-int", """
        other = Worker(name=3)
        """, "Worker(name=3)", ("Worker(name=...) must be the worker's script name (a non-empty str)",
                                "got the int 3")),
    ("worker-deploy-command-str", """
        other = Worker("b", deploy_command="npm run deploy")
        """, "deploy_command=", ("Worker('b', deploy_command=...) must be a list of arguments",
                                 "never run through a shell")),
    ("worker-watch-str", """
        other = Worker("b", watch="no")
        """, 'watch="no"', ("Worker('b', watch=...) must be True or False", "got the str 'no'")),
    ("workers-as-names", """
        plan = Plan(name="a", workers=["api"], phases=[])
        """, 'workers=["api"]', ("Plan(workers=[...]) item #1 must be a rollout.Worker", "got the str 'api'")),
    ("baseline-nan", """
        plan = Plan(
            name="a",
            workers=[api],
            baseline="nan",
            phases=[],
        )
        """, 'baseline="nan"', ("Plan(baseline=...) must be a duration", "got the str 'nan'", "finite")),
    ("recovery-inf", """
        plan = Plan(
            name="a",
            workers=[api],
            recovery="inf",
            phases=[],
        )
        """, 'recovery="inf"', ("Plan(recovery=...) must be a duration", "got the str 'inf'", "finite")),
    ("recovery-float-nan", """
        plan = Plan(name="a", workers=[api], recovery=float("nan"), phases=[])
        """, "Plan(", ("Plan(recovery=...) must be a duration", "got the float nan")),
    ("lock-typo", """
        plan = Plan(name="a", workers=[api], phases=[], lock="acount")
        """, "Plan(", ("Plan(lock=...) must be one of 'local', 'account'", "got the str 'acount'")),
    ("gradual-step-over-100", """
        plan = Plan(name="a", workers=[api], phases=[
            Gradual(api, steps=[10, 150]),
        ])
        """, "Gradual(", ("Gradual(steps=...) step #2 must be a percentage in (0, 100]", "got the int 150")),
    ("gradual-step-zero", """
        plan = Plan(name="a", workers=[api], phases=[Gradual(api, steps=[0, 50])])
        """, "Gradual(", ("Gradual(steps=...) step #1 must be a percentage in (0, 100]", "got the int 0")),
    ("gradual-steps-falling", """
        plan = Plan(name="a", workers=[api], phases=[Gradual(api, steps=[50, 10])])
        """, "Gradual(", ("Gradual(steps=...) must be percentages rising strictly", "got the list [50, 10]")),
    ("gradual-step-as-str", """
        plan = Plan(name="a", workers=[api], phases=[Gradual(api, steps=["10%", "100%"])])
        """, "Gradual(", ("Gradual(steps=...) step #1 must be a percentage", "got the str '10%'")),
    ("gradual-bake-zero", """
        plan = Plan(name="a", workers=[api], phases=[Gradual(api, bake="0s")])
        """, "Gradual(", ("Gradual(bake=...) must be a duration", "more than 0", "got the str '0s'")),
    ("gradual-bake-inf", """
        plan = Plan(name="a", workers=[api], phases=[Gradual(api, final_bake="inf")])
        """, "Gradual(", ("Gradual(final_bake=...) must be a duration", "got the str 'inf'")),
    ("gradual-alpha-out-of-range", """
        plan = Plan(name="a", workers=[api], phases=[Gradual(api, alpha=1.5)])
        """, "Gradual(", ("Gradual(alpha=...) must be a number in (0, 1)", "got the float 1.5")),
    ("gradual-smoke-str", """
        plan = Plan(name="a", workers=[api], phases=[Gradual(api, smoke=["/health"])])
        """, "Gradual(", ("Gradual(smoke=...) item #1 must be a probe", "got the str '/health'")),
    ("deploy-int", """
        plan = Plan(name="a", workers=[api], phases=[Deploy(3)])
        """, "Deploy(3)", ("Deploy(...) worker #1 must be a rollout.Worker or a worker's name", "got the int 3")),
    ("deploy-a-list", """
        plan = Plan(name="a", workers=[api], phases=[Deploy([api])])
        """, "Deploy(", ("Deploy(...) takes the workers one by one", "got the list")),
    ("deploy-nothing", """
        plan = Plan(name="a", workers=[api], phases=[Deploy()])
        """, "Deploy()", ("Deploy() needs at least one worker",)),
    ("migrate-binding-int", """
        plan = Plan(name="a", workers=[api], phases=[Migrate(api, 1)])
        """, "Migrate(", ("Migrate(...) binding #1 must be a D1 binding name", "got the int 1")),
    ("preflight-flag-str", """
        plan = Plan(name="a", workers=[api], phases=[Preflight(api, require_clean="yes")])
        """, "Preflight(", ("Preflight(require_clean=...) must be True or False", "got the str 'yes'")),
    ("preflight-artifacts-list", """
        plan = Plan(name="a", workers=[api], phases=[Preflight(api, artifacts=["dist/build-manifest.json"])])
        """, "Preflight(", ("Preflight(artifacts=...) must be a dict of str to str", "got the list")),
    ("sys-exit", """
        plan = Plan(name="a", workers=[api], phases=[])
        sys.exit(0)
        """, "sys.exit(0)", ("the plan called sys.exit(0); a plan file must only build a Plan",)),
    ("sys-exit-in-a-helper", """
        def workers_from_inventory():
            sys.exit("inventory unavailable")

        plan = Plan(name="a", workers=workers_from_inventory(), phases=[])
        """, "sys.exit(", ("the plan called sys.exit('inventory unavailable')",)),
    ("base-exception-subclass", """
        class Abort(BaseException):
            pass

        raise Abort("stop here")
        """, "raise Abort", ("Abort: stop here", "a plan file must only build a Plan")),
]


def write_plan(directory: Path, body: str) -> tuple[Path, str]:
    text = HEADER + textwrap.dedent(body)
    path = directory / "plan.py"
    path.write_text(text)
    return path, text


def line_of(text: str, marker: str) -> int:
    rows = [i for i, row in enumerate(text.splitlines(), start=1) if marker in row]
    assert rows, f"marker {marker!r} not in the plan"
    return rows[0]


@pytest.mark.parametrize(("body", "marker", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_plan_names_file_line_and_expected_type(
    tmp_path: Path, body: str, marker: str, expected: tuple[str, ...],
) -> None:
    """Each bad value is a one-line PlanError at its own line of the plan, saying what was expected and got."""
    path, text = write_plan(tmp_path, body)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line_of(text, marker)}: "), message
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"
    assert "\n" not in message
    assert "Traceback" not in message


def test_sys_exit_in_an_imported_helper_points_at_the_plan_line(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """SystemExit from a module the plan imports is reported at the plan's line that called it."""
    (tmp_path / "inventory_for_types_test.py").write_text("import sys\n\ndef workers():\n    sys.exit(3)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "inventory_for_types_test", raising=False)
    path, text = write_plan(tmp_path, """
        import inventory_for_types_test

        plan = Plan(name="a", workers=inventory_for_types_test.workers(), phases=[])
        """)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert str(info.value) == (f"{path}:{line_of(text, 'workers()')}: the plan called sys.exit(3); "
                               "a plan file must only build a Plan")


def test_keyboard_interrupt_in_a_plan_still_interrupts(tmp_path: Path) -> None:
    """Ctrl-C while a plan loads is not turned into a plan error."""
    path, _ = write_plan(tmp_path, "raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        load_plan(path)


def rollout_plan(path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).parent / "rollout"
    argv = [str(executable)] if executable.exists() else [sys.executable, "-m", "rollout.cli"]
    return subprocess.run([*argv, "plan", str(path), "--no-tty", "--journal", str(cwd / ".rollout" / "j.sqlite")],
                          cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("case", ["guard-as-str", "status-code-as-str", "sync-def-phase", "sys-exit", "recovery-inf"])
def test_rollout_plan_prints_one_line_and_exits_2(tmp_path: Path, case: str) -> None:
    """`rollout plan FILE` on a bad plan: exit 2, one line naming file and line, no traceback."""
    _, body, marker, expected = next(c for c in CASES if c[0] == case)
    path, text = write_plan(tmp_path, body)
    result = rollout_plan(path, tmp_path)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    assert f"{path}:{line_of(text, marker)}: " in output
    assert all(part in output for part in expected), output


def test_rollout_plan_of_the_example_still_works(tmp_path: Path) -> None:
    """The shipped example passes every check and `rollout plan` shows it (exit 0)."""
    result = rollout_plan(ROOT / "examples" / "cf_ssai" / "plan.py", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Status GET /health" in result.stdout


# -- plans that must still load ------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted((ROOT / "examples").rglob("plan*.py")), ids=lambda p: p.parent.name)
def test_example_plans_load(path: Path) -> None:
    plan = load_plan(path)
    assert plan.workers and plan.steps


def test_readme_plan_loads(tmp_path: Path) -> None:
    """The plan in the README's "A plan" section loads as written."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A plan", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    path = tmp_path / "plan.py"
    path.write_text(code.group(1))
    plan = load_plan(path)
    assert plan.name == "cf-ssai v1.5.0-consistency"
    assert len(plan.guards) == 3 and len(plan.steps) == 6


def test_good_values_of_every_kind_load(tmp_path: Path) -> None:
    """Everything the checks allow: collections of statuses, Path configs, async probes and phases."""
    path, _ = write_plan(tmp_path, """
        from pathlib import Path

        async def warm(ctx):
            return None

        async def probe_home(ctx, worker):
            return True

        other = Worker("other", config=Path("other.toml"), deploy_command=("npm", "run", "deploy"), watch=False)
        plan = Plan(
            name="all",
            workers=[api, other],
            baseline=0,
            recovery="90s",
            lock="account",
            guards=[ErrorRate(above_baseline_by=0, workers=["api"]), LogRate("do_young", 100, action="warn"),
                    NewExceptions(version="v2")],
            phases=[
                Preflight(api, other, require_clean=True, artifacts={"api": "dist/m.json"}),
                Migrate(api, "DB"),
                Deploy(api, other, message="v2"),
                Smoke(api, [Status("/", (200, 204)), Status("/x", 404, method="head"), Post("/cue", body="x"),
                            BodyContains("/", "ok", status=None), Header("/", "etag"), JsonField("/", "a.0", 1),
                            Latency("/", 250), probe_home], attempts=1, retry_delay_s=0),
                Gradual(other, steps=(5, 50), bake=30, final_bake="0s", smoke=[Status("/")]),
                warm,
                Watch("1m"),
            ],
        )
        """)
    plan = load_plan(path)
    smoke = plan.steps[3]
    assert isinstance(smoke, Smoke)
    assert [getattr(p, "expect_status", None) for p in smoke.probes[:2]] == [(200, 204), 404]
    assert getattr(smoke.probes[1], "method", None) == "HEAD"
    gradual = plan.steps[4]
    assert isinstance(gradual, Gradual) and gradual.steps == (5.0, 50.0, 100.0)
    first = plan.guards[0]
    assert isinstance(first, ErrorRate) and first.defined_at is not None and first.defined_at[0] == str(path)


# -- the pieces ----------------------------------------------------------------------------------------------------
def test_parse_duration_rejects_non_finite_and_keeps_its_api() -> None:
    """nan/inf are not durations (``--for nan`` never ended); zero is refused only where asked."""
    for bad in ("nan", "inf", "-inf", "Infinity", float("nan"), math.inf, "9" * 400 + "h", -1, None, True):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)  # type: ignore[arg-type]
    assert parse_duration("1h30m") == 5400.0
    assert parse_duration(0) == 0.0 and parse_duration("0s") == 0.0
    assert parse_duration(" 90 s ") == 90.0
    with pytest.raises(ValueError, match="more than 0"):
        parse_duration("0s", positive=True)
    with pytest.raises(ValueError, match="more than 0"):
        parse_positive_duration(0)
    assert parse_positive_duration("2m") == 120.0


def test_guard_errors_are_still_value_errors_with_a_location() -> None:
    """Guards built in Python code (tests, `--guards` files) raise ValueError as before, now with the line."""
    with pytest.raises(ValueError, match=r"test_plan_types\.py:\d+: ErrorRate\(alpha=\.\.\.\)"):
        ErrorRate(alpha=2)
    with pytest.raises(BadPlanValue, match="min_samples"):
        LogRate(min_samples=1.5)  # type: ignore[arg-type]
    guard = ErrorRate()
    assert guard.defined_at is not None and guard.defined_at[0] == __file__
    assert guard == ErrorRate() and "defined_at" not in repr(guard)
    assert LogRate(workers=["a"]).workers == ("a",)  # type: ignore[arg-type]


def test_programmatic_plan_errors_point_at_the_caller() -> None:
    """A Plan built in code (not a plan file) gets the caller's file and line too."""
    with pytest.raises(PlanError, match=r"test_plan_types\.py:\d+: Plan\(guards=\[\.\.\.\]\) item #1"):
        Plan(name="x", workers=[Worker("a")], phases=[], guards=["error_rate"])  # type: ignore[list-item]

    def sync_phase(ctx: object) -> None:
        return None

    with pytest.raises(PlanError, match="async def sync_phase"):
        Plan(name="x", workers=[Worker("a")], phases=[sync_phase])
    with pytest.raises(PlanError, match=r"Status\(status=\.\.\.\)"):
        Smoke("a", [Status("/health", "200")])  # type: ignore[arg-type]
    with pytest.raises(PlanError, match="needs at least one worker"):
        Deploy()


def test_status_accepts_a_collection_of_codes() -> None:
    """Status("/", (200, 204)) passes on either code and fails on others, saying which were expected."""
    probe = Status("/", (200, 204))

    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(int(request.url.path.rsplit("/", 1)[-1]), text="body")

    class Ctx:
        def __init__(self, http: httpx.AsyncClient) -> None:
            self.http = http
            self.code = 0

        def url(self, worker: str, path: str) -> str:
            return f"http://edge/{worker}/{self.code}"

    async def check(code: int) -> tuple[bool, str]:
        async with httpx.AsyncClient(transport=httpx.MockTransport(reply)) as http:
            ctx = Ctx(http)
            ctx.code = code
            result = await probe.check(ctx, "api")  # type: ignore[arg-type]
        return result.ok, result.saw

    assert anyio.run(check, 204)[0]
    ok, saw = anyio.run(check, 500)
    assert not ok and "expected one of 200, 204" in saw


def test_helpers_for_watch_gate_and_shell() -> None:
    """What phases/_basic.py is to call: durations > 0, a question, an argument list."""
    with pytest.raises(PlanError, match=r"test_plan_types\.py:\d+: Watch\(duration=\.\.\.\).*got the str 'nan'"):
        expect_duration("nan", "Watch(duration=...)", positive=True)
    with pytest.raises(PlanError, match="not a duration"):
        expect_duration("three minutes", "Watch(duration=...)", positive=True)
    with pytest.raises(PlanError, match="0 makes no sense"):
        expect_duration(0, "Watch(duration=...)", positive=True)
    assert expect_duration("3m", "Watch(duration=...)", positive=True) == 180.0
    with pytest.raises(PlanError, match=r"Gate\(question=\.\.\.\) must be a non-empty str, got the int 3"):
        expect_str(3, "Gate(question=...)", nonempty=True)
    with pytest.raises(PlanError, match="list of arguments"):
        expect_argv("npm test", "Shell(argv=...)")
    with pytest.raises(PlanError, match=r"item #2 must be a non-empty str, got the int 1"):
        expect_argv(["npm", 1], "Shell(argv=...)")
    assert expect_argv(["npm", "test"], "Shell(argv=...)") == ("npm", "test")


def test_element_location_falls_back_to_the_call(tmp_path: Path) -> None:
    """Without a list literal (a list built elsewhere) the error points at the call itself."""
    source = tmp_path / "p.py"
    source.write_text("guards = ['x']\nplan = Plan(\n    name='a',\n    guards=guards,\n)\n")
    assert element_location((str(source), 2), "Plan", "guards", None, 0) == (str(source), 4)
    assert element_location((str(source), 2), "Plan", "phases", None, 0) == (str(source), 2)
    assert element_location((str(tmp_path / "gone.py"), 2), "Plan", "guards", None, 0) == (str(tmp_path / "gone.py"), 2)
    assert element_location(None, "Plan", "guards", None, 0) is None
