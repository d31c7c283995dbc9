"""`doctor`'s verdicts: facts the probes gathered in, one CheckResult per line out. No I/O.

Each function decides pass, warn or fail and says how to fix a failure in terms of the setting or
the Slack/Asana page involved. WARN means the bot works with less; only FAIL changes the exit code.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass

from bot.access import LinkPolicy
from bot.config import HOW_TO_GET
from bot.slack_scopes import BOT_SCOPES, HISTORY_SCOPES_NOTE, Need


class Status(enum.StrEnum):
    PASS = "pass"  # noqa: S105 - a check outcome, not a password
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One line of the report: which check, how it went, what was seen, what to do."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def ok(results: Iterable[CheckResult]) -> bool:
    """Exit 0 only when nothing failed (warnings allowed)."""
    return all(r.status is not Status.FAIL for r in results)


# ------------------------------------------------------------------------------ settings


def settings_results(problems: Sequence[str]) -> list[CheckResult]:
    """One line per settings problem (bot.config words them "X ...: set it to Y.")."""
    if not problems:
        return [CheckResult("settings", Status.PASS, "every setting `run` needs is set and valid")]
    results = []
    for line in problems:
        detail, sep, fix = line.partition(": set it to ")
        if sep:
            fix = "set it to " + fix
        results.append(CheckResult("settings", Status.FAIL, detail.rstrip("."), fix))
    return results


def not_checked(name: str, blocked_by: Collection[str]) -> CheckResult:
    """A check that cannot run while the settings it needs are missing or malformed."""
    names = ", ".join(sorted(blocked_by))
    return CheckResult(
        name, Status.FAIL, f"not checked: {names} unusable", "fix the settings first"
    )


# ------------------------------------------------------------------------------ Slack


@dataclass(frozen=True, slots=True)
class SlackAnswer:
    """What one Slack Web API call gave: the JSON (ok or not), the scopes header, or a failure
    to reach Slack at all (`unreachable` names it)."""

    body: dict[str, object]
    scopes_header: str | None = None
    unreachable: str | None = None

    @property
    def error(self) -> str | None:
        if self.unreachable:
            return None
        return None if self.body.get("ok") else str(self.body.get("error") or "unknown_error")


_SLACK_FIXES = {
    "invalid_auth": "SLACK_BOT_TOKEN is not a valid token: set it to "
    + HOW_TO_GET["SLACK_BOT_TOKEN"],
    "not_authed": "set SLACK_BOT_TOKEN to " + HOW_TO_GET["SLACK_BOT_TOKEN"],
    "token_revoked": "the app was uninstalled or the token revoked: reinstall the app and"
    " copy the new Bot User OAuth Token into SLACK_BOT_TOKEN",
    "account_inactive": "the app was uninstalled or the token revoked: reinstall the app and"
    " copy the new Bot User OAuth Token into SLACK_BOT_TOKEN",
    "not_allowed_token_type": "SLACK_BOT_TOKEN must be the bot token (xoxb-), not another kind",
    "ratelimited": "Slack is rate limiting this token: run doctor again in a minute",
}


def _slack_unreachable(name: str, why: str, api_url: str) -> CheckResult:
    return CheckResult(
        name,
        Status.FAIL,
        f"cannot reach Slack at {api_url} ({why})",
        "check SLACK_API_URL, the network and any proxy between here and Slack",
    )


def slack_auth_result(answer: SlackAnswer, api_url: str) -> CheckResult:
    """auth.test: which workspace and which bot user the token is, or why Slack refused it."""
    name = "slack auth.test"
    if answer.unreachable:
        return _slack_unreachable(name, answer.unreachable, api_url)
    if answer.error:
        fix = _SLACK_FIXES.get(answer.error, "see https://api.slack.com/methods/auth.test")
        return CheckResult(name, Status.FAIL, f"Slack refused SLACK_BOT_TOKEN: {answer.error}", fix)
    body = answer.body
    team = f"{body.get('team') or '?'} ({body.get('team_id') or '?'})"
    user = f"{body.get('user') or '?'} ({body.get('user_id') or '?'})"
    if body.get("enterprise_id"):
        team += f", Enterprise org {body.get('enterprise_id')}"
    return CheckResult(name, Status.PASS, f"workspace {team}, bot user {user}")


def parse_scopes(header: str | None) -> frozenset[str] | None:
    """`x-oauth-scopes: a,b,c` as a set; None when Slack (or a proxy) sent no header."""
    if header is None:
        return None
    return frozenset(part.strip() for part in header.split(",") if part.strip())


def scope_results(granted: frozenset[str] | None, link_policy: LinkPolicy) -> list[CheckResult]:
    """Granted scopes against bot.slack_scopes: FAIL for what the bot cannot do without, WARN for
    what it does with less; the history scopes' cost is spelled out either way."""
    name = "slack scopes"
    if granted is None:
        return [
            CheckResult(
                name,
                Status.WARN,
                "Slack sent no x-oauth-scopes header, so the granted scopes are unknown",
                "compare OAuth & Permissions > Bot Token Scopes with manifest.yml by hand",
            )
        ]
    results: list[CheckResult] = []
    for scope in BOT_SCOPES:
        if scope.name in granted:
            continue
        fatal = scope.need is Need.ESSENTIAL or (
            scope.need is Need.LINKS and link_policy is not LinkPolicy.ANYWHERE
        )
        status = Status.FAIL if fatal else Status.WARN
        detail = f"missing {scope.name}, needed for {scope.buys}"
        if scope.need is Need.HELPFUL and scope.name.endswith(":history"):
            detail += f" ({HISTORY_SCOPES_NOTE})"
        fix = (
            f"add {scope.name} under OAuth & Permissions > Bot Token Scopes (or paste"
            " manifest.yml), then reinstall the app"
        )
        results.append(CheckResult(name, status, detail, fix))
    if not results:
        results.append(
            CheckResult(name, Status.PASS, f"all {len(BOT_SCOPES)} scopes of manifest.yml granted")
        )
    return results


