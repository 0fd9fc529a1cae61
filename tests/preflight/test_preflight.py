"""Preflight against the simulator with real wrangler: 10021, 10085, artifacts, all at once."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from rollout.preflight import PreflightOptions, WorkerTarget, run_preflight
from rollout.sim import Simulator
from rollout.wrangler import Wrangler
from rollout.wrangler_config import load_config

from .conftest import git_repo, rollout_argv, scenario, write

pytestmark = pytest.mark.wrangler

CONFIG = '''
name = "quoteviral"
main = "src/index.js"
compatibility_date = "2026-04-01"

[[r2_buckets]]
binding = "UPLOADS"
bucket_name = "quoteviral-uploads"

[[unsafe.bindings]]
name = "IMAGES"
type = "{images}"
'''


def project(directory: Path, images: str = "images", built_from: str | None = None) -> Path:
    config = write(directory / "app" / "wrangler.toml", CONFIG.format(images=images))
    write(directory / "app" / "src" / "index.js", "export default { fetch() { return new Response('ok') } }\n")
    if built_from is not None:
        write(directory / "app" / "dist" / "build-manifest.json", json.dumps({"commit": built_from}))
    return config


def test_images_case_gives_10021_with_the_exact_fix(tmp_path: Path) -> None:
    """type = "Images" is reported at its line with code 10021 and the replacement text."""
    config = load_config(project(tmp_path, images="Images"))
    (problem,) = config.problems
    assert problem.code == 10021
    assert problem.line == 11
    assert problem.fix == 'change `type = "Images"` to `type = "images"`'


def test_jsonc_config_lines_and_case(tmp_path: Path) -> None:
    """A wrangler.jsonc with comments is read, and the bad type is found at its line."""
    path = write(tmp_path / "wrangler.jsonc", '''
        {
          // the worker
          "name": "w",
          "unsafe": { "bindings": [
            { "name": "IMAGES", "type": "Images" }, /* trailing comma */
          ] },
        }
        ''')
    (problem,) = load_config(path).problems
    assert (problem.code, problem.line) == (10021, 5)
    assert '"type": "images"' in problem.fix


async def _preflight(workdir: Path, config: Path, resources: str, commit: str | None = None) -> list:  # type: ignore[type-arg]
    async with Simulator(scenario=scenario(workdir, resources), traffic_rate=0) as sim:
        wrangler = Wrangler.for_project(workdir, sim.env(), workdir / "run")
        result = await run_preflight([WorkerTarget("quoteviral", config)], wrangler,
                                     PreflightOptions(repo_dir=config.parent, commit=commit))
    return list(result.problems)


async def test_missing_r2_bucket_gives_10085(workdir: Path) -> None:
    """A bucket the account lacks is found with `wrangler r2 bucket list` and reported as 10085."""
    problems = await _preflight(workdir, project(workdir), 'r2 = ["some-other-bucket"]')
    (problem,) = problems
    assert problem.code == 10085
    assert "quoteviral-uploads" in problem.message
    assert problem.where.endswith("wrangler.toml:7")
    assert "wrangler r2 bucket create quoteviral-uploads" in problem.fix


async def test_everything_present_passes(workdir: Path) -> None:
    """With the bucket in the account, the right case and no manifest, preflight is clean."""
    assert await _preflight(workdir, project(workdir), 'r2 = ["quoteviral-uploads"]') == []


async def test_artifacts_from_another_commit_show_both_shas(workdir: Path) -> None:
    """A build manifest of another commit fails with both SHAs in the message."""
    config = project(workdir, built_from="0" * 40)
    head = git_repo(workdir)
    (problem,) = await _preflight(workdir, config, 'r2 = ["quoteviral-uploads"]')
    assert problem.check == "artifacts"
    assert "0" * 40 in problem.message
    assert head in problem.message


def test_all_three_reported_in_one_run_by_the_cli(workdir: Path) -> None:
    """`rollout preflight --config … --sim` lists 10021, 10085 and the artifact SHAs together; exit 7."""
    config = project(workdir, images="Images", built_from="f" * 40)
    head = git_repo(workdir)
    proc = subprocess.run(rollout_argv("preflight", "--config", str(config), "--sim", "--no-tty"),
                          env={**os.environ, "COLUMNS": "400"},
                          capture_output=True, text=True, timeout=120, cwd=workdir)
    out = proc.stdout
    assert proc.returncode == 7, out + proc.stderr  # EXIT_PREFLIGHT
    assert "[code 10021]" in out and 'to `type = "images"`' in out
    assert "[code 10085]" in out and "quoteviral-uploads" in out
    assert "f" * 40 in out and head in out
    assert "3 problem(s)" in out


def test_missing_service_and_kv(tmp_path: Path) -> None:
    """Service bindings and KV ids are checked too (unit level: the config side)."""
    path = write(tmp_path / "wrangler.toml", '''
        name = "w"
        [[kv_namespaces]]
        binding = "KV"
        [[services]]
        binding = "OTHER"
        service = "nope"
        ''')
    (problem,) = load_config(path).problems
    assert "has no id" in problem.message
    assert problem.line == 2
