"""multipart/form-data parsing with the stdlib email parser (wrangler's script and version uploads)."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes


class MultipartError(ValueError):
    """The body is not multipart/form-data we can read."""


def parse_form(content_type: str, body: bytes) -> list[Part]:
    """The parts of a ``multipart/form-data`` body, in order."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise MultipartError(f"expected multipart/form-data, got {content_type or 'no content type'}")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise MultipartError("multipart body without parts (boundary missing or wrong)")
    parts: list[Part] = []
    for sub in message.iter_parts():
        assert isinstance(sub, Message)
        name = sub.get_param("name", header="content-disposition")
        filename = sub.get_filename()
        payload = sub.get_payload(decode=True)
        if not isinstance(name, str):
            raise MultipartError("a part has no name in its Content-Disposition")
        data = payload if isinstance(payload, bytes) else b""
        parts.append(Part(name, filename, sub.get_content_type(), data))
    return parts
