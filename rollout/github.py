"""GitHub Actions: workflow commands in the log, and the run's summary on the job page.

When ``GITHUB_ACTIONS=true`` the plain view also writes ``::group::`` / ``::endgroup::`` around each phase,
``::error::`` for a breach, a failed phase and an unverified rollback, ``::warning::`` for each Cloudflare
diagnosis, and ``::notice::`` for the outcome; after the run, summary.md is appended to
``$GITHUB_STEP_SUMMARY``.  Still one view owns the terminal: this is that view, with annotations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from rich.console import Console

from .bus import Breach, Diagnosis, EngineEvent, PhaseFinished, PhaseStarted, RollbackDone, RolloutFinished
from .view import PlainView


def in_github_actions(environ: Mapping[str, str] | None = None) -> bool:
    return (os.environ if environ is None else environ).get("GITHUB_ACTIONS") == "true"


def _data(text: str) -> str:
    """Escape a workflow command's message."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    """Escape a workflow command's property value."""
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str = "", **properties: str | int | None) -> str:
    """``::name key=value,…::message`` with GitHub's escaping."""
    props = ",".join(f"{key}={_prop(str(value))}" for key, value in properties.items() if value is not None)
    return f"::{name}{' ' + props if props else ''}::{_data(message)}"


def workflow_commands(event: EngineEvent) -> tuple[list[str], list[str]]:
    """The workflow command lines to write before and after the event's own line."""
    if isinstance(event, PhaseStarted):
        return [command("group", f"phase {event.index + 1}: {event.phase}")], []
    if isinstance(event, PhaseFinished):
        if event.status == "skipped":
            return [], []
        after = [command("endgroup")]
        if event.status == "failed":
            after.append(command("error", event.detail, title=f"phase {event.phase} failed"))
        return [], after
    if isinstance(event, Breach):
        return [], [command("error", event.detail, title=f"breach: {event.guard} on {event.worker}")]
    if isinstance(event, Diagnosis):
        code = f"code {event.code}: " if event.code is not None else ""
        return [], [command("warning", f"{code}{event.message} — cause: {event.cause} fix: {event.fix}",
                            title=event.command)]
    if isinstance(event, RollbackDone) and not event.verified:
        return [], [command("error", f"{event.worker} → {event.to_version}: {event.detail}",
                            title=f"rollback of {event.worker} NOT verified")]
    if isinstance(event, RolloutFinished):
        kind = "notice" if event.exit_code == 0 else "error" if event.exit_code == 3 else "warning"
        return [], [command(kind, event.detail, title=f"rollout {event.outcome} (exit {event.exit_code})")]
    return [], []


class GitHubView(PlainView):
    """The plain view, with GitHub Actions workflow commands around and after its lines."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self._open_group = False

    def on_event(self, event: EngineEvent) -> None:
        before, after = workflow_commands(event)
        if isinstance(event, PhaseStarted) and self._open_group:
            before.insert(0, command("endgroup"))
        for line in before:
            self.emit(line)
        super().on_event(event)
        for line in after:
            self.emit(line)
        if isinstance(event, PhaseStarted):
            self._open_group = True
        elif isinstance(event, PhaseFinished) and event.status != "skipped":
            self._open_group = False


def append_step_summary(summary: Path, environ: Mapping[str, str] | None = None) -> Path | None:
    """Append summary.md to ``$GITHUB_STEP_SUMMARY`` (when set); returns the file written, if any."""
    target = (os.environ if environ is None else environ).get("GITHUB_STEP_SUMMARY")
    if not target or not summary.exists():
        return None
    path = Path(target)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(summary.read_text(encoding="utf-8").rstrip("\n") + "\n\n")
    return path
