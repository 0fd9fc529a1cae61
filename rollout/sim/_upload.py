"""Script and version uploads: read wrangler's multipart body, check what the simulator supports.

Whatever the simulator cannot simulate is refused with a Cloudflare-style error that says so, never
accepted silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from rollout.sim._multipart import MultipartError, parse_form
from rollout.sim._state import State, Worker

#: binding types the simulator accepts; the edge does not emulate their storage.
SUPPORTED_BINDINGS = (
    "plain_text", "secret_text", "json", "kv_namespace", "durable_object_namespace", "queue", "service",
    "inherit", "version_metadata", "r2_bucket", "d1", "images",
)


class UploadError(Exception):
    def __init__(self, code: int, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(slots=True)
class Upload:
    metadata: dict[str, Any]
    modules: dict[str, bytes] = field(default_factory=dict)

    @property
    def main_module(self) -> str:
        return str(self.metadata.get("main_module") or self.metadata.get("body_part") or "")

    @property
    def bindings(self) -> list[dict[str, Any]]:
        return list(self.metadata.get("bindings") or [])

    @property
    def annotations(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.metadata.get("annotations") or {}).items()}

    def version_fields(self) -> dict[str, Any]:
        return {
            "annotations": self.annotations, "main_module": self.main_module,
            "compatibility_date": str(self.metadata.get("compatibility_date", "")),
            "compatibility_flags": list(self.metadata.get("compatibility_flags") or []),
            "bindings": self.bindings, "modules": sorted(self.modules),
        }


def read_upload(content_type: str, body: bytes) -> Upload:
    try:
        parts = parse_form(content_type, body)
    except MultipartError as exc:
        raise UploadError(10021, f"could not read the upload: {exc}") from exc
    meta = next((p for p in parts if p.name == "metadata"), None)
    if meta is None:
        raise UploadError(10021, "the upload has no metadata part")
    try:
        metadata = json.loads(meta.data)
    except ValueError as exc:
        raise UploadError(10021, f"the metadata part is not JSON: {exc}") from exc
    if not isinstance(metadata, dict):
        raise UploadError(10021, "the metadata part is not a JSON object")
    upload = Upload(metadata, {p.filename or p.name: p.data for p in parts if p.name != "metadata"})
    if not upload.main_module or upload.main_module not in upload.modules:
        raise UploadError(10021, f"main module {upload.main_module!r} is not among the uploaded parts")
    return upload


def check_upload(state: State, worker: Worker | None, name: str, upload: Upload) -> list[str]:
    """Validate bindings and migrations; returns the Durable Object classes after the migrations."""
    classes = apply_migrations(worker, upload)
    source = b"\n".join(upload.modules.values()).decode("utf-8", "replace")
    exported = {c for c in classes if re.search(rf"\bexport\b[^;]*\b{re.escape(c)}\b", source)}
    for binding in upload.bindings:
        kind, bname = binding.get("type"), binding.get("name", "?")
        if kind not in SUPPORTED_BINDINGS:
            raise UploadError(
                10021,
                f"binding {bname} has an unknown type {kind} (rollout sim supports "
                f"{', '.join(SUPPORTED_BINDINGS)})",
            )
        if kind == "service" and binding.get("service") not in state.workers and binding.get("service") != name:
            raise UploadError(
                10143, f"Could not resolve service binding '{bname}'. Target script "
                f"'{binding.get('service')}' not found.",
            )
        if kind == "durable_object_namespace":
            _check_do(state, name, binding, classes, exported)
        if kind == "r2_bucket" and binding.get("bucket_name") not in state.storage.r2:
            raise UploadError(10085, f"R2 bucket '{binding.get('bucket_name')}' not found. Please use a different "
                                     "name and try again.")
        if kind == "d1" and binding.get("id") not in state.storage.d1:
            raise UploadError(10181, f"D1 database '{binding.get('id')}' of binding {bname} not found.")
    return classes


def _check_do(state: State, name: str, binding: dict[str, Any], classes: list[str], exported: set[str]) -> None:
    class_name, script = binding.get("class_name"), binding.get("script_name")
    if script and script != name:
        other = state.workers.get(str(script))
        if other is None or class_name not in other.do_classes:
            raise UploadError(10061, f"Durable Object {class_name} of script {script} does not exist")
        return
    if class_name not in classes:
        raise UploadError(
            10064,
            f"Cannot create binding for class '{class_name}' that is not exported by the script "
            "or has no migration creating it; add a [[migrations]] entry with new_sqlite_classes",
        )
    if class_name not in exported:
        raise UploadError(10061, f"Durable Object class '{class_name}' is not exported by the main module")


def apply_migrations(worker: Worker | None, upload: Upload) -> list[str]:
    """The worker's DO classes after the upload's ``migrations`` (checked against the current tag)."""
    classes = list(worker.do_classes) if worker else []
    current = worker.migration_tag if worker else None
    migrations = upload.metadata.get("migrations")
    if not migrations:
        return classes
    old_tag = migrations.get("old_tag")
    if old_tag != current:
        raise UploadError(
            10079, f"Migration tag precondition failed; current tag is {current!r}, old_tag was {old_tag!r}"
        )
    for step in migrations.get("steps") or []:
        for key in ("new_classes", "new_sqlite_classes"):
            classes += [c for c in step.get(key) or [] if c not in classes]
        for renamed in step.get("renamed_classes") or []:
            classes = [renamed["to"] if c == renamed["from"] else c for c in classes]
        classes = [c for c in classes if c not in (step.get("deleted_classes") or [])]
        if step.get("transferred_classes"):
            raise UploadError(10021, "rollout sim: transferred_classes migrations are not supported")
    return classes
