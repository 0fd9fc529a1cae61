"""Preflight: everything that would make the first deploy fail, found before it runs, all at once.

Checks, each reported as :class:`Problem` values (never the first only):

* wrangler starts and is authenticated (``wrangler whoami``);
* every worker's wrangler config parses and its bindings are valid (type, exact case, required fields);
* every resource a config binds exists in the account, listed with wrangler's own list commands
  (``d1 list --json``, ``r2 bucket list``, ``kv namespace list``, ``queues list``, and
  ``deployments status`` for service bindings);
* build artifacts exist and were built from the current commit (``dist/build-manifest.json`` with
  ``{"commit": SHA}``, written by the build; or a path configured per worker);
* the git tree is clean and HEAD is tagged, when asked.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from .diagnosis import explain_code
from .errors import WranglerError
from .wrangler import Wrangler, WranglerResult
from .wrangler_config import Binding, WranglerConfig, load_config

DEFAULT_MANIFEST = "dist/build-manifest.json"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing that would break the rollout.  ``code`` is the Cloudflare error the deploy would hit."""

    check: str
    message: str
    worker: str | None = None
    code: int | None = None
    where: str | None = None
    fix: str = ""

    def line(self) -> str:
        code = f"[code {self.code}] " if self.code else ""
        where = f"{self.where}: " if self.where else ""
        fix = f"\n      fix: {self.fix}" if self.fix else ""
        return f"{self.check}: {code}{where}{self.message}{fix}"

    @property
    def cause(self) -> str:
        return explain_code(self.code).cause if self.code else ""


@dataclass(frozen=True, slots=True)
class WorkerTarget:
    """A worker to check: its name and wrangler config (None: no config, only the name is known)."""

    name: str
    config: Path | None = None
    manifest: Path | None = None


@dataclass(frozen=True)
class PreflightOptions:
    """What to require beyond the always-on checks.

    Args:
        require_clean: the git tree must have no uncommitted changes.
        require_tag: HEAD must carry a tag.
        require_artifacts: a build manifest must exist for every worker (else only checked if present).
        commit: the commit the artifacts must come from (default: ``git rev-parse HEAD``).
        repo_dir: where to ask git (default: the first config's folder).
    """

    require_clean: bool = False
    require_tag: bool = False
    require_artifacts: bool = False
    commit: str | None = None
    repo_dir: Path | None = None


@dataclass(frozen=True)
class PreflightResult:
    problems: tuple[Problem, ...]
    passed: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        lines = [f"  ✓ {p}" for p in self.passed]
        lines += [f"  ✗ {p.line()}" for p in self.problems]
        verdict = "preflight ok" if self.ok else f"preflight FAILED: {len(self.problems)} problem(s)"
        return "\n".join([*lines, verdict])


async def run_preflight(workers: Sequence[WorkerTarget], wrangler: Wrangler,
                        options: PreflightOptions | None = None) -> PreflightResult:
    """Run every check (the wrangler calls concurrently) and return all problems found."""
    options = options or PreflightOptions()
    problems: list[Problem] = []
    passed: list[str] = []
    configs = {w.name: load_config(w.config) for w in workers if w.config is not None}
    for worker, config in configs.items():
        problems += [Problem("config", p.message, worker, p.code, p.where, p.fix) for p in config.problems]
        if not config.problems:
            passed.append(f"config {config.path} ({len(config.bindings)} bindings)")
    cwd = next((c.path.parent for c in configs.values()), None)
    listings: dict[str, Any] = {}
    services = sorted({b.fields.get("service", "") for c in configs.values() for b in c.of_kind("service")} - {""})
    kinds = {b.kind for c in configs.values() for b in c.bindings}

    async def whoami() -> None:
        problems.extend(await check_whoami(wrangler, cwd, passed))

    async def listing(key: str, *args: str) -> None:
        listings[key] = await _run(wrangler, cwd, *args)

    async with anyio.create_task_group() as tg:
        tg.start_soon(whoami)
        for kind, args in _LIST_COMMANDS.items():
            if kind in kinds:
                tg.start_soon(listing, kind, *args)
        for service in services:
            tg.start_soon(listing, "service:" + service, "deployments", "status", "--name", service, "--json")
    for worker, config in configs.items():
        problems += _check_resources(worker, config, listings, passed)
    commit = options.commit or await git_head(options.repo_dir or cwd)
    problems += await _check_artifacts(workers, configs, commit, options, passed)
    problems += await _check_git(options.repo_dir or cwd, options, passed)
    return PreflightResult(tuple(problems), tuple(passed))


