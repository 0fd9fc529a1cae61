"""Start a long-lived child so that it dies with the runner, even when the runner is killed with SIGKILL.

``python _orphan_guard.py PARENT_PID COMMAND ARGS...`` asks the Linux kernel for a parent-death signal
(``prctl(PR_SET_PDEATHSIG, SIGTERM)``), checks that ``PARENT_PID`` is still its parent (it may have died
before the request was made), and then execs ``COMMAND``.  The request survives ``execve``, so COMMAND
(``node … wrangler tail``) gets SIGTERM as soon as the runner's process is gone, however it went: wrangler
4.164 then deletes its tail on the server and exits.

This is a launcher rather than a ``preexec_fn`` because :func:`anyio.open_process` takes none.  It is run
as a script (``-I -S``: stdlib only, no site, no package import), which costs a few milliseconds before
node starts.  The kernel sends the signal when the *thread* that started the child ends; asyncio starts
children from the event loop's thread, which lives as long as the runner.  Elsewhere than on Linux the
command is exec'd without the guard.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

#: from <linux/prctl.h>
PR_SET_PDEATHSIG = 1
#: exit code when the parent is already gone: nothing to run for
EXIT_PARENT_GONE = 75


def guarded_argv(argv: Sequence[str], parent_pid: int | None = None) -> list[str]:
    """``argv`` wrapped in this launcher (on Linux), for a child that must not outlive ``parent_pid``."""
    if not sys.platform.startswith("linux") or not argv:
        return list(argv)
    pid = os.getpid() if parent_pid is None else parent_pid
    return [sys.executable, "-I", "-S", os.path.abspath(__file__), str(pid), *argv]


def _set_parent_death_signal(sig: int) -> bool:
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def main(args: Sequence[str]) -> int:
    if len(args) < 2 or not args[0].isdigit():
        sys.stderr.write("usage: _orphan_guard.py PARENT_PID COMMAND [ARGS...]\n")
        return 2
    parent, command = int(args[0]), list(args[1:])
    if sys.platform.startswith("linux"):
        if not _set_parent_death_signal(signal.SIGTERM):
            sys.stderr.write("rollout: prctl(PR_SET_PDEATHSIG) failed; the child may outlive the runner\n")
        if os.getppid() != parent:  # the runner died before the request: do not start an orphan
            return EXIT_PARENT_GONE
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        sys.stderr.write(f"rollout: cannot run {command[0]}: {exc}\n")
        return 127
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
