"""Reading wrangler's results: colours, Cloudflare codes, output-file records, deployment status."""

from __future__ import annotations

from rollout.diagnosis import explain_result
from rollout.wrangler import WranglerResult, error_codes, parse_deployment_status, strip_ansi, wrangler_env

STDERR = (
    "\x1b[31m✘ \x1b[41;31m[\x1b[41;97mERROR\x1b[41;31m]\x1b[0m \x1b[1mA request to the Cloudflare API "
    "(/accounts/abc/workers/scripts/x/versions) failed.\x1b[0m\n\n"
    "  Binding type 'Images' is not valid [code: 10021]\n  No route for that URI [code: 7000]\n\n"
    "🪵  Logs were written to \"/tmp/x.log\"\n"
)


def test_strip_ansi_and_codes() -> None:
    """Colour codes go; codes come out in order, once each."""
    assert "\x1b" not in strip_ansi(STDERR)
    assert error_codes(STDERR + STDERR) == (10021, 7000)


def test_result_prefers_output_file_codes() -> None:
    """The ND-JSON command-failed record's code comes first."""
    result = WranglerResult(argv=("deploy",), returncode=1, stdout="", stderr=STDERR,
                            records=({"type": "command-failed", "code": 10085, "message": "m"},))
    assert result.codes == (10085, 10021, 7000)
    assert "Logs were written" not in result.error_text


def test_diagnosis_explains_known_codes_and_keeps_unknown() -> None:
    """Known codes get a cause and a fix; unknown ones keep wrangler's message."""
    stderr = "x failed\n  Binding type 'Images' is not valid [code: 10021]\n  odd [code: 99999]\n"
    result = WranglerResult(argv=("deploy",), returncode=1, stdout="", stderr=stderr)
    known, unknown = explain_result(result)
    assert known.code == 10021 and "lower case" in known.cause and known.fix
    assert unknown.code == 99999 and unknown.cause == "" and "odd" in unknown.message


def test_transient_detection() -> None:
    """5xx-like failures are transient; a validation error is not."""
    flaky = WranglerResult(argv=("rollback",), returncode=1, stdout="", stderr="boom [code: 10013]")
    fatal = WranglerResult(argv=("rollback",), returncode=1, stdout="", stderr="bad binding [code: 10021]")
    assert flaky.transient and not fatal.transient


def test_parse_deployment_status() -> None:
    """`deployments status --json` gives the versions and percentages."""
    text = ('{\n  "id": "d1",\n  "versions": [{"version_id": "v2", "percentage": 90}, '
            '{"version_id": "v1", "percentage": 10}]\n}')
    state = parse_deployment_status("w", text)
    assert state.versions == (("v2", 90.0), ("v1", 10.0)) and state.sole_version is None
    single = parse_deployment_status("w", '{"versions": [{"version_id": "v3", "percentage": 100}]}')
    assert single.sole_version == "v3"


def test_env_strips_proxies_and_silences_wrangler() -> None:
    """Proxy variables are removed (they break the tail WebSocket); telemetry is off."""
    env = wrangler_env({"CLOUDFLARE_API_TOKEN": "t"}, base={"HTTPS_PROXY": "http://p:1", "http_proxy": "x", "A": "1"})
    assert "HTTPS_PROXY" not in env and "http_proxy" not in env
    assert env["WRANGLER_SEND_METRICS"] == "false" and env["CLOUDFLARE_API_TOKEN"] == "t" and env["A"] == "1"
