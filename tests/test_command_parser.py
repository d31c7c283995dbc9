"""The command parser is total: every text becomes a command or a reason, never an exception."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.command_parser import (
    Help,
    Invalid,
    ListSchedules,
    ListWatches,
    Lookup,
    New,
    Schedule,
    Unschedule,
    Unwatch,
    Watch,
    parse_command,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1234567890", Lookup("1234567890")),
        ("  1234567890\t\n", Lookup("1234567890")),
        ("`1234`", Lookup("1234")),
        ("'1234'", Lookup("1234")),
        ("12\u200b34", Lookup("1234")),  # zero-width space from a paste
        ("help", Help()),
        ("HELP", Help()),
        ("--help", Help()),
        ("watch 42", Watch("42")),
        ("Watch   42", Watch("42")),
        ("unwatch 42", Unwatch("42")),
        ("list", ListWatches(workspace=False)),
        ("list all", ListWatches(workspace=True)),
        ("list ALL", ListWatches(workspace=True)),
    ],
)
def test_valid_commands(text: str, expected: object) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (None, "which export"),
        ("", "which export"),
        ("   ", "which export"),
        ("abc", "`abc` is not an export gid"),
        ("-5", "is not an export gid"),
        ("12.5", "is not an export gid"),
        ("1" * 31, "too long to be an export gid"),
        ("watch", "exactly one export gid"),
        ("watch 1 2", "exactly one export gid"),
        ("watch abc", "`abc` is not an export gid"),
        ("list everything", "`list` takes nothing or `all`"),
        ("1234 5678", "did not understand"),
        ("x" * 10_000, "too long for a command"),
    ],
)
def test_invalid_commands_say_why(text: str | None, fragment: str) -> None:
    result = parse_command(text)
    assert isinstance(result, Invalid)
    assert fragment in result.problem


def test_quoted_input_is_truncated() -> None:
    result = parse_command("y" * 150)
    assert isinstance(result, Invalid)
    assert len(result.problem) < 120


@settings(max_examples=500)
@given(st.text(max_size=12_000))
def test_any_text_parses_without_raising(text: str) -> None:
    result = parse_command(text)
    assert isinstance(result, Lookup | Watch | Unwatch | ListWatches | New | Help | Invalid)
    if isinstance(result, Lookup | Watch | Unwatch):
        assert result.gid.isdigit() and result.gid.isascii()
    if isinstance(result, Invalid):
        assert result.problem and len(result.problem) < 200


@given(st.from_regex(r"[0-9]{1,30}", fullmatch=True), st.text(" \t\n", max_size=5))
def test_any_gid_round_trips_in_canonical_form(gid: str, pad: str) -> None:
    assert parse_command(pad + gid + pad) == Lookup(str(int(gid)))


@pytest.mark.parametrize(
    ("text", "gid"),
    [("01234", "1234"), ("1234", "1234"), ("0", "0"), ("000", "0"), ("`0042`", "42")],
)
def test_leading_zeros_name_the_same_export(text: str, gid: str) -> None:
    assert parse_command(text) == Lookup(gid)
    assert parse_command(f"watch {text}") == Watch(gid)
    assert parse_command(f"unwatch {text}") == Unwatch(gid)


@pytest.mark.parametrize("text", ["١٢٣", "１２３", "watch ١٢٣", "۱۲۳", "1２3"])
def test_digits_of_other_scripts_are_not_a_number(text: str) -> None:
    result = parse_command(text)
    assert isinstance(result, Invalid) and "not a number" in result.problem
    assert "too long" not in result.problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("new", New(None, False)),
        ("NEW", New(None, False)),
        ("new 00123", New("123", False)),
        ("new `123`", New("123", False)),
        ("new --force", New(None, True)),
        ("new 123 --force", New("123", True)),
        ("new --force 123", New("123", True)),
        ("new -f 123", New("123", True)),
    ],
)
def test_new_takes_an_optional_organization_and_force(text: str, expected: New) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("new acme", "not an organization gid"),
        ("new 1 2", "at most one organization gid"),
        ("new " + "9" * 40, "too long"),
    ],
)
def test_new_with_bad_arguments_says_why(text: str, fragment: str) -> None:
    result = parse_command(text)
    assert isinstance(result, Invalid) and fragment in result.problem


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'schedule cron "0 2 * * 1" tz Europe/Berlin',
            Schedule('cron "0 2 * * 1" tz Europe/Berlin'),
        ),
        ("SCHEDULE  weekly mon 02:00   42", Schedule("weekly mon 02:00 42")),
        ("schedule", Schedule("")),
        ("schedules", ListSchedules(workspace=False)),
        ("schedules ALL", ListSchedules(workspace=True)),
        ("unschedule 3", Unschedule(3)),
        ("unschedule #12", Unschedule(12)),
    ],
)
def test_schedule_commands(text: str, expected: object) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("schedules mine", "takes nothing or `all`"),
        ("unschedule", "one schedule number"),
        ("unschedule three", "one schedule number"),
        ("unschedule 1 2", "one schedule number"),
        ("unschedule 12345678901", "one schedule number"),
    ],
)
def test_schedule_commands_with_bad_arguments_say_why(text: str, fragment: str) -> None:
    parsed = parse_command(text)
    assert isinstance(parsed, Invalid) and fragment in parsed.problem
