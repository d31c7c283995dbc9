"""`asana-export-bot run | check | doctor | demo | archive`: the only entry point; nothing imports
this module."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn

import click

from bot import __version__
from bot.config import Settings, SettingsError, load_settings
from bot.logging_setup import configure_logging
from bot.models import LINK_VALIDITY, Export, ExportState, ProblemKind

if TYPE_CHECKING:
    from bot.command_parser import Lookup

# `check` exit codes, distinct so scripts can branch on them.
EXIT_FOUND = 0
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_AUTH = 4
EXIT_TRANSIENT = 5
EXIT_MALFORMED = 6  # Asana's answer had no `data`, or was about another export: not retried
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h


def _lookup_or_problem(gid: str) -> Lookup | str:
    """`gid` as the bot would look it up, or why it is not an export gid."""
    from bot.command_parser import Invalid, Lookup, parse_command

    parsed = parse_command(gid)
    if isinstance(parsed, Lookup):
        return parsed
    if isinstance(parsed, Invalid):
        return parsed.problem.replace("`", "'")
    return f"{gid[:40]!r} is not an export gid (a gid is a number)"


def _settings_or_exit(mode: str, *, as_json: bool = False) -> Settings:
    try:
        return load_settings(mode)  # type: ignore[arg-type]
    except SettingsError as exc:
        if as_json:
            message = "asana-export-bot cannot start: " + " ".join(exc.lines)
            click.echo(
                json.dumps({"error": "configuration", "message": message, "problems": exc.lines})
            )
        click.echo("asana-export-bot cannot start:", err=True)
        for line in exc.lines:
            click.echo(f"  - {line}", err=True)
        sys.exit(EXIT_CONFIG)


def _secrets(settings: Settings) -> list[str]:
    values = [
        settings.SLACK_BOT_TOKEN,
        settings.SLACK_SIGNING_SECRET,
        settings.SLACK_APP_TOKEN,
        settings.ASANA_TOKEN,
    ]
    return [v.get_secret_value() for v in values if v is not None]


class WholeHelpGroup(click.Group):
    """Lists each command with its whole first sentence, wrapped, where click would cut it off
    with "..." at about 45 characters or the terminal's width."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        listed = [
            (name, command)
            for name in self.list_commands(ctx)
            if (command := self.get_command(ctx, name)) is not None and not command.hidden
        ]
        if listed:
            with formatter.section("Commands"):
                formatter.write_dl(
                    [(name, command.get_short_help_str(limit=10_000)) for name, command in listed]
                )


