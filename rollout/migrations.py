"""D1 migrations, idempotent: list what is pending, apply only that, record what was applied.

Wrangler is always given the **binding** name from the worker's config
(``wrangler d1 migrations apply DB --remote``), never the database name: with the binding, wrangler
reads ``database_id`` and ``migrations_dir`` from the config, which is what deploys use too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import anyio

from .errors import WranglerError
from .wrangler import Wrangler, WranglerResult

_NAME = re.compile(r"│\s*(\S+\.sql)\s*│")


@dataclass(frozen=True, slots=True)
class MigrationRun:
    """What one ``Migrate`` of one binding did."""

    binding: str
    local: tuple[str, ...]
    pending_before: tuple[str, ...]
    applied: tuple[str, ...]
    commands: tuple[tuple[str, ...], ...]
    #: the apply's error, when it failed part-way (``applied`` still lists what did go in)
    error: WranglerError | None = None


async def local_migrations(folder: Path) -> list[str]:
    """The ``*.sql`` files of a migrations folder, in the order wrangler applies them."""
    apath = anyio.Path(folder)
    if not await apath.is_dir():
        return []
    return sorted([p.name async for p in apath.iterdir() if p.name.endswith(".sql")])


def parse_pending(output: str) -> list[str]:
    """Migration names in ``wrangler d1 migrations list|apply`` tables ("✅ No migrations to apply!" → [])."""
    if "No migrations to apply" in output:
        return []
    seen: dict[str, None] = {}
    for match in _NAME.finditer(output):
        seen.setdefault(match.group(1), None)
    return list(seen)


class D1Migrator:
    """Runs wrangler's D1 migration commands for one binding of one config."""

    def __init__(self, wrangler: Wrangler, config: Path, binding: str) -> None:
        self.wrangler = wrangler
        self.config = config
        self.binding = binding

    def argv(self, action: str) -> tuple[str, ...]:
        return ("d1", "migrations", action, self.binding, "--remote", "--config", self.config.name)

    async def _run(self, action: str) -> WranglerResult:
        result = await self.wrangler.run(*self.argv(action), cwd=self.config.parent)
        return result.raise_for_status()

    async def pending(self) -> list[str]:
        return parse_pending((await self._run("list")).stdout)

    async def migrate(self, folder: Path) -> MigrationRun:
        """List, apply only if something is pending, list again; what disappeared was applied."""
        local = await local_migrations(folder)
        before = await self.pending()
        commands = [self.argv("list")]
        if not before:
            return MigrationRun(self.binding, tuple(local), (), (), tuple(commands))
        unknown = [name for name in before if name not in local]
        if unknown:
            raise WranglerError(f"wrangler lists pending migrations not in {folder}: {', '.join(unknown)}")
        commands.append(self.argv("apply"))
        error = None
        try:
            await self._run("apply")
        except WranglerError as exc:
            error = exc
        after = await self.pending()
        commands.append(self.argv("list"))
        applied = tuple(name for name in before if name not in after)
        return MigrationRun(self.binding, tuple(local), tuple(before), applied, tuple(commands), error)
