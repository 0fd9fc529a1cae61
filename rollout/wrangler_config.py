"""Read a worker's wrangler config (``wrangler.toml``, ``.json`` or ``.jsonc``) and check its bindings.

Every binding keeps the file line where it was written (found by scanning the text: tomllib does not
report positions), so a problem can say "wrangler.toml:14: type = "Images" → type = "images"".
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: binding type names the Workers API accepts in upload metadata (``[[unsafe.bindings]] type = …``).
API_BINDING_TYPES = (
    "ai", "analytics_engine", "assets", "browser", "d1", "data_blob", "dispatch_namespace",
    "durable_object_namespace", "hyperdrive", "images", "inherit", "json", "kv_namespace", "mtls_certificate",
    "pipelines", "plain_text", "queue", "r2_bucket", "ratelimit", "secret_key", "secret_text",
    "secrets_store_secret", "send_email", "service", "tail_consumer", "text_blob", "vectorize",
    "version_metadata", "wasm_module", "workflow",
)

#: config section → (API binding type, the key holding the binding name, required keys).
SECTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "kv_namespaces": ("kv_namespace", "binding", ("binding", "id")),
    "r2_buckets": ("r2_bucket", "binding", ("binding", "bucket_name")),
    "d1_databases": ("d1", "binding", ("binding",)),
    "queues.producers": ("queue", "binding", ("binding", "queue")),
    "queues.consumers": ("queue_consumer", "queue", ("queue",)),
    "services": ("service", "binding", ("binding", "service")),
    "durable_objects.bindings": ("durable_object_namespace", "name", ("name", "class_name")),
    "analytics_engine_datasets": ("analytics_engine", "binding", ("binding",)),
    "vectorize": ("vectorize", "binding", ("binding", "index_name")),
    "hyperdrive": ("hyperdrive", "binding", ("binding", "id")),
    "unsafe.bindings": ("unsafe", "name", ("name", "type")),
}
#: single-table bindings: ``[images] binding = "IMAGES"``.
SINGLE = {"images": "images", "ai": "ai", "browser": "browser", "version_metadata": "version_metadata"}

TOP_LEVEL_KEYS = (
    "name", "main", "compatibility_date", "compatibility_flags", "account_id", "workers_dev", "routes", "route",
    "vars", "kv_namespaces", "r2_buckets", "d1_databases", "queues", "services", "durable_objects", "migrations",
    "analytics_engine_datasets", "vectorize", "hyperdrive", "unsafe", "images", "ai", "browser",
    "version_metadata", "triggers", "env", "build", "rules", "no_bundle", "find_additional_modules",
    "base_dir", "preserve_file_names", "minify", "keep_names", "tsconfig", "node_compat", "upload_source_maps",
    "placement", "limits", "observability", "logpush", "tail_consumers", "assets", "site", "dev",
    "preview_urls", "workflows", "send_email", "dispatch_namespaces", "mtls_certificates", "pipelines",
    "secrets_store_secrets", "containers", "wasm_modules", "text_blobs", "data_blobs", "alias", "define",
    "keep_vars", "usage_model", "first_party_worker", "logfwdr", "streaming_tail_consumers", "$schema",
    "legacy_env", "send_metrics", "jsx_factory", "jsx_fragment", "ratelimits", "unsafe_hello_world",
    "compliance_region", "python_modules", "upload_source_maps", "secrets",
)


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """Something wrong in a config: where, what, the Cloudflare code the deploy would hit, and the fix."""

    file: Path
    line: int | None
    message: str
    fix: str
    code: int | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else str(self.file)


@dataclass(frozen=True, slots=True)
class Binding:
    section: str
    kind: str
    name: str
    fields: dict[str, Any]
    line: int | None
    key_lines: dict[str, int | None] = field(default_factory=dict)

    def line_of(self, key: str) -> int | None:
        """The line of one of the binding's keys (``bucket_name = …``), else of the binding."""
        return self.key_lines.get(key) or self.line


