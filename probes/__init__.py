"""Built-in probes for ``Smoke`` phases.  Each records what it saw."""

from rollout.probe import FunctionProbe, Probe, ProbeResult

from ._http import BodyContains, BodyMatches, Header, HttpProbe, JsonField, Latency, Post, Status

__all__ = [
    "BodyContains",
    "BodyMatches",
    "FunctionProbe",
    "Header",
    "HttpProbe",
    "JsonField",
    "Latency",
    "Post",
    "Probe",
    "ProbeResult",
    "Status",
]
