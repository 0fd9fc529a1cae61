"""Plan files: loading, and clear errors with file and line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from phases import Deploy, Watch
from rollout import Plan, PlanError, Worker, load_plan

GOOD = """
from phases import Deploy, Smoke, Watch
from probes import Status
from rollout import Plan, Worker

api = Worker("api", config="wrangler.toml")
plan = Plan(name="api", workers=[api], phases=[Deploy(api), Smoke(api, [Status("/health")]), Watch("3m")])
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.py"
    path.write_text(textwrap.dedent(text))
    return path


def test_loads_a_plan_and_names_its_phases(tmp_path: Path) -> None:
    """A plan file builds a Plan whose phases know their names and durations."""
    plan = load_plan(write(tmp_path, GOOD))
    assert plan.name == "api"
    assert [p.name for p in plan.phases] == ["deploy api", "smoke api", "watch 3m00s"]
    assert plan.resolve_path("wrangler.toml") == tmp_path / "wrangler.toml"


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    """A syntax error is reported with the plan file and the line, not a traceback."""
    path = write(tmp_path, GOOD.replace('Watch("3m")])', 'Watch("3m")]'))
    with pytest.raises(PlanError) as info:
        load_plan(path)
    message = str(info.value)
    assert f"{path}:" in message
    assert "syntax error" in message


def test_unknown_worker_names_file_and_line(tmp_path: Path) -> None:
    """A phase naming a worker the plan does not define points at the line of that phase."""
    text = GOOD.replace("Deploy(api)", 'Deploy("api-typo")')
    path = write(tmp_path, text)
    with pytest.raises(PlanError) as info:
        load_plan(path)
    message = str(info.value)
    line = next(i for i, row in enumerate(textwrap.dedent(text).splitlines(), start=1) if "api-typo" in row)
    assert f"{path}:{line}" in message
    assert "'api-typo'" in message and "defined workers: api" in message


def test_error_in_user_code_points_at_their_line(tmp_path: Path) -> None:
    """An exception raised by the plan's own code is shown with its line in the plan file."""
    path = write(tmp_path, GOOD + "\nraise RuntimeError('boom')\n")
    with pytest.raises(PlanError, match=r"plan\.py:\d+: RuntimeError: boom"):
        load_plan(path)


def test_missing_plan_variable(tmp_path: Path) -> None:
    """A file without `plan` says what to add."""
    with pytest.raises(PlanError, match="defines no `plan`"):
        load_plan(write(tmp_path, "x = 1\n"))


def test_bad_duration_is_a_plan_error() -> None:
    """Durations are checked when the plan is built."""
    with pytest.raises(PlanError, match="not a duration"):
        Watch("three minutes")


def test_duplicate_workers_are_refused() -> None:
    """Two workers with one name is a plan error."""
    with pytest.raises(PlanError, match="twice"):
        Plan(name="x", workers=[Worker("a"), Worker("a")], phases=[Deploy("a")])


def test_async_function_is_a_phase() -> None:
    """A plan may define its own phase as an async function."""

    async def warm_caches(ctx: object) -> None:
        return None

    plan = Plan(name="x", workers=[Worker("a")], phases=[warm_caches])
    assert plan.phases[0].name == "warm_caches"


def test_shell_string_is_refused() -> None:
    """Commands are argument lists: a shell string is refused with the fix."""
    from phases import Shell

    with pytest.raises(PlanError, match="list of arguments"):
        Shell("npm test")  # type: ignore[arg-type]


def test_example_plan_loads() -> None:
    """The shipped cf-ssai plan loads and names four workers."""
    plan = load_plan(Path(__file__).resolve().parents[2] / "examples" / "cf_ssai" / "plan.py")
    assert [w.name for w in plan.workers] == ["cf-ssai", "cf-ssai-decision", "cf-ssai-beacon", "cf-ssai-vast-parser"]
