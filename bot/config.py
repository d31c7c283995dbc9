"""Settings from the environment (and an optional `.env` file), validated in one place.

Secrets are `SecretStr`, so printing the settings or a validation error never shows them.
"""

from __future__ import annotations

import re
from functools import cached_property
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.access import LinkPolicy, is_allowed, parse_id_list

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_ASANA_BASE_URL = "https://app.asana.com/api/1.0"
DEFAULT_DATABASE_URL = "sqlite:///asana-export-bot.db"

Mode = Literal["run", "check"]

#: How a person gets each setting; shown when it is missing or malformed.
HOW_TO_GET: dict[str, str] = {
    "SLACK_BOT_TOKEN": "the Bot User OAuth Token (xoxb-...) from your Slack app's 'OAuth & Permissions' page",
    "SLACK_SIGNING_SECRET": "the Signing Secret from your Slack app's 'Basic Information' page",
    "SLACK_APP_TOKEN": "an app-level token (xapp-...) with connections:write, from 'Basic Information' > 'App-Level Tokens'",
    "SLACK_API_URL": "an http(s) URL of Slack's Web API, ending in /api/ (default https://slack.com/api/)",
    "ASANA_TOKEN": "a Service Account token of your Enterprise Asana organization (Admin console > Apps > Service accounts)",
    "ASANA_BASE_URL": "an http(s) URL of Asana's API (default https://app.asana.com/api/1.0)",
    "DATABASE_URL": "a SQLAlchemy URL such as sqlite:///asana-export-bot.db or postgresql://user@host/db",
    "PORT": "a TCP port number between 1 and 65535",
    "HOST": "an interface address to listen on, such as 0.0.0.0 or 127.0.0.1",
    "LOG_LEVEL": "one of DEBUG, INFO, WARNING, ERROR",
    "LOG_FORMAT": "text (default: one readable line per event) or json (one JSON object per line, for a log collector)",
    "LOG_SQL": "true or false (default false): log SQL statements with their parameters",
    "HTTP_READ_TIMEOUT_SECONDS": "seconds a client may take to send a whole request (default 10)",
    "HTTP_MAX_CONNECTIONS": "how many HTTP connections may be open at once (default 256), well below ulimit -n",
    "LINK_POLICY": "one of private (default), button, anywhere",
    "ALLOWED_USERS": "Slack user IDs separated by commas (U0123ABCD,U0456EFGH), or empty for everyone",
    "ALLOWED_CHANNELS": "Slack channel IDs separated by commas (C0123ABCD,G0456EFGH), or empty for all",
    "SLACK_CHECK_SECONDS": "seconds between the auth.test checks behind /readyz's slack part (default 60)",
    "ASANA_ORGANIZATION_GID": "the gid of your Asana organization (a number: Asana's GET /users/me?opt_fields=workspaces lists it), or empty to name it in each `new`",
    "ADMIN_USERS": "Slack user IDs separated by commas (U0123ABCD,U0456EFGH) who may start exports, or empty for the workspace's admins and owners",
    "SCHEDULE_TIMEZONE": "an IANA time zone name such as Europe/Berlin or America/New_York (default UTC): the zone `schedule` reads times in unless the command names one with `tz`",
    "ARCHIVE_URL": "where finished exports are archived: file:///var/backups/asana, s3://bucket/prefix (with the AWS_* variables), gs://bucket/prefix or az://container/prefix; empty turns archiving off",
    "ARCHIVE_KEEP": "how many archives to keep per organization (the oldest beyond it are removed after each archive), or 0 to keep all",
    "POLL_RESERVED_SHARE": "a fraction between 0 and 0.9 of POLL_BUDGET_PER_MINUTE kept for polling (default 0.5)",
}

_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")


