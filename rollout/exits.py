"""Exit codes: one meaning each, for every command (the README's "When something goes wrong" lists them).

A CI job branches on these, so a code never means two things.
"""

from __future__ import annotations

from typing import Final

#: Every phase succeeded on observed evidence (or a watch ran its time, saw traffic, and nothing breached).
EXIT_OK: Final = 0
#: Something breached or failed after a change; rollout rolled back what it changed and verified it.
EXIT_ROLLED_BACK: Final = 1
#: Usage, plan or refusal before any change (bad option, plan error, lock held, gate with nobody to answer).
EXIT_USAGE: Final = 2
#: A rollback failed or could not be verified: a person must act (the message gives the exact command).
EXIT_ROLLBACK_FAILED: Final = 3
#: An internal error (a bug in rollout), after rolling back and verifying what had changed.
EXIT_INTERNAL: Final = 4
#: A watch that could not see: blind (no stream, or a silent one) for more than its allowed share of the time.
EXIT_BLIND: Final = 5
#: A watch breached and alerted without rolling back (no ``--rollback-on-breach``).
EXIT_ALERTED: Final = 6
#: ``rollout preflight`` found problems (nothing was changed).
EXIT_PREFLIGHT: Final = 7
#: Stopped by SIGINT before anything changed (SIGTERM: 143), after the usual shell convention.
EXIT_INTERRUPTED: Final = 130

MEANINGS: Final[dict[int, str]] = {
    EXIT_OK: "succeeded",
    EXIT_ROLLED_BACK: "rolled back and verified",
    EXIT_USAGE: "usage, plan or refusal before any change",
    EXIT_ROLLBACK_FAILED: "rollback failed or unverified: act by hand",
    EXIT_INTERNAL: "internal error (after rolling back what changed)",
    EXIT_BLIND: "watch was blind",
    EXIT_ALERTED: "watch alerted, nothing rolled back",
    EXIT_PREFLIGHT: "preflight found problems",
    EXIT_INTERRUPTED: "interrupted before any change",
}