_LIST_COMMANDS: dict[str, tuple[str, ...]] = {
    "d1": ("d1", "list", "--json"),
    "r2_bucket": ("r2", "bucket", "list"),
    "kv_namespace": ("kv", "namespace", "list"),
    "queue": ("queues", "list"),
}


async def _run(wrangler: Wrangler, cwd: Path | None, *args: str) -> WranglerResult | OSError:
    try:
        return await wrangler.run(*args, cwd=cwd)
    except OSError as exc:
        return exc


async def check_whoami(wrangler: Wrangler, cwd: Path | None, passed: list[str]) -> list[Problem]:
    result = await _run(wrangler, cwd, "whoami")
    if isinstance(result, OSError):
        return [Problem("wrangler", f"wrangler does not start: {result}", fix="install it (`npm i -D "
                        "wrangler@4`) or set ROLLOUT_WRANGLER to its cli.js")]
    text = result.stdout + result.stderr
    if not result.ok or "not authenticated" in text.lower():
        code = result.codes[0] if result.codes else 10000
        first = result.error_text.splitlines()[0] if result.error_text else "not authenticated"
        return [Problem("wrangler", f"`wrangler whoami` failed: {first}", code=code,
                        fix="export CLOUDFLARE_API_TOKEN (and CLOUDFLARE_ACCOUNT_ID) for this account")]
    passed.append("wrangler whoami: authenticated")
    return []


def _names(kind: str, result: WranglerResult) -> set[str]:
    """Names and ids in a list command's output."""
    if kind in ("d1", "kv_namespace"):
        try:
            items = result.json()
        except WranglerError:
            items = []
        if not isinstance(items, list):
            items = []
        keys = ("uuid", "name") if kind == "d1" else ("id", "title")
        return {str(i.get(k)) for i in items if isinstance(i, dict) for k in keys if i.get(k)}
    if kind == "r2_bucket":
        return set(re.findall(r"^name:\s+(\S+)", result.stdout, re.MULTILINE))
    names = set()
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) > 3 and cells[1] and cells[1] != "id":
            names.add(cells[2])
    return names


_MISSING = {
    "d1": ("database_id", "D1 database", None, "wrangler d1 create {name}"),
    "r2_bucket": ("bucket_name", "R2 bucket", 10085, "wrangler r2 bucket create {name}"),
    "kv_namespace": ("id", "KV namespace", None, "wrangler kv namespace create {binding}"),
    "queue": ("queue", "queue", None, "wrangler queues create {name}"),
}


def _check_resources(worker: str, config: WranglerConfig, listings: Mapping[str, Any],
                     passed: list[str]) -> list[Problem]:
    problems = []
    where = str(config.path)
    for binding in config.bindings:
        if binding.kind == "service":
            problems += _check_service(worker, config, binding, listings)
            continue
        if binding.kind not in _MISSING:
            continue
        key, label, code, create = _MISSING[binding.kind]
        wanted = str(binding.fields.get(key) or binding.fields.get("database_name") or "")
        result = listings.get(binding.kind)
        if not wanted:
            continue
        if isinstance(result, OSError) or result is None or not result.ok:
            detail = result.error_text.splitlines()[0] if isinstance(result, WranglerResult) and result.error_text \
                else str(result)
            problems.append(Problem("resources", f"cannot list {label}s to check {binding.name}: {detail}", worker,
                                    result.codes[0] if isinstance(result, WranglerResult) and result.codes else None,
                                    where))
            continue
        if wanted not in _names(binding.kind, result):
            name = binding.fields.get("database_name") or wanted
            problems.append(Problem(
                "resources", f"{label} {wanted!r} (binding {binding.name}) does not exist in the account", worker,
                code, f"{where}:{binding.line_of(key)}" if binding.line_of(key) else where,
                f"`{create.format(name=name, binding=binding.name)}`, or fix the name in {config.path.name}"))
        else:
            passed.append(f"{worker}: {label} {wanted} exists")
    return problems