class SettingsHelpCommand(click.Command):
    """A command whose --help ends with every setting it reads (bot.settings_help)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from bot.settings_help import SOURCES_NOTE, rows

        with formatter.section("Settings"):
            formatter.write_text(SOURCES_NOTE)
            formatter.write_paragraph()
            formatter.write_dl(rows(), col_max=30)  # fits the longest name (29 chars)
        super().format_epilog(ctx, formatter)


@click.group(cls=WholeHelpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="asana-export-bot")
def main() -> None:
    """Slack bot that looks up and watches Asana organization exports."""


@main.command(cls=SettingsHelpCommand)
def run() -> None:
    """Serve Slack (HTTP on $PORT, or Socket Mode when SLACK_APP_TOKEN is set)."""
    settings = _settings_or_exit("run")
    configure_logging(
        settings.LOG_LEVEL,
        _secrets(settings),
        log_sql=settings.LOG_SQL,
        log_format=settings.LOG_FORMAT,
    )
    from bot.launch import collector_paused

    with collector_paused():
        from bot.app import serve
        from bot.db import DatabaseFileError
        from bot.http_limits import ListenError

    try:
        asyncio.run(serve(settings))
    except (DatabaseFileError, ListenError) as exc:
        click.echo(f"asana-export-bot cannot start: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


EXIT_DOCTOR_FAILED = 1


@main.command()
@click.option("--export", "export_gid", metavar="GID", help="Also check this export is readable.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def doctor(export_gid: str | None, as_json: bool) -> None:
    """Check what a deployment needs: settings, Slack token and scopes, Socket Mode token,
    Asana token, database schema, PORT. One line per check with the fix; exit 0 when none
    failed (warnings allowed), 1 otherwise."""
    from bot.doctor import diagnose
    from bot.doctor.checks import render_json, render_text
    from bot.logging_setup import redact

    diagnosis = diagnose(export_gid)
    lines = [render_json(diagnosis.results)] if as_json else render_text(diagnosis.results)
    for line in lines:
        click.echo(redact(line, diagnosis.secrets))
    if not diagnosis.ok:
        sys.exit(EXIT_DOCTOR_FAILED)


@main.command()
@click.option("--fast", is_flag=True, help="Shorter phases: the whole story in under 10 seconds.")
@click.option(
    "--keep", is_flag=True, help="Keep the bot running afterwards for commands sent by hand."
)
def demo(fast: bool, keep: bool) -> None:
    """See the bot work against fakes on 127.0.0.1.

    The real bot, in HTTP mode, against a fake Slack and a fake Asana started here: no settings,
    no credentials, no .env read. Exit code 0 once the story is told.
    """
    from bot.demo.story import run_demo

    sys.exit(run_demo(fast=fast, keep=keep))


def _export_facts(export: Export, now: datetime) -> dict[str, object]:
    facts: dict[str, object] = {
        "gid": export.gid,
        "state": export.state.value,
        "raw_state": export.raw_state,
        "organization": {"gid": export.organization_gid, "name": export.organization_name},
        "created_at": export.created_at.isoformat() if export.created_at else None,
    }
    if export.state is ExportState.FINISHED and export.download_url:
        facts["download_url"] = export.download_url
        facts["download_url_valid_until"] = (now + LINK_VALIDITY).isoformat()
    return facts


def _exit_code(kind: ProblemKind) -> int:
    if kind is ProblemKind.NOT_FOUND:
        return EXIT_NOT_FOUND
    if kind.needs_person:
        return EXIT_AUTH
    if kind is ProblemKind.BAD_REQUEST:
        return EXIT_BAD_INPUT
    if kind is ProblemKind.MALFORMED:
        return EXIT_MALFORMED
    return EXIT_TRANSIENT


@main.command()
@click.argument("gid")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def check(gid: str, as_json: bool) -> None:
    """Look up export GID in Asana and print its state (no Slack needed).

    Exit codes: 0 found, 2 bad input, 3 not found, 4 token/permission problem,
    5 transient failure (rate limit, Asana down, timeout), 6 malformed answer from Asana
    (no `data`, or about another export), 78 configuration problem. With --json every
    outcome, errors included, is one JSON object on stdout.
    """
    from bot.asana import AsanaClient, AsanaError

    def fail(
        code: int, error: str, message: str, gid: str | None, reason: str | None = None
    ) -> NoReturn:
        if as_json:
            body = {"gid": gid, "error": error, "message": message}
            click.echo(json.dumps(body | ({"reason": reason} if reason else {})))
        click.echo(f"error: {message}", err=True)
        sys.exit(code)

    parsed = _lookup_or_problem(gid)
    if isinstance(parsed, str):
        fail(EXIT_BAD_INPUT, "bad_input", parsed, None)
    settings = _settings_or_exit("check", as_json=as_json)
    configure_logging("ERROR", _secrets(settings), log_format=settings.LOG_FORMAT)
    assert settings.ASANA_TOKEN is not None

    async def fetch() -> Export:
        async with AsanaClient(
            settings.ASANA_TOKEN.get_secret_value(),
            settings.ASANA_BASE_URL,
            timeout=settings.ASANA_TIMEOUT_SECONDS,
            max_retry_time=settings.ASANA_MAX_RETRY_SECONDS,
        ) as client:
            return await client.get_export(parsed.gid)

    try:
        export = asyncio.run(fetch())
    except AsanaError as exc:
        reason = getattr(exc, "reason", None)  # which kind of malformed answer
        fail(_exit_code(exc.kind), exc.kind.value, str(exc), parsed.gid, reason)

    facts = _export_facts(export, datetime.now(UTC))
    if as_json:
        click.echo(json.dumps(facts))
        return
    org = facts["organization"]
    assert isinstance(org, dict)
    click.echo(f"export        {export.gid}")
    click.echo(f"state         {export.raw_state or export.state.value}")
    click.echo(f"organization  {org['name'] or '?'} ({org['gid'] or '?'})")
    click.echo(f"requested     {facts['created_at'] or 'unknown'}")
    if "download_url" in facts:
        click.echo(f"download      {export.download_url}")
        click.echo(f"valid until   {facts['download_url_valid_until']} (about one hour)")


@main.command()
@click.argument("gid")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def archive(gid: str, as_json: bool) -> None:
    """Archive finished export GID to ARCHIVE_URL now, with a progress bar (no Slack needed).

    The same object name, manifest, checks and retention as the bot's own archives. Exit codes
    as `check`'s: 0 archived, 2 bad input or not finished, 3 not found, 4 token/permission
    problem, 5 the download failed (attempts spent, Asana down, timeout), 6 malformed answer,
    78 configuration (ARCHIVE_URL unset, or the store refused to be written).
    """
    from bot.archive.manual import NotFinished, archive_by_hand
    from bot.archive.storage import StorageError
    from bot.archive.transfer import TransferFailed
    from bot.asana import AsanaError

    def fail(code: int, error: str, message: str, gid: str | None) -> NoReturn:
        if as_json:
            click.echo(json.dumps({"gid": gid, "error": error, "message": message}))
        click.echo(f"error: {message}", err=True)
        sys.exit(code)

    parsed = _lookup_or_problem(gid)
    if isinstance(parsed, str):
        fail(EXIT_BAD_INPUT, "bad_input", parsed, None)
    settings = _settings_or_exit("check", as_json=as_json)
    if not settings.ARCHIVE_URL:
        fail(
            EXIT_CONFIG,
            "configuration",
            "ARCHIVE_URL is not set: nowhere to archive to",
            parsed.gid,
        )
    configure_logging("ERROR", _secrets(settings), log_format=settings.LOG_FORMAT)
    bar = _ArchiveBar(enabled=not as_json)
    try:
        with bar:
            archived = asyncio.run(archive_by_hand(settings, parsed.gid, bar.update))
    except AsanaError as exc:
        fail(_exit_code(exc.kind), exc.kind.value, str(exc), parsed.gid)
    except NotFinished as exc:
        fail(EXIT_BAD_INPUT, "not_finished", str(exc), parsed.gid)
    except TransferFailed as exc:
        fail(EXIT_TRANSIENT, "transfer_failed", exc.reason, parsed.gid)
    except StorageError as exc:
        fail(EXIT_CONFIG, "storage", str(exc), parsed.gid)
    facts = {
        "gid": parsed.gid,
        "location": archived.location,
        "size": archived.size,
        "sha256": archived.sha256,
        "removed": list(archived.removed),
    }
    if as_json:
        click.echo(json.dumps(facts))
        return
    click.echo(f"archived      {parsed.gid}")
    click.echo(f"location      {archived.location}")
    click.echo(f"size          {archived.size} bytes")
    click.echo(f"sha256        {archived.sha256}")
    for path in archived.removed:
        click.echo(f"removed       {path} (ARCHIVE_KEEP)")


class _ArchiveBar:
    """rich's progress bar on stderr (bytes, speed, time left); nothing when disabled."""

    def __init__(self, *, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._task = self._progress.add_task("archiving", total=None)

    def __enter__(self) -> _ArchiveBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    async def update(self, done: int, total: int | None) -> None:
        self._progress.update(self._task, completed=done, total=total)