@dataclass(frozen=True)
class WranglerConfig:
    path: Path
    data: dict[str, Any]
    bindings: tuple[Binding, ...] = ()
    problems: tuple[ConfigProblem, ...] = ()
    text: str = field(default="", repr=False)

    @property
    def name(self) -> str | None:
        name = self.data.get("name")
        return str(name) if isinstance(name, str) else None

    def of_kind(self, kind: str) -> list[Binding]:
        return [b for b in self.bindings if b.kind == kind]

    def d1(self, binding: str) -> Binding | None:
        return next((b for b in self.of_kind("d1") if b.name == binding), None)

    def migrations_dir(self, binding: Binding) -> Path:
        return self.path.parent / str(binding.fields.get("migrations_dir") or "migrations")


class _Lines:
    """Finds lines in the config text: table headers and ``key = value`` pairs under them."""

    def __init__(self, text: str, is_toml: bool) -> None:
        self.lines = text.splitlines()
        self.is_toml = is_toml

    def headers(self, section: str) -> list[int]:
        pattern = re.compile(r"^\s*\[\[\s*" + re.escape(section) + r"\s*\]\]")
        return [i + 1 for i, line in enumerate(self.lines) if pattern.match(line)]

    def key_after(self, start: int | None, key: str, value: Any = None) -> int | None:
        """The line of ``key`` (optionally with ``value``) in the block starting at ``start``."""
        begin = (start or 1) - 1
        quoted = re.escape(json.dumps(value)) if isinstance(value, str) else ""
        if self.is_toml:
            pat = re.compile(r"^\s*" + re.escape(key) + r"\s*=\s*" + (quoted or ""))
        else:
            pat = re.compile(r'"' + re.escape(key) + r'"\s*:\s*' + (quoted or ""))
        for i in range(begin, len(self.lines)):
            if i > begin and start is not None and self.is_toml and self.lines[i].lstrip().startswith("["):
                break
            if pat.search(self.lines[i]):
                return i + 1
        return None

    def anywhere(self, needle: str, nth: int = 0) -> int | None:
        hits = [i + 1 for i, line in enumerate(self.lines) if needle in line]
        return hits[nth] if len(hits) > nth else (hits[0] if hits else None)


def strip_jsonc(text: str) -> str:
    """Remove ``//`` and ``/* */`` comments and trailing commas, keeping line breaks (and so line numbers)."""
    out, i, in_str = [], 0, False
    while i < len(text):
        ch = text[i]
        if in_str:
            out.append(ch)
            if ch == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
            out.append(ch)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = len(text) if end < 0 else end + 2
            out.append("\n" * text.count("\n", i, end))
            i = end
            continue
        else:
            out.append(ch)
        i += 1
    return re.sub(r",(\s*[}\]])", r"\1", "".join(out))