def _check_service(worker: str, config: WranglerConfig, binding: Binding, listings: Mapping[str, Any]) -> list[Problem]:
    service = str(binding.fields.get("service", ""))
    result = listings.get("service:" + service)
    if isinstance(result, WranglerResult) and not result.ok and (10007 in result.codes or 10090 in result.codes):
        return [Problem("resources", f"service binding {binding.name} points at worker {service!r}, which does not "
                        "exist in the account", worker, 10143,
                        f"{config.path}:{binding.line_of('service')}" if binding.line else str(config.path),
                        f"deploy {service} first, or fix service = \"…\" in {config.path.name}")]
    return []


async def git(cwd: Path | None, *args: str) -> tuple[int, str]:
    try:
        proc = await anyio.run_process(["git", *args], cwd=cwd, check=False, stdin=subprocess.DEVNULL)
    except OSError:
        return 127, ""
    return proc.returncode, proc.stdout.decode("utf-8", "replace").strip()


async def git_head(cwd: Path | None) -> str | None:
    code, out = await git(cwd, "rev-parse", "HEAD")
    return out if code == 0 and out else None


def manifest_commit(data: Any) -> str | None:
    if isinstance(data, dict):
        for key in ("commit", "git_commit", "sha", "git_sha"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return None


async def _check_artifacts(workers: Sequence[WorkerTarget], configs: Mapping[str, WranglerConfig],
                           commit: str | None, options: PreflightOptions, passed: list[str]) -> list[Problem]:
    problems = []
    for worker in workers:
        config = configs.get(worker.name)
        path = worker.manifest or (config.path.parent / DEFAULT_MANIFEST if config else None)
        if path is None:
            continue
        apath = anyio.Path(path)
        if not await apath.exists():
            if worker.manifest is not None or options.require_artifacts:
                problems.append(Problem("artifacts", f"no build artifacts: {path} does not exist"
                                        + (f" (expected a build of commit {commit})" if commit else ""),
                                        worker.name, fix="run the build for this commit; it must write "
                                        f'{path.name} with {{"commit": "<git sha>"}}'))
            continue
        try:
            built = manifest_commit(json.loads(await apath.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            problems.append(Problem("artifacts", f"{path} is not readable JSON: {exc}", worker.name, where=str(path)))
            continue
        if built is None:
            problems.append(Problem("artifacts", f"{path} has no \"commit\" field", worker.name, where=str(path)))
        elif commit is None:
            problems.append(Problem("artifacts", f"cannot tell the current commit to compare with {built}",
                                    worker.name, where=str(path), fix="run inside the git checkout"))
        elif not (commit.startswith(built) or built.startswith(commit)):
            problems.append(Problem(
                "artifacts", f"build artifacts are from commit {built}, but the current commit is {commit}",
                worker.name, where=str(path), fix="rebuild for the current commit before deploying"))
        else:
            passed.append(f"{worker.name}: artifacts built from {commit[:12]}")
    return problems


async def _check_git(cwd: Path | None, options: PreflightOptions, passed: list[str]) -> list[Problem]:
    problems = []
    if options.require_clean:
        code, out = await git(cwd, "status", "--porcelain")
        if code != 0:
            problems.append(Problem("git", f"not a git checkout: {cwd}"))
        elif out:
            changed = out.splitlines()
            problems.append(Problem("git", f"the git tree has {len(changed)} uncommitted change(s): "
                                    + ", ".join(line[3:] for line in changed[:5]),
                                    fix="commit or stash them; a rollout deploys a commit, not a working tree"))
        else:
            passed.append("git tree clean")
    if options.require_tag:
        code, out = await git(cwd, "describe", "--exact-match", "--tags", "HEAD")
        if code != 0:
            problems.append(Problem("git", "HEAD has no tag", fix="tag the release: git tag vX.Y.Z && git push --tags"))
        else:
            passed.append(f"HEAD tagged {out}")
    return problems