_SOCKET_FIXES = {
    "invalid_auth": "SLACK_APP_TOKEN is not a valid token: set it to "
    + HOW_TO_GET["SLACK_APP_TOKEN"],
    "not_allowed_token_type": "SLACK_APP_TOKEN must be an app-level token (xapp-), set it to "
    + HOW_TO_GET["SLACK_APP_TOKEN"],
    "missing_scope": "the app-level token lacks connections:write: create one with it under"
    " Basic Information > App-Level Tokens",
    "token_revoked": "the app-level token was revoked: create a new one under Basic Information"
    " > App-Level Tokens",
}


def socket_mode_result(answer: SlackAnswer, api_url: str) -> CheckResult:
    """apps.connections.open with SLACK_APP_TOKEN: Socket Mode can get a websocket URL."""
    name = "slack socket mode"
    if answer.unreachable:
        return _slack_unreachable(name, answer.unreachable, api_url)
    if answer.error:
        fix = _SOCKET_FIXES.get(
            answer.error,
            "turn Socket Mode on under the app's Socket Mode page, or unset SLACK_APP_TOKEN for HTTP mode",
        )
        return CheckResult(name, Status.FAIL, f"apps.connections.open failed: {answer.error}", fix)
    return CheckResult(name, Status.PASS, "apps.connections.open gave a websocket URL")


# ------------------------------------------------------------------------------ Asana


@dataclass(frozen=True, slots=True)
class AsanaAnswer:
    """What the Asana probe saw: a success summary, or an error kind, HTTP status and message."""

    summary: str | None = None
    kind: str | None = None
    status: int | None = None
    message: str = ""


_ASANA_FIXES = {
    "unauthorized": "ASANA_TOKEN is wrong or revoked: set it to " + HOW_TO_GET["ASANA_TOKEN"],
    "payment_required": "organization exports need an Enterprise(+) organization: use a Service"
    " Account token of one",
    "forbidden": "the token may not read this: use a Service Account token of the organization"
    " that made the export",
    "rate_limited": "Asana is rate limiting this token: run doctor again in a minute",
}


def asana_token_result(answer: AsanaAnswer, base_url: str) -> CheckResult:
    """GET /users/me: the token works, and whose it is."""
    name = "asana token"
    if answer.summary is not None:
        return CheckResult(name, Status.PASS, answer.summary)
    return CheckResult(name, Status.FAIL, answer.message, _asana_fix(answer, base_url))


def asana_export_result(answer: AsanaAnswer, gid: str, base_url: str) -> CheckResult:
    """GET /organization_exports/GID: the export named by --export is readable."""
    name = "asana export"
    if answer.summary is not None:
        return CheckResult(name, Status.PASS, answer.summary)
    if answer.kind == "not_found":
        return CheckResult(
            name,
            Status.FAIL,
            f"export {gid} not found: {answer.message}",
            "check the gid (Asana returns it when the export is requested); an export belongs"
            " to the organization whose token asked for it",
        )
    return CheckResult(name, Status.FAIL, answer.message, _asana_fix(answer, base_url))


