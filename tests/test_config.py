"""Settings: every problem named on its own line, secret values never shown."""

from __future__ import annotations

import pytest

from bot.config import SettingsError, load_settings

SECRET_VALUES = ("xoxb-secret-bot-value", "signing-secret-value", "asana-secret-value")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    for name in (
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "ASANA_TOKEN",
        "PORT",
        "LOG_LEVEL",
        "LOG_SQL",
        "DATABASE_URL",
        "SLACK_API_URL",
        "ASANA_BASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_missing_settings_are_listed_one_per_line() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings("run")
    lines = info.value.lines
    assert len(lines) == 3
    assert [line.split()[0] for line in lines] == [
        "ASANA_TOKEN",
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
    ]
    assert all("set it to" in line for line in lines)


def test_check_needs_only_asana(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASANA_TOKEN", "asana-secret-value")
    settings = load_settings("check")
    assert settings.ASANA_TOKEN is not None
    assert "asana-secret-value" not in repr(settings)


def test_socket_mode_needs_no_signing_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASANA_TOKEN", "asana-secret-value")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-bot-value")
    monkeypatch.setenv("SLACK_APP_TOKEN", "xapp-1-secret")
    assert load_settings("run").socket_mode


def test_malformed_values_are_named_without_echoing_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASANA_TOKEN", "asana-secret-value")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "signing-secret-value")  # wrong prefix
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "signing-secret-value")
    monkeypatch.setenv("PORT", "http-secret-port")
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    monkeypatch.setenv("SLACK_API_URL", "ftp://nowhere")
    with pytest.raises(SettingsError) as info:
        load_settings("run")
    text = "\n".join(info.value.lines)
    for name in ("PORT", "LOG_LEVEL", "SLACK_API_URL"):
        assert any(line.startswith(name) for line in info.value.lines), name
    for value in (*SECRET_VALUES, "http-secret-port", "chatty", "ftp://nowhere"):
        assert value not in text


def test_wrong_token_prefix_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASANA_TOKEN", "asana-secret-value")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxp-user-token-value")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "signing-secret-value")
    with pytest.raises(SettingsError) as info:
        load_settings("run")
    assert info.value.lines == [
        "SLACK_BOT_TOKEN does not start with 'xoxb-': set it to the Bot User OAuth Token "
        "(xoxb-...) from your Slack app's 'OAuth & Permissions' page."
    ]


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    (tmp_path / ".env").write_text("ASANA_TOKEN=from-dotenv\nPORT=4321\n")
    settings = load_settings("check")
    assert settings.PORT == 4321
    assert settings.ASANA_TOKEN is not None
    assert settings.ASANA_TOKEN.get_secret_value() == "from-dotenv"


def test_slack_api_url_gets_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASANA_TOKEN", "x")
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9/api")
    assert load_settings("check").slack_api_url == "http://127.0.0.1:9/api/"


def test_security_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASANA_TOKEN", "x")
    monkeypatch.setenv("LINK_POLICY", "Button")
    monkeypatch.setenv("ALLOWED_USERS", "U0A1, U0B2")
    settings = load_settings("check")
    assert settings.LINK_POLICY == "button"
    assert settings.allowed_users == {"U0A1", "U0B2"} and settings.allowed_channels == frozenset()
    monkeypatch.setenv("LINK_POLICY", "everywhere")
    monkeypatch.setenv("ALLOWED_CHANNELS", "#general")
    with pytest.raises(SettingsError) as info:
        load_settings("check")
    assert sorted(line.split()[0] for line in info.value.lines) == [
        "ALLOWED_CHANNELS",
        "LINK_POLICY",
    ]


def test_log_sql_is_off_by_default_and_a_bad_value_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ASANA_TOKEN", "asana-secret-value")
    assert load_settings("check").LOG_SQL is False
    monkeypatch.setenv("LOG_SQL", "true")
    assert load_settings("check").LOG_SQL is True
    monkeypatch.setenv("LOG_SQL", "loud")
    with pytest.raises(SettingsError) as info:
        load_settings("check")
    assert info.value.lines[0].startswith("LOG_SQL is invalid") and "true or false" in str(
        info.value
    )


def test_fair_use_settings_have_defaults_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASANA_TOKEN", "x")
    settings = load_settings("check")
    assert (settings.POLL_RESERVED_SHARE, settings.USER_REQUESTS_PER_MINUTE) == (0.5, 10)
    assert (settings.MAX_WATCHES_PER_USER, settings.MAX_WATCHES_PER_CHANNEL) == (20, 50)
    monkeypatch.setenv("POLL_RESERVED_SHARE", "1")  # polling only: nobody could look anything up
    monkeypatch.setenv("MAX_WATCHES_PER_CHANNEL", "0")
    with pytest.raises(SettingsError) as info:
        load_settings("check")
    lines = sorted(info.value.lines)
    assert [line.split()[0] for line in lines] == ["MAX_WATCHES_PER_CHANNEL", "POLL_RESERVED_SHARE"]
    assert "between 0 and 0.9" in lines[1]


def test_every_problem_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Malformed values, missing settings and an unusable DATABASE_URL, all at once."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-bot-value")
    monkeypatch.setenv("PORT", "http-secret-port")
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    monkeypatch.setenv("DATABASE_URL", "postgresql://bot:pw-canary@db:notaport/bot")
    with pytest.raises(SettingsError) as info:
        load_settings("run")
    names = [line.split()[0] for line in info.value.lines]
    assert sorted(names) == [
        "ASANA_TOKEN",
        "DATABASE_URL",
        "LOG_LEVEL",
        "PORT",
        "SLACK_SIGNING_SECRET",
    ]
    assert "pw-canary" not in "\n".join(info.value.lines)


@pytest.mark.parametrize(
    "url", ["sqlite:///x.db", "postgres://u@h/db", "postgresql+asyncpg://u:p@h:5432/db"]
)
def test_usable_database_urls_pass(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("ASANA_TOKEN", "asana-secret-value")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-bot-value")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "signing-secret-value")
    monkeypatch.setenv("DATABASE_URL", url)
    assert url == load_settings("run").DATABASE_URL


def test_schedule_timezone_is_utc_by_default_and_must_be_a_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ASANA_TOKEN", "x")
    monkeypatch.delenv("SCHEDULE_TIMEZONE", raising=False)
    assert load_settings("check").SCHEDULE_TIMEZONE == "UTC"
    monkeypatch.setenv("SCHEDULE_TIMEZONE", " Europe/Berlin ")
    assert load_settings("check").SCHEDULE_TIMEZONE == "Europe/Berlin"
    for bad in ("Mars/Olympus", "../../etc/passwd", ""):
        monkeypatch.setenv("SCHEDULE_TIMEZONE", bad)
        with pytest.raises(SettingsError) as info:
            load_settings("check")
        assert [line.split()[0] for line in info.value.lines] == ["SCHEDULE_TIMEZONE"]
