"""`asana-export-bot doctor`: everything a real deployment needs, checked once, one line each.

`diagnose` reads the settings (all problems in one pass, without stopping at them), runs every
probe the usable settings allow, concurrently and with short timeouts, and returns the verdicts
of bot.doctor.checks. Probes live in bot.doctor.probes; the only thing written is the archive
probe object (when ARCHIVE_URL is set), deleted at once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bot.command_parser import Lookup, parse_command
from bot.config import Settings, read_settings
from bot.doctor import checks, probes
from bot.doctor.checks import CheckResult, Status, not_checked
from bot.logging_setup import configure_logging


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The verdicts, and the secret values the caller must keep out of what it prints."""

    results: list[CheckResult]
    secrets: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return checks.ok(self.results)


def diagnose(export_gid: str | None = None) -> Diagnosis:
    """Run every check that can run; library log lines are redacted and kept to errors."""
    settings, problems = read_settings("run")
    secrets = _secrets(settings)
    configure_logging("ERROR", secrets)
    results = checks.settings_results(problems)
    if settings is None:
        return Diagnosis(results, secrets)
    unusable = {line.split(" ", 1)[0] for line in problems}
    results += asyncio.run(_probe(settings, unusable, export_gid))
    return Diagnosis(results, secrets)


def _secrets(settings: Settings | None) -> tuple[str, ...]:
    if settings is None:
        return ()
    values = [
        settings.SLACK_BOT_TOKEN,
        settings.SLACK_SIGNING_SECRET,
        settings.SLACK_APP_TOKEN,
        settings.ASANA_TOKEN,
    ]
    found = [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]
    try:
        password = make_url(settings.DATABASE_URL).password
    except (ArgumentError, ValueError):  # reported by the settings check
        password = None
    if password:
        found.append(str(password))
    return tuple(found)


async def _probe(
    settings: Settings, unusable: set[str], export_gid: str | None
) -> list[CheckResult]:
    """Slack, Asana, the database and the port, side by side, in a stable order."""

    def blocked(*names: str) -> set[str]:
        return {n for n in names if n in unusable}

    api_url = settings.slack_api_url
    asana_url = settings.ASANA_BASE_URL

    async def slack_auth() -> list[CheckResult]:
        if stop := blocked("SLACK_BOT_TOKEN", "SLACK_API_URL"):
            return [not_checked("slack auth.test", stop), not_checked("slack scopes", stop)]
        assert settings.SLACK_BOT_TOKEN is not None
        answer = await probes.slack_call(
            api_url, settings.SLACK_BOT_TOKEN.get_secret_value(), "auth.test"
        )
        result = checks.slack_auth_result(answer, api_url)
        if result.status is not Status.PASS:
            return [result]
        granted = checks.parse_scopes(answer.scopes_header)
        return [result, *checks.scope_results(granted, settings.LINK_POLICY)]

    async def socket_mode() -> list[CheckResult]:
        if stop := blocked("SLACK_APP_TOKEN", "SLACK_API_URL"):
            return [not_checked("slack socket mode", stop)]
        if not settings.socket_mode:
            return []  # HTTP mode: no app-level token to check
        assert settings.SLACK_APP_TOKEN is not None
        answer = await probes.slack_socket_mode(
            api_url, settings.SLACK_APP_TOKEN.get_secret_value()
        )
        return [checks.socket_mode_result(answer, api_url)]

    async def asana() -> list[CheckResult]:
        names = ["asana token"] + (["asana export"] if export_gid is not None else [])
        if stop := blocked("ASANA_TOKEN", "ASANA_BASE_URL"):
            return [not_checked(name, stop) for name in names]
        assert settings.ASANA_TOKEN is not None
        token = settings.ASANA_TOKEN.get_secret_value()
        found = [checks.asana_token_result(await probes.asana_me(token, asana_url), asana_url)]
        if export_gid is not None:
            parsed = parse_command(export_gid)
            if not isinstance(parsed, Lookup):
                found.append(
                    CheckResult(
                        "asana export",
                        Status.FAIL,
                        f"--export {export_gid[:40]!r} is not an export gid",
                        "pass the export's gid, a number such as 1200000000000077",
                    )
                )
            else:
                answer = await probes.asana_export(token, asana_url, parsed.gid)
                found.append(checks.asana_export_result(answer, parsed.gid, asana_url))
        return found

    async def database() -> list[CheckResult]:
        if stop := blocked("DATABASE_URL"):
            return [not_checked("database", stop)]
        return [checks.database_result(await probes.database_facts(settings.DATABASE_URL))]

    async def port() -> list[CheckResult]:
        # `run` binds PORT in both modes (Socket Mode serves /healthz there too).
        if stop := blocked("HOST", "PORT"):
            return [not_checked("port", stop)]
        problem = await asyncio.to_thread(probes.port_problem, settings.HOST, settings.PORT)
        return [checks.port_result(settings.HOST, settings.PORT, problem)]

    async def archive() -> list[CheckResult]:
        if stop := blocked("ARCHIVE_URL"):
            return [not_checked("archive", stop)]
        if not settings.ARCHIVE_URL:
            return []  # archiving is off
        problem = await probes.archive_writable(settings.ARCHIVE_URL)
        return [checks.archive_result(settings.ARCHIVE_URL, problem)]

    found = await asyncio.gather(
        slack_auth(), socket_mode(), asana(), database(), port(), archive()
    )
    return [result for group in found for result in group]


__all__ = ["CheckResult", "Diagnosis", "Status", "diagnose"]
