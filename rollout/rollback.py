"""Roll one worker back to a version and verify it took: shared by ``rollout run`` and ``rollout watch``.

``wrangler rollback`` is retried on transient API errors with exponential backoff.  After every attempt —
also a failed one, since a failed command may already have moved traffic — ``deployments status --json``
decides: the rollback counts only when the target version serves 100%.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import anyio

from .bus import EventBus, RollbackAttempt
from .errors import WranglerError
from .wrangler import DeploymentState, Wrangler

logger = logging.getLogger("rollout.rollback")


@dataclass(frozen=True, slots=True)
class RollbackOutcome:
    attempts: int
    verified: bool
    detail: str


async def read_state(wrangler: Wrangler, worker: str) -> DeploymentState | None:
    """The active deployment, or None when it cannot be read (logged)."""
    try:
        return await wrangler.deployment_status(worker)
    except WranglerError as exc:
        logger.info("cannot read deployment of %s: %s", worker, exc)
        return None


async def rollback_and_verify(
    wrangler: Wrangler, bus: EventBus, worker: str, from_version: str | None, to_version: str, message: str,
    *, attempts: int = 5, backoff_s: float = 1.0,
) -> RollbackOutcome:
    """Roll ``worker`` back to ``to_version``; publish each attempt; stop early on a permanent error."""
    detail = ""
    for attempt in range(1, attempts + 1):
        result = await wrangler.rollback(worker, to_version, message[:200])
        state = await read_state(wrangler, worker)
        said = "ok" if result.ok else (result.error_text.splitlines()[0] if result.error_text else "failed")
        bus.publish(RollbackAttempt(worker=worker, from_version=from_version, to_version=to_version, attempt=attempt,
                                    ok=result.ok, detail=said, codes=result.codes))
        if state is not None and state.sole_version == to_version:
            return RollbackOutcome(attempt, True, f"{to_version} serves 100% (verified with deployments status)")
        if result.ok:
            detail = f"wrangler said ok but deployments status shows {state.versions if state else '?'}"
        else:
            detail = said
            if not result.transient and attempt >= 2:
                return RollbackOutcome(attempt, False, detail)
        await anyio.sleep(backoff_s * 2 ** (attempt - 1))
    return RollbackOutcome(attempts, False, detail)
