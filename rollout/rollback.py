"""Roll one worker back to a version and verify it took: shared by ``rollout run`` and ``rollout watch``.

``wrangler rollback`` is retried on transient failures (API 5xx, internal-error codes, and a command that
ran into its timeout) with exponential backoff between attempts, never after the last one.  After every
attempt — also a failed one, since a failed or timed-out command may already have moved traffic —
``deployments status --json`` decides: the rollback counts only when the target version serves 100%.

When it does not take, the outcome's ``detail`` names the worker, the version and the exact command to run
by hand, plus the Cloudflare error code wrangler reported (explained as in :mod:`rollout.diagnosis`), and a
:class:`~rollout.bus.Diagnosis` is published per code so that the report records it.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass

import anyio

from .bus import Diagnosis, EventBus, RollbackAttempt
from .diagnosis import explain_code
from .errors import WranglerError
from .wrangler import DeploymentState, Wrangler

logger = logging.getLogger("rollout.rollback")


@dataclass(frozen=True, slots=True)
class RollbackOutcome:
    """How a rollback ended.

    Attributes:
        attempts: ``wrangler rollback`` runs made.
        verified: the target version serves 100% (read back with ``deployments status``).
        detail: one line for the person at the terminal; when not verified it names the worker, the
            version, the Cloudflare code if any, and the command to run by hand.
        codes: Cloudflare error codes wrangler reported over all attempts, first seen first.
        command: the command that rolls back by hand (also when verified, for the record).
    """

    attempts: int
    verified: bool
    detail: str
    codes: tuple[int, ...] = ()
    command: str = ""


def manual_command(worker: str, version: str) -> str:
    """The rollback to run by hand: ``wrangler rollback <version> --name <worker> -y``."""
    return f"wrangler rollback {shlex.quote(version)} --name {shlex.quote(worker)} -y"


async def read_state(wrangler: Wrangler, worker: str) -> DeploymentState | None:
    """The active deployment, or None when it cannot be read (logged; a timeout included)."""
    try:
        return await wrangler.deployment_status(worker)
    except WranglerError as exc:
        logger.info("cannot read deployment of %s: %s", worker, exc)
        return None


@dataclass(frozen=True, slots=True)
class _Attempt:
    ok: bool
    transient: bool
    said: str
    codes: tuple[int, ...]
    messages: dict[int, str]


async def _attempt(wrangler: Wrangler, worker: str, version: str, message: str) -> _Attempt:
    """One ``wrangler rollback``; a timeout or another wrangler error is a failed attempt, never raised."""
    try:
        result = await wrangler.rollback(worker, version, message)
    except WranglerError as exc:
        return _Attempt(False, exc.transient, str(exc), exc.codes, {})
    if result.ok:
        return _Attempt(True, False, "ok", (), {})
    lines = result.error_text.splitlines()
    said = lines[0] if lines else f"wrangler rollback exited {result.returncode}"
    messages = {code: next((line.strip() for line in lines if f"[code: {code}]" in line), said)
                for code in result.codes}
    return _Attempt(False, result.transient, said, result.codes, messages)


async def rollback_and_verify(
    wrangler: Wrangler, bus: EventBus, worker: str, from_version: str | None, to_version: str, message: str,
    *, attempts: int = 5, backoff_s: float = 1.0,
) -> RollbackOutcome:
    """Roll ``worker`` back to ``to_version``; publish each attempt; stop early on a permanent error.

    Never raises for wrangler failures or timeouts: they are attempts that did not take.
    """
    command = manual_command(worker, to_version)
    codes: dict[int, str] = {}
    said = ""
    state: DeploymentState | None = None
    attempt = 0
    for attempt in range(1, max(1, attempts) + 1):
        tried = await _attempt(wrangler, worker, to_version, message[:200])
        state = await read_state(wrangler, worker)
        for code in tried.codes:
            codes.setdefault(code, tried.messages.get(code, tried.said))
        bus.publish(RollbackAttempt(worker=worker, from_version=from_version, to_version=to_version, attempt=attempt,
                                    ok=tried.ok, detail=tried.said, codes=tried.codes))
        if state is not None and state.sole_version == to_version:
            return RollbackOutcome(attempt, True, f"{to_version} serves 100% (verified with deployments status)",
                                   tuple(codes), command)
        if tried.ok:
            said = f"wrangler said ok but deployments status shows {_shows(state)}"
        else:
            said = tried.said
            if not tried.transient and attempt >= 2:
                break
        if attempt < attempts:
            await anyio.sleep(backoff_s * 2 ** (attempt - 1))
    outcome = RollbackOutcome(attempt, False, _failure(worker, from_version, to_version, attempt, said, codes,
                                                       state, command), tuple(codes), command)
    for code, text in codes.items():
        explained = explain_code(code, text)
        bus.publish(Diagnosis(phase="rollback", command=command, code=code, message=explained.message,
                              cause=explained.cause, fix=explained.fix))
    logger.info("%s", outcome.detail)
    return outcome


def _shows(state: DeploymentState | None) -> str:
    if state is None:
        return "nothing readable"
    return ", ".join(f"{vid} at {pct:g}%" for vid, pct in state.versions) or "no versions"


def _failure(worker: str, from_version: str | None, to_version: str, attempts: int, said: str,
             codes: dict[int, str], state: DeploymentState | None, command: str) -> str:
    """``rollback of W to V NOT verified after N attempts: …; run by hand: `wrangler rollback V --name W -y```."""
    parts = [f"rollback of {worker} to {to_version} NOT verified after {attempts} attempt(s): {said}"]
    for code in codes:
        cause = explain_code(code).cause
        parts.append(f"Cloudflare error code {code}" + (f" ({cause})" if cause else ""))
    live = _shows(state) if state is not None else (f"{from_version} (last known)" if from_version else "unknown")
    parts.append(f"live now: {live}")
    parts.append(f"roll back by hand: `{command}`, then check with "
                 f"`wrangler deployments status --name {shlex.quote(worker)}`")
    return "; ".join(parts)