class Settings(BaseSettings):
    """Every knob of the bot; names are the environment variables."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    SLACK_BOT_TOKEN: SecretStr | None = None
    SLACK_SIGNING_SECRET: SecretStr | None = None
    SLACK_APP_TOKEN: SecretStr | None = None
    SLACK_API_URL: str = DEFAULT_SLACK_API_URL
    SLACK_COMMAND: str = "/asana-export"
    ASANA_TOKEN: SecretStr | None = None
    ASANA_BASE_URL: str = DEFAULT_ASANA_BASE_URL
    DATABASE_URL: str = DEFAULT_DATABASE_URL
    HOST: str = "0.0.0.0"  # noqa: S104 - Slack must reach the HTTP endpoint; set 127.0.0.1 behind a proxy
    PORT: int = Field(default=3000, ge=1, le=65535)
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    # text for people, json (one object per line with replica, request id, gid...) for collectors.
    LOG_FORMAT: Literal["text", "json"] = "text"
    # SQL statements and their parameters in the log (at LOG_LEVEL); off even at DEBUG.
    LOG_SQL: bool = False

    # How long a slash command may wait for Asana before acking "Looking up..." (Slack allows 3 s).
    ACK_DEADLINE_SECONDS: float = Field(default=2.0, gt=0, le=2.8)
    # How long a looked-up answer may take in total before the user is told Asana timed out.
    LOOKUP_TIMEOUT_SECONDS: float = Field(default=25.0, gt=0, le=1800)
    ASANA_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0, le=300)
    ASANA_MAX_RETRY_SECONDS: float = Field(default=20.0, ge=0, le=600)
    # Largest accepted HTTP body; Slack's payloads are far smaller.
    MAX_BODY_BYTES: int = Field(default=1_000_000, ge=1024)
    # Slow clients: a whole request (headers and body) within this long of connecting or of the
    # previous response, and at most this many connections at once (each holds a file).
    HTTP_READ_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0, le=300)
    HTTP_MAX_CONNECTIONS: int = Field(default=256, ge=1, le=100_000)

    # Watching: how often each replica looks for due exports, and how polls are spaced.
    TICK_SECONDS: float = Field(default=1.5, gt=0, le=60)
    RECOVER_SECONDS: float = Field(default=15.0, gt=0, le=3600)
    # How often /readyz's Slack part is re-checked with auth.test.
    SLACK_CHECK_SECONDS: float = Field(default=60.0, gt=0, le=3600)
    POLL_INITIAL_SECONDS: float = Field(default=15.0, gt=0, le=3600)
    POLL_MAX_SECONDS: float = Field(default=300.0, gt=0, le=86400)
    POLL_FACTOR: float = Field(default=2.0, ge=1, le=10)
    POLL_JITTER: float = Field(default=0.1, ge=0, lt=1)
    PAUSED_RETRY_SECONDS: float = Field(default=300.0, gt=0, le=86400)
    # Asana requests per minute all polling may use (Asana allows 150 free, 1,500 paid per token).
    POLL_BUDGET_PER_MINUTE: float = Field(default=100.0, gt=0, le=100_000)
    # Fair use (docs/rate-limits.md): the share of that budget only polling may use, a per-person
    # limit on lookups and button presses, and caps on active watches.
    POLL_RESERVED_SHARE: float = Field(default=0.5, ge=0, le=0.9)
    USER_REQUESTS_PER_MINUTE: float = Field(default=10.0, ge=1, le=10_000)
    MAX_WATCHES_PER_USER: int = Field(default=20, ge=1, le=100_000)
    MAX_WATCHES_PER_CHANNEL: int = Field(default=50, ge=1, le=100_000)
    POLL_BATCH: int = Field(default=50, ge=1, le=10_000)
    POLL_CONCURRENCY: int = Field(default=10, ge=1, le=50)
    LEASE_SECONDS: float = Field(default=60.0, ge=5, le=3600)
    # An interrupted notification older than this is checked against the channel history.
    NOTIFY_GRACE_SECONDS: float = Field(default=120.0, ge=1, le=86400)

    # Security: where links may be posted, and who may use the bot where (Slack IDs, commas).
    LINK_POLICY: LinkPolicy = LinkPolicy.PRIVATE
    ALLOWED_USERS: str = ""
    ALLOWED_CHANNELS: str = ""
    # Starting exports (`new`): the organization by default, and who may (empty: Slack admins).
    ASANA_ORGANIZATION_GID: str = ""
    ADMIN_USERS: str = ""
    # Recurring exports (`schedule`): the time zone a schedule's times are read in by default.
    SCHEDULE_TIMEZONE: str = "UTC"
    # How long after its time an occurrence refused transiently (429, 5xx) is still retried.
    SCHEDULE_RETRY_WINDOW_SECONDS: float = Field(default=3600.0, ge=0, le=86400)
    # Archiving (bot/archive): where finished exports are kept (empty: off), how many per
    # organization (0: all), and the bounds of one transfer. Memory per transfer is about
    # (ARCHIVE_CONCURRENCY + 1) x ARCHIVE_PART_MB MiB + 1 MiB, whatever the file's size.
    ARCHIVE_URL: str = ""
    ARCHIVE_KEEP: int = Field(default=0, ge=0, le=100_000)
    ARCHIVE_ATTEMPTS: int = Field(default=5, ge=1, le=50)
    ARCHIVE_PART_MB: int = Field(default=8, ge=5, le=512)
    ARCHIVE_CONCURRENCY: int = Field(default=4, ge=1, le=32)
    ARCHIVE_STALL_SECONDS: float = Field(default=60.0, gt=0, le=3600)
    ARCHIVE_RETRY_SECONDS: float = Field(default=2.0, ge=0, le=300)

    @field_validator("LOG_LEVEL", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("SLACK_API_URL", "ASANA_BASE_URL")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not _URL.match(value.strip()):
            raise ValueError("must be an http(s) URL")
        return value.strip()

    @field_validator("SLACK_COMMAND")
    @classmethod
    def _command(cls, value: str) -> str:
        if not re.fullmatch(r"/[a-z0-9_\-]{1,31}", value.strip()):
            raise ValueError("must look like /asana-export")
        return value.strip()

    @field_validator("LOG_FORMAT", mode="before")
    @classmethod
    def _lower_format(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("LINK_POLICY", mode="before")
    @classmethod
    def _lower_policy(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("ASANA_ORGANIZATION_GID")
    @classmethod
    def _organization_gid(cls, value: str) -> str:
        value = value.strip()
        if value and not re.fullmatch(r"[0-9]{1,30}", value):
            raise ValueError("must be an Asana gid: digits only")
        return value

    @field_validator("SCHEDULE_TIMEZONE")
    @classmethod
    def _timezone(cls, value: str) -> str:
        value = value.strip()
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError("must be a time zone name such as UTC or Europe/Berlin") from None
        return value

    @field_validator("ARCHIVE_URL")
    @classmethod
    def _archive_url(cls, value: str) -> str:
        from bot.archive.naming import url_problem  # pure; no storage library is loaded

        value = value.strip()
        if value and (problem := url_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("ALLOWED_USERS", "ALLOWED_CHANNELS", "ADMIN_USERS")
    @classmethod
    def _id_list(cls, value: str) -> str:
        parse_id_list(value)  # raises ValueError with the reason
        return value

    @cached_property
    def allowed_users(self) -> frozenset[str]:
        return parse_id_list(self.ALLOWED_USERS)

    @cached_property
    def allowed_channels(self) -> frozenset[str]:
        return parse_id_list(self.ALLOWED_CHANNELS)

    @cached_property
    def admin_users(self) -> frozenset[str]:
        return parse_id_list(self.ADMIN_USERS)

    def allows(self, user_id: str, channel_id: str) -> bool:
        """ALLOWED_USERS and ALLOWED_CHANNELS applied to one request (parsed once, not per call)."""
        return is_allowed(
            user_id,
            channel_id,
            allowed_users=self.allowed_users,
            allowed_channels=self.allowed_channels,
        )

    @property
    def socket_mode(self) -> bool:
        """Socket Mode when an app-level token is configured, HTTP otherwise."""
        return self.SLACK_APP_TOKEN is not None and bool(self.SLACK_APP_TOKEN.get_secret_value())

    @property
    def slack_api_url(self) -> str:
        """slack_sdk joins method names onto base_url, so it must end with a slash."""
        return self.SLACK_API_URL if self.SLACK_API_URL.endswith("/") else self.SLACK_API_URL + "/"

    def problems(self, mode: Mode) -> list[str]:
        """Missing or malformed settings for `mode`, one line each, never showing a value."""
        found: list[str] = []

        def secret(name: str, prefix: str | None = None, *, required: bool = True) -> None:
            value: SecretStr | None = getattr(self, name)
            raw = value.get_secret_value().strip() if value is not None else ""
            if not raw:
                if required:
                    found.append(f"{name} is not set: set it to {HOW_TO_GET[name]}.")
            elif prefix and not raw.startswith(prefix):
                found.append(
                    f"{name} does not start with {prefix!r}: set it to {HOW_TO_GET[name]}."
                )

        secret("ASANA_TOKEN")
        if mode == "run":
            secret("SLACK_BOT_TOKEN", "xoxb-")
            secret("SLACK_APP_TOKEN", "xapp-", required=False)
            if not self.socket_mode:  # Socket Mode requests are not signed
                secret("SLACK_SIGNING_SECRET")
            from bot.db import database_url_problem  # only `run` opens the database

            reason = database_url_problem(self.DATABASE_URL)
            if reason:
                found.append(
                    f"DATABASE_URL is invalid ({reason}): set it to {HOW_TO_GET['DATABASE_URL']}."
                )
        return found


def describe_validation_error(error: ValidationError) -> list[str]:
    """One line per invalid variable, naming it and how to fix it, without echoing its value."""
    lines: list[str] = []
    for item in error.errors(include_input=False, include_url=False):
        name = str(item["loc"][0]) if item["loc"] else "settings"
        hint = HOW_TO_GET.get(name)
        reason = item["msg"].removeprefix("Value error, ")
        lines.append(f"{name} is invalid ({reason})" + (f": set it to {hint}." if hint else "."))
    return lines


class SettingsError(Exception):
    """Start-up cannot go on; `lines` says why, one problem per line."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def load_settings(mode: Mode, **overrides: object) -> Settings:
    """Read and check the settings that `mode` needs, or raise SettingsError listing every problem."""
    settings, problems = read_settings(mode, **overrides)
    if problems or settings is None:
        raise SettingsError(problems)
    return settings


def read_settings(mode: Mode, **overrides: object) -> tuple[Settings | None, list[str]]:
    """The settings and every problem with them, without raising: `doctor` goes on checking.

    A malformed value is replaced by its default (its problem is listed), so the rest can be
    used; None only when even that does not validate.
    """
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        # Report everything in one pass: read the settings again with each malformed value
        # replaced by its default, and add what is missing to what is malformed.
        invalid = {str(item["loc"][0]) for item in exc.errors() if item["loc"]}
        defaults = {
            name: field.get_default(call_default_factory=True)
            for name, field in Settings.model_fields.items()
            if name in invalid
        }
        lines = describe_validation_error(exc)
        try:
            fallback = Settings(**{**overrides, **defaults})  # type: ignore[arg-type]
        except ValidationError:
            return None, lines
        lines += [line for line in fallback.problems(mode) if line.split(" ", 1)[0] not in invalid]
        return fallback, lines
    return settings, settings.problems(mode)