def _asana_fix(answer: AsanaAnswer, base_url: str) -> str:
    if answer.kind in _ASANA_FIXES:
        return _ASANA_FIXES[answer.kind]
    if answer.kind in ("connection", "timeout", "asana_down"):
        return f"check ASANA_BASE_URL ({base_url}), the network and any proxy; then try again"
    return "see https://developers.asana.com/docs/errors"


# ------------------------------------------------------------------------------ database


@dataclass(frozen=True, slots=True)
class DatabaseFacts:
    """What a read-only look at the database found.

    `missing`: a SQLite file that does not exist yet (`creatable` says whether `run` can make it);
    `problem`: why it cannot be used at all; else `revision` (None: never migrated) and `head`,
    with `known` False for a revision this version's migrations do not have.
    """

    where: str
    head: str
    missing: bool = False
    creatable: bool = True
    problem: str | None = None
    revision: str | None = None
    known: bool = True


def database_result(facts: DatabaseFacts) -> CheckResult:
    """Reachable, and at this version's Alembic head.

    A SQLite file that does not exist yet is a WARN, not a FAIL: it is how every first run begins
    (`run` creates it 0600 and migrates it), but on a running deployment it means DATABASE_URL
    points somewhere new and every watch would be forgotten, so it is worth a line.
    """
    name = "database"
    fix_url = "set DATABASE_URL to " + HOW_TO_GET["DATABASE_URL"]
    if facts.problem:
        return CheckResult(name, Status.FAIL, f"{facts.where}: {facts.problem}", fix_url)
    if facts.missing:
        if not facts.creatable:
            return CheckResult(
                name,
                Status.FAIL,
                f"{facts.where} does not exist and cannot be created here",
                "create its directory writable by this user, or " + fix_url,
            )
        return CheckResult(
            name,
            Status.WARN,
            f"{facts.where} does not exist yet: `run` creates it and its schema at first start",
            "nothing to do on a new install; on an existing one DATABASE_URL names the wrong file",
        )
    if facts.revision == facts.head:
        return CheckResult(name, Status.PASS, f"{facts.where}, schema at head {facts.head}")
    if facts.revision is None:
        return CheckResult(
            name,
            Status.FAIL,
            f"{facts.where} has no schema (never migrated); this version needs {facts.head}",
            "start the bot once (`run` creates the schema), or point DATABASE_URL at the bot's database",
        )
    if not facts.known:
        return CheckResult(
            name,
            Status.FAIL,
            f"{facts.where} is at schema {facts.revision}, which this version does not know"
            f" (newer than its head {facts.head})",
            "run the version of asana-export-bot that wrote it, or a newer one",
        )
    return CheckResult(
        name,
        Status.FAIL,
        f"{facts.where} is at schema {facts.revision}, behind this version's head {facts.head}",
        "back the database up, then start the bot: `run` upgrades the schema at start",
    )


# ------------------------------------------------------------------------------ port


def port_result(host: str, port: int, problem: str | None) -> CheckResult:
    """HOST:PORT can be bound (`problem` is bot.http_limits' one-line reason if not)."""
    if problem is None:
        return CheckResult("port", Status.PASS, f"{host}:{port} is free to bind")
    detail, _, fix = problem.partition(": ")
    return CheckResult("port", Status.FAIL, detail, fix.rstrip("."))


# ------------------------------------------------------------------------------ archive


def archive_result(url: str, problem: str | None) -> CheckResult:
    """ARCHIVE_URL can be written to (a probe object was written, read back and deleted)."""
    if problem is None:
        return CheckResult("archive", Status.PASS, f"{url} is writable (probe written and deleted)")
    return CheckResult(
        "archive",
        Status.FAIL,
        f"cannot write to {url}: {problem}",
        "check the location exists and the AWS_*/GOOGLE_*/AZURE_* credentials may write to it",
    )


# ------------------------------------------------------------------------------ output


def render_text(results: Sequence[CheckResult]) -> list[str]:
    """One line per check: STATUS, name, what was seen, and the fix after an arrow."""
    width = max((len(r.name) for r in results), default=0)
    lines = []
    for r in results:
        line = f"{r.status.value.upper():4}  {r.name:{width}}  {r.detail}"
        if r.fix and r.status is not Status.PASS:
            line += f" -> {r.fix}"
        lines.append(line)
    return lines


def render_json(results: Sequence[CheckResult]) -> str:
    """{"ok": bool, "checks": [{"name", "status", "detail", "fix"}]}."""
    checks = [{**asdict(r), "status": r.status.value} for r in results]
    return json.dumps({"ok": ok(results), "checks": checks})
