"""The gate prompt in a real pseudo-terminal stays intact while traffic, tails and monitors run."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import time
from pathlib import Path

import pytest
from terminal import read_fd

from .conftest import VAST_PARSER, rollout_argv, write

pytestmark = [pytest.mark.wrangler, pytest.mark.slow]

QUESTION = "Ship it to everyone?"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][A-Z0-9]|\r")


def test_gate_prompt_is_not_broken_by_background_output(workdir: Path) -> None:
    """Deploy + monitors + traffic, then a Gate: for 5 s after the prompt nothing is written; `y` finishes."""
    plan = write(workdir / "plan.py", f'''
        from phases import Deploy, Gate, Watch
        from rollout import Plan, Worker

        app = Worker("cf-ssai-vast-parser", config={str(VAST_PARSER / "wrangler.toml")!r})
        plan = Plan(name="pty", workers=[app], baseline="1s", recovery="1s",
                    phases=[Deploy(app), Gate({QUESTION!r}), Watch("1s")])
        ''')
    main, child = pty.openpty()
    env = {**os.environ, "ROLLOUT_LOCK_DIR": str(workdir / "locks"), "TERM": "xterm", "COLUMNS": "160",
           "LINES": "50"}
    proc = subprocess.Popen(rollout_argv("run", str(plan), "--sim"), cwd=workdir, env=env, stdin=child,
                            stdout=child, stderr=child, close_fds=True)
    os.close(child)
    try:
        seen = b""
        deadline = time.monotonic() + 90
        while QUESTION.encode() not in seen:
            assert time.monotonic() < deadline, f"no prompt; output so far: {seen[-2000:]!r}"
            seen += read_fd(main, 0.5)
        tail = seen[seen.rindex(QUESTION.encode()):]
        waiting = read_fd(main, 5.0)  # traffic and the tail keep flowing while the prompt waits
        prompt_line = _ANSI.sub("", (tail + waiting).decode("utf-8", "replace"))
        assert prompt_line.startswith(QUESTION)
        assert "\n" not in prompt_line, f"something was written into the prompt: {prompt_line!r}"
        assert waiting == b"", f"output while the prompt waited: {waiting!r}"
        os.write(main, b"y\n")
        rest = b""
        end = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < end:
            rest += read_fd(main, 0.5)
        rest += read_fd(main, 0.5)
        assert proc.wait(timeout=10) == 0, rest.decode("utf-8", "replace")[-2000:]
        assert b"succeeded" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