def load_config(path: Path) -> WranglerConfig:
    """Parse one config file; problems (including "does not parse") are returned, never raised."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return WranglerConfig(path, {}, problems=(ConfigProblem(path, None, f"cannot read the wrangler config: "
                                                                f"{exc.strerror}", "check the worker's config= "
                                                                "path in the plan"),))
    is_toml = path.suffix == ".toml"
    try:
        data = tomllib.loads(text) if is_toml else json.loads(strip_jsonc(text))
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        return WranglerConfig(path, {}, problems=(ConfigProblem(
            path, int(match.group(1)) if match else None, f"not valid TOML: {exc}", "fix the syntax"),), text=text)
    except json.JSONDecodeError as exc:
        return WranglerConfig(path, {}, problems=(ConfigProblem(
            path, exc.lineno, f"not valid JSON: {exc.msg}", "fix the syntax"),), text=text)
    if not isinstance(data, dict):
        return WranglerConfig(path, {}, problems=(ConfigProblem(path, 1, "the config is not a table/object",
                                                                "start from `wrangler init`"),), text=text)
    lines = _Lines(text, is_toml)
    bindings, problems = _bindings(path, data, lines)
    problems += _top_level(path, data, lines)
    return WranglerConfig(path, data, tuple(bindings), tuple(problems), text)


def _dig(data: dict[str, Any], dotted: str) -> Any:
    value: Any = data
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _bindings(path: Path, data: dict[str, Any], lines: _Lines) -> tuple[list[Binding], list[ConfigProblem]]:
    bindings: list[Binding] = []
    problems: list[ConfigProblem] = []
    for section, (kind, name_key, required) in SECTIONS.items():
        entries = _dig(data, section)
        if entries is None:
            continue
        if isinstance(entries, dict) and section in ("vectorize", "hyperdrive"):
            entries = [entries]
        if not isinstance(entries, list):
            problems.append(ConfigProblem(path, lines.anywhere(section.split(".")[-1]),
                                          f"{section} must be an array of tables ([[{section}]])",
                                          f"write each binding as a [[{section}]] table"))
            continue
        headers = lines.headers(section) if lines.is_toml else []
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                continue
            start = headers[index] if index < len(headers) else None
            name = str(entry.get(name_key, "?"))
            line = start or lines.anywhere(f'"{name}"') or lines.anywhere(name)
            real_kind = kind
            if section == "unsafe.bindings":
                real_kind = str(entry.get("type", ""))
                problems += _check_type(path, entry, name, lines, start)
            for key in required:
                if not entry.get(key):
                    problems.append(ConfigProblem(
                        path, line, f"[[{section}]] #{index + 1} ({name}) has no {key}",
                        f"add {key} = \"…\" to that [[{section}]] table", code=10021))
            if section == "d1_databases" and not (entry.get("database_id") or entry.get("database_name")):
                problems.append(ConfigProblem(path, line, f"D1 binding {name} has neither database_id nor "
                                              "database_name", "add database_name = \"…\" and database_id = "
                                              "\"…\" (from `wrangler d1 list`)", code=10021))
            key_lines = {k: lines.key_after(start, k, entry[k] if isinstance(entry[k], str) else None)
                         for k in entry} if start is not None or not lines.is_toml else {}
            bindings.append(Binding(section, real_kind, name, dict(entry), line, key_lines))
    for key, kind in SINGLE.items():
        value = data.get(key)
        if isinstance(value, dict):
            line = lines.anywhere(f"[{key}]") if lines.is_toml else lines.anywhere(f'"{key}"')
            if not value.get("binding"):
                problems.append(ConfigProblem(path, line, f"[{key}] has no binding name",
                                              f'add binding = "{key.upper()}" under [{key}]', code=10021))
            bindings.append(Binding(key, kind, str(value.get("binding", "?")), dict(value), line))
    return bindings, problems


def _check_type(path: Path, entry: dict[str, Any], name: str, lines: _Lines, start: int | None) -> list[ConfigProblem]:
    kind = entry.get("type")
    if not isinstance(kind, str) or kind in API_BINDING_TYPES:
        return []
    line = lines.key_after(start, "type", kind) or lines.anywhere(f'"{kind}"')
    exact = next((t for t in API_BINDING_TYPES if t.lower() == kind.lower().replace("-", "_")), None)
    eq = " = " if lines.is_toml else ": "
    key = "type" if lines.is_toml else '"type"'
    if exact is not None:
        return [ConfigProblem(
            path, line, f"binding {name} has an unknown type {kind}: binding types are case-sensitive",
            f'change `{key}{eq}"{kind}"` to `{key}{eq}"{exact}"`', code=10021)]
    return [ConfigProblem(path, line, f"binding {name} has an unknown type {kind}",
                          f"use one of: {', '.join(API_BINDING_TYPES)}", code=10021)]


def _top_level(path: Path, data: dict[str, Any], lines: _Lines) -> list[ConfigProblem]:
    problems = []
    known = {k.lower(): k for k in TOP_LEVEL_KEYS}
    for key in data:
        if key in TOP_LEVEL_KEYS:
            continue
        line = lines.anywhere(f"[{key}") if lines.is_toml else lines.anywhere(f'"{key}"')
        if line is None and lines.is_toml:
            line = lines.anywhere(key)
        exact = known.get(key.lower())
        if exact is not None:
            problems.append(ConfigProblem(path, line, f"unknown field {key!r}: config keys are case-sensitive",
                                          f"rename {key!r} to {exact!r}", code=10021))
    if not data.get("name"):
        problems.append(ConfigProblem(path, 1, "the config has no name", 'add name = "<worker name>"'))
    return problems
