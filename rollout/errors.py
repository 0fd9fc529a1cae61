"""The exceptions of rollout.  Every one of them derives from :class:`RolloutError`.

::

    RolloutError
    ├── PlanError            the plan file or its values are wrong (file and line in the message)
    ├── UsageError           the command line asks for something impossible
    ├── WranglerError        a wrangler command failed (exit status, Cloudflare codes, stderr)
    │   └── WranglerTimeout  a wrangler command did not finish in time and was killed (transient)
    ├── SimulatorError       the simulator could not start or was misconfigured
    ├── ScenarioError        a scenario file is wrong (file and field in the message)
    ├── PhaseFailed          a phase of the plan failed
    ├── LockHeld             another rollout holds the lock of a worker
    └── RollbackFailed       a rollback did not take, or could not be verified

Messages are written for the person at the terminal: what went wrong and what to do next.
"""

from __future__ import annotations


class RolloutError(Exception):
    """Base class of every error rollout raises on purpose."""


class PlanError(RolloutError):
    """The plan file cannot be loaded or describes something impossible."""


class UsageError(RolloutError):
    """The command line or an API call was used wrongly."""


class SimulatorError(RolloutError):
    """The local Cloudflare simulator could not do what was asked."""


class ScenarioError(SimulatorError):
    """A simulator scenario is invalid; the message names the file and the field."""


class WranglerError(RolloutError):
    """A wrangler command failed.

    Attributes:
        argv: the arguments given to wrangler (without node and cli.js).
        returncode: the exit status.
        codes: Cloudflare error codes found in its output, first one first.
        stderr: its standard error with ANSI colours stripped.
        transient: True when trying again may help (a timeout, an API hiccup).
    """

    transient: bool = False

    def __init__(
        self, message: str, *, argv: tuple[str, ...] = (), returncode: int | None = None,
        codes: tuple[int, ...] = (), stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.argv = argv
        self.returncode = returncode
        self.codes = codes
        self.stderr = stderr


class WranglerTimeout(WranglerError):
    """A wrangler command ran longer than its timeout; its whole process group was killed.

    Transient: the API may only be slow, so a retry (e.g. of a rollback) may work.  A command that timed
    out may still have changed something on the server, so read the state again before assuming not.

    Attributes:
        timeout_s: the limit it ran into, in seconds.
    """

    transient = True

    def __init__(
        self, message: str, *, argv: tuple[str, ...] = (), timeout_s: float = 0.0, stderr: str = "",
    ) -> None:
        super().__init__(message, argv=argv, returncode=None, stderr=stderr)
        self.timeout_s = timeout_s


class PhaseFailed(RolloutError):
    """A phase did not succeed."""

    def __init__(self, phase: str, reason: str) -> None:
        super().__init__(f"phase {phase!r} failed: {reason}")
        self.phase = phase
        self.reason = reason


class LockHeld(RolloutError):
    """Another rollout holds the lock of a worker."""


class RollbackFailed(RolloutError):
    """A rollback did not take or could not be verified; a person must act."""
