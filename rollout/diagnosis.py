"""Cloudflare error codes met by wrangler, each with a cause and a fix in plain words.

Codes not in the table are shown as they came, with wrangler's own message.
"""

from __future__ import annotations

from dataclasses import dataclass

from .wrangler import WranglerResult


@dataclass(frozen=True, slots=True)
class Explanation:
    code: int | None
    message: str
    cause: str
    fix: str

    @property
    def known(self) -> bool:
        return self.cause != ""


#: code → (cause, fix).  Written from the incidents in the runbook and Cloudflare's API docs.
CODES: dict[int, tuple[str, str]] = {
    1000: ("The API token is an account token where a user token was expected, or is not valid here.",
           "Check CLOUDFLARE_API_TOKEN: create a token with the 'Edit Cloudflare Workers' template."),
    7000: ("No route for that URI: the API path does not exist.",
           "Usually follows 7003; check the account id and the worker name."),
    7003: ("The API could not route the request: the object identifier (account id or worker name) is "
           "invalid, or the worker was being replaced by a concurrent deploy.",
           "Check CLOUDFLARE_ACCOUNT_ID and the worker name; make sure no other job deploys the same worker at "
           "the same time (rollout takes a lock per worker; enable lock='account' for CI)."),
    9109: ("The token may not read the user's details.", "Harmless for deploys; add 'User Details: Read' to see "
           "the email in whoami."),
    10000: ("Authentication error: the token is missing, expired or lacks the permission for this call.",
            "Create a token with 'Workers Scripts: Edit' (and D1/R2/KV as the worker binds them) for this "
            "account, and export it as CLOUDFLARE_API_TOKEN."),
    10001: ("The upload could not be parsed by the API.", "Retry; if it persists, run `wrangler deploy --dry-run "
            "--outdir dist` and check the bundle."),
    10007: ("The worker (or the workers.dev subdomain) does not exist in this account.",
            "Check the worker name and the account; for a new account, register a workers.dev subdomain in the "
            "dashboard, or deploy to routes instead."),
    10013: ("An unknown internal error at Cloudflare.", "Retry with backoff (rollout retries rollbacks "
            "automatically); if it persists, check https://www.cloudflarestatus.com."),
    10021: ("The worker failed validation at upload: a binding of an unknown type (binding types are lower case, "
            "e.g. 'images' not 'Images') or a script error at startup.",
            "Fix the binding type's case in the wrangler config (preflight names the line), or run the worker "
            "locally with `wrangler dev` to see the startup error."),
    10043: ("The request timed out inside the API.", "Retry; large bundles take longer to validate."),
    10057: ("The request was rate limited or a concurrent change is in progress for this script.",
            "Wait a few seconds and retry; make sure only one job deploys this worker (rollout's lock)."),
    10085: ("A binding points at a resource that does not exist (for example an R2 bucket).",
            "Create it first (`wrangler r2 bucket create NAME`, `wrangler kv namespace create`, `wrangler d1 "
            "create`) or fix the name in the wrangler config; preflight lists every missing resource."),
    10090: ("The worker service does not exist yet.", "Deploying creates it; check the name if you expected it "
            "to exist."),
    10143: ("A service binding points at a worker that does not exist in this account.",
            "Deploy the bound worker first (order the plan's Deploy phases so services come before their callers), "
            "or fix the `service` name in the wrangler config."),
    10214: ("Durable Object migrations are inconsistent with the deployed classes.",
            "Add a [[migrations]] entry with a new tag for the class change."),
    10220: ("Secrets changed since the version being rolled back to was created.",
            "Wrangler retries with force; check that the old version works with today's secrets."),
}


def explain_code(code: int | None, message: str = "") -> Explanation:
    if code is not None and code in CODES:
        cause, fix = CODES[code]
        return Explanation(code, message, cause, fix)
    return Explanation(code, message, "", "")


def explain_result(result: WranglerResult) -> list[Explanation]:
    """One explanation per Cloudflare code in a failed command's output (or one for the whole error)."""
    if result.ok:
        return []
    text = result.error_text
    codes = result.codes
    if not codes:
        first = text.splitlines()[0] if text else f"exit status {result.returncode}"
        return [Explanation(None, first, "", "")]
    explanations = []
    lines = text.splitlines()
    for code in codes:
        message = next((line.strip() for line in lines if f"[code: {code}]" in line), f"code {code}")
        explanations.append(explain_code(code, message))
    return explanations
