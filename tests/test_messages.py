"""Rendering: escaping, links, limits, and what each message says."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot import messages as m
from bot.messages import (
    Message,
    WatchRow,
    escape_mrkdwn,
    format_timestamp,
    render_export,
    render_export_failed,
    render_export_gone,
    render_finished_post,
    render_fresh_link,
    render_help,
    render_looking_up,
    render_lookup_timeout,
    render_problem,
    render_status_card,
    render_usage,
    render_watch_list,
    render_watch_paused,
    safe_link,
    sanitize_url,
    truncate,
)
from bot.messages.mrkdwn import clip
from bot.models import LINK_VALIDITY, Export, ExportState, ProblemKind
from tests.golden_messages import GOLDEN, digests, renderings

NOW = datetime(2026, 11, 27, 14, 5, tzinfo=UTC)
URL = "https://exports.s3.amazonaws.com/org/1.json.gz?X-Amz-Credential=abc%2F1&X-Amz-Signature=f00"
ESCAPED_URL = URL.replace("&", "&amp;")


def export(
    state: ExportState = ExportState.FINISHED,
    *,
    gid: str = "1205",
    raw_state: str | None = None,
    org_gid: str | None = "42",
    org_name: str | None = "Acme Corp",
    created_at: datetime | None = NOW - timedelta(minutes=3),
    url: str | None = URL,
) -> Export:
    return Export(
        gid=gid,
        state=state,
        raw_state=raw_state if raw_state is not None else state.value,
        organization_gid=org_gid,
        organization_name=org_name,
        created_at=created_at,
        download_url=url,
    )


# --------------------------------------------------------------------------- the safety checker

_MENTION = re.compile(r"<@([^<>|]*)>")
_CHANNEL = re.compile(r"<#([^<>|]*)>")
_LINK = re.compile(r"<([^<>|]*)\|([^<>|]*)>")
_ENTITY_AMP = re.compile(r"&(?!amp;|lt;|gt;)")


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every dict in a block tree, with its path."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.items():
            found += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _walk(value, f"{path}[{i}]")
    return found


def _check_mrkdwn(
    text: str, where: str, links: set[str], mentions: set[str], channels: set[str]
) -> None:
    """Only our own constructs, with allowed targets; everything else escaped."""
    for target in _MENTION.findall(text):
        assert target in mentions, f"{where}: unexpected mention <@{target}> in {text!r}"
        assert re.fullmatch(r"[UW][A-Z0-9]{2,}", target)
    for target in _CHANNEL.findall(text):
        assert target in channels, f"{where}: unexpected channel <#{target}> in {text!r}"
    for url, _label in _LINK.findall(text):
        assert url in links, f"{where}: unexpected link {url!r} in {text!r}"
        assert re.match(r"https?://", url)
        assert not set(url) & set(" |<>\n\t"), url
    rest = _LINK.sub("", _CHANNEL.sub("", _MENTION.sub("", text)))
    assert "<" not in rest and ">" not in rest, f"{where}: unescaped bracket in {text!r}"
    assert not _ENTITY_AMP.search(rest), f"{where}: bare & in {text!r}"


def check(
    msg: Message,
    *,
    links: set[str] | frozenset[str] = frozenset(),
    mentions: set[str] | frozenset[str] = frozenset(),
    channels: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Escaping, Slack's limits, JSON-ability: what every message must satisfy."""
    links, mentions, channels = set(links), set(mentions), set(channels)
    assert isinstance(msg.text, str) and msg.text.strip()
    assert len(msg.text) <= m.MAX_FALLBACK_TEXT
    _check_mrkdwn(msg.text, "text", links, mentions, channels)
    assert len(msg.blocks) <= 50
    json.dumps(msg.to_ack())
    json.dumps(msg.to_post())
    for path, node in _walk(msg.blocks):
        kind = node.get("type")
        if kind == "mrkdwn":
            _check_mrkdwn(node["text"], path, links, mentions, channels)
        elif kind == "plain_text":
            # plain_text is never parsed, so we never put foreign strings in it.
            assert not set(node["text"]) & set("<>&"), f"{path}: {node['text']!r}"
        if kind == "section":
            if "text" in node:
                assert node["text"]["type"] == "mrkdwn"
                assert 0 < len(node["text"]["text"]) <= 3000, path
            for field in node.get("fields", []):
                assert 0 < len(field["text"]) <= 2000, path
            assert len(node.get("fields", [])) <= 10
        elif kind == "header":
            assert 0 < len(node["text"]["text"]) <= 150, path
        elif kind == "context":
            assert 1 <= len(node["elements"]) <= 10, path
            assert all(len(e["text"]) <= 3000 for e in node["elements"])
        elif kind == "actions":
            assert 1 <= len(node["elements"]) <= 25, path
        elif kind == "button":
            assert len(node["text"]["text"]) <= 75
            assert len(node["action_id"]) <= 255
            if "url" in node:
                assert len(node["url"]) <= 3000
                assert sanitize_url(node["url"]) == node["url"]
                assert escape_mrkdwn(node["url"]) in links
            if "value" in node:
                assert len(node["value"]) <= 2000


def all_text(msg: Message) -> str:
    """Everything a person could read in the message, plus URLs and values."""
    return msg.text + "\n" + json.dumps(msg.blocks, ensure_ascii=False)


def buttons(msg: Message) -> list[dict[str, Any]]:
    return [node for _, node in _walk(msg.blocks) if node.get("type") == "button"]


def expected_links(exp: Export) -> set[str]:
    clean = sanitize_url(exp.download_url) if exp.download_url is not None else None
    return {escape_mrkdwn(clean)} if clean else set()


# --------------------------------------------------------------------------- primitives


def test_escape_mrkdwn_escapes_the_three_control_characters_ampersand_first() -> None:
    assert escape_mrkdwn("<!channel> & <@U123>") == "&lt;!channel&gt; &amp; &lt;@U123&gt;"
    assert escape_mrkdwn("&lt;") == "&amp;lt;"
    assert escape_mrkdwn("plain *text*") == "plain *text*"


def test_truncate() -> None:
    assert truncate("short", 10) == "short"
    assert truncate("exactly10!", 10) == "exactly10!"
    assert truncate("0123456789abc", 10) == "012345678…"
    assert len(truncate("x" * 5000, 300)) == 300
    with pytest.raises(ValueError):
        truncate("x", 0)


@given(st.text(), st.integers(1, 500))
def test_truncate_property(s: str, limit: int) -> None:
    out = truncate(s, limit)
    assert len(out) <= limit
    assert out == s if len(s) <= limit else out == s[: limit - 1] + "…"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (URL, URL),
        ("https://x.example/a b", "https://x.example/a%20b"),
        ("https://x.example/a|b", "https://x.example/a%7Cb"),
        ("https://x.example/a>b<c", "https://x.example/a%3Eb%3Cc"),
        ("https://x.example/?q=<script>", "https://x.example/?q=%3Cscript%3E"),
        ("  HTTPS://X.example/p  ", "https://X.example/p"),
        ("http://x.example:8080/p?a=1&b=%2F#frag", "http://x.example:8080/p?a=1&b=%2F#frag"),
        ("https://bücher.example/ü", "https://xn--bcher-kva.example/%C3%BC"),
        ('https://x.example/"quoted"`tick`', "https://x.example/%22quoted%22%60tick%60"),
    ],
)
def test_sanitize_url_keeps_the_url_working_and_encodes_unsafe_characters(
    url: str, expected: str
) -> None:
    assert sanitize_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript://x.example/%0Aalert(1)",
        "data:text/html,<b>x</b>",
        "mailto:a@b.example",
        "slack://open",
        "ftp://x.example/f",
        "https:evil.example",
        "https://",
        "//x.example/p",
        "x.example/p",
        "",
        "https://x.example:99999/",
        "https://[::1/",
    ],
)
def test_sanitize_url_rejects_what_is_not_a_usable_http_url(url: str) -> None:
    assert sanitize_url(url) is None
    assert safe_link(url, "label") is None


def test_safe_link_escapes_label_and_ampersands_in_the_url() -> None:
    link = safe_link("https://x.example/a b?c=1&d=2", "<!here> a|b & c")
    assert link == "<https://x.example/a%20b?c=1&amp;d=2|&lt;!here&gt; a¦b &amp; c>"


@given(st.text())
def test_sanitize_url_output_never_breaks_markup(tail: str) -> None:
    for url in (tail, "https://x.example/" + tail, "http://" + tail):
        clean = sanitize_url(url)
        if clean is None:
            continue
        assert re.match(r"https?://", clean)
        assert clean.isascii() and clean.isprintable()
        assert not set(clean) & set(' |<>"`\\')
        assert sanitize_url(clean) == clean  # idempotent: sanitizing twice changes nothing


@pytest.mark.parametrize(
    ("dt", "expected"),
    [
        (NOW, "2026-11-27 14:05 UTC (just now)"),
        (NOW - timedelta(seconds=30), "2026-11-27 14:04 UTC (just now)"),
        (NOW - timedelta(minutes=3), "2026-11-27 14:02 UTC (3 minutes ago)"),
        (NOW - timedelta(minutes=1), "2026-11-27 14:04 UTC (1 minute ago)"),
        (NOW + timedelta(minutes=52), "2026-11-27 14:57 UTC (in 52 minutes)"),
        (NOW - timedelta(hours=2, minutes=5), "2026-11-27 12:00 UTC (2 hours 5 minutes ago)"),
        (NOW - timedelta(hours=1), "2026-11-27 13:05 UTC (1 hour ago)"),
        (NOW - timedelta(days=3), "2026-11-24 14:05 UTC (3 days ago)"),
        (NOW + timedelta(days=1, hours=2), "2026-11-28 16:05 UTC (in 1 day 2 hours)"),
    ],
)
def test_format_timestamp(dt: datetime, expected: str) -> None:
    assert format_timestamp(dt, NOW) == expected


def test_format_timestamp_treats_naive_as_utc_and_converts_other_zones() -> None:
    naive = datetime(2026, 11, 27, 14, 2)
    assert format_timestamp(naive, NOW) == "2026-11-27 14:02 UTC (3 minutes ago)"
    paris = datetime(2026, 11, 27, 15, 2, tzinfo=timezone(timedelta(hours=1)))
    assert format_timestamp(paris, NOW) == "2026-11-27 14:02 UTC (3 minutes ago)"
    assert format_timestamp(paris, NOW.replace(tzinfo=None)).endswith("(3 minutes ago)")


def test_clip_never_cuts_an_entity_or_a_link_in_half() -> None:
    text = "a" * 2992 + "&amp;&amp;"
    clipped = clip(text, 3000)
    assert clipped == "a" * 2992 + "&amp;…"
    link = "<https://x.example/" + "p" * 50 + "|label>"
    clipped = clip("b" * 2980 + link, 3000)
    assert clipped == "b" * 2980 + "…"
    assert clip("short", 3000) == "short"


# --------------------------------------------------------------------------- Message


def test_message_kwargs_for_bolt_and_web_api() -> None:
    msg = render_looking_up("1205")
    ack = msg.to_ack()
    assert set(ack) == {"text", "blocks", "response_type"}
    assert ack["response_type"] == "ephemeral"
    assert set(msg.to_post()) == {"text", "blocks"}
    ack["blocks"].clear()  # callers cannot damage the message through the kwargs
    assert msg.blocks


def test_message_refuses_empty_text_and_too_many_blocks() -> None:
    with pytest.raises(ValueError):
        Message("", [])
    with pytest.raises(ValueError):
        Message("x", [{"type": "divider"}] * 51)


# --------------------------------------------------------------------------- lookup answers


def test_finished_export_has_button_section_link_validity_and_no_url_in_text() -> None:
    exp = export()
    msg = render_export(exp, now=NOW, link_valid_until=NOW + LINK_VALIDITY)
    check(msg, links={ESCAPED_URL})
    assert msg.response_type == "in_channel"
    [button] = buttons(msg)
    assert button["url"] == URL
    assert button["text"]["text"] == "Download export"
    assert f"<{ESCAPED_URL}|Download export>" in all_text(msg)
    assert "Link valid until 15:05 UTC (about 1 hour)" in all_text(msg)
    assert "X-Amz" not in msg.text and "https://" not in msg.text
    assert ":white_check_mark:" in msg.text
    for expected in ("`1205`", "Acme Corp", "`42`", "2026-11-27 14:02 UTC (3 minutes ago)"):
        assert expected in all_text(msg)


def test_finished_export_link_validity_defaults_to_now_plus_link_validity() -> None:
    msg = render_export(export(), now=NOW)
    assert "Link valid until 15:05 UTC (about 1 hour)" in all_text(msg)
    later = render_export(export(), now=NOW, link_valid_until=NOW + timedelta(minutes=20))
    assert "Link valid until 14:25 UTC (about 20 minutes)" in all_text(later)


def test_finished_export_without_url_says_to_ask_again() -> None:
    msg = render_export(export(url=None), now=NOW)
    check(msg)
    assert not buttons(msg)
    assert "not given a usable download link yet" in all_text(msg)
    assert "/asana-export 1205" in all_text(msg)


@pytest.mark.parametrize(
    "url", ["javascript:alert(document.cookie)", "data:text/html,hi", "not a url at all"]
)
def test_finished_export_with_unsafe_url_shows_no_link(url: str) -> None:
    msg = render_export(export(url=url), now=NOW)
    check(msg)
    assert not buttons(msg)
    assert "javascript" not in all_text(msg) and "data:" not in all_text(msg)


def test_finished_export_with_nasty_url_is_encoded_not_broken() -> None:
    nasty = "https://x.example/a b|<!channel>>?q=1&r=<@U123>"
    msg = render_export(export(url=nasty), now=NOW)
    clean = sanitize_url(nasty)
    assert clean == "https://x.example/a%20b%7C%3C!channel%3E%3E?q=1&r=%3C@U123%3E"
    check(msg, links={escape_mrkdwn(clean)})
    assert buttons(msg)[0]["url"] == clean


@pytest.mark.parametrize(
    ("state", "emoji"),
    [
        (ExportState.PENDING, ":hourglass_flowing_sand:"),
        (ExportState.STARTED, ":gear:"),
        (ExportState.FINISHED, ":white_check_mark:"),
        (ExportState.ERROR, ":x:"),
        (ExportState.UNKNOWN, ":grey_question:"),
    ],
)
def test_every_state_has_its_emoji(state: ExportState, emoji: str) -> None:
    msg = render_export(export(state, url=None), now=NOW)
    check(msg)
    assert msg.text.startswith(emoji)
    assert emoji in msg.blocks[1]["fields"][0]["text"]


def test_pending_and_started_carry_no_link_even_if_asana_sent_one() -> None:
    for state in (ExportState.PENDING, ExportState.STARTED, ExportState.ERROR):
        msg = render_export(export(state), now=NOW)
        check(msg)
        assert "X-Amz" not in all_text(msg)
        assert not buttons(msg)


def test_error_export_says_it_failed_at_asana_and_suggests_a_new_export() -> None:
    msg = render_export(export(ExportState.ERROR, url=None), now=NOW)
    check(msg)
    assert "failed on Asana's side" in all_text(msg)
    assert "Request a new export" in all_text(msg)


def test_unknown_state_shows_the_raw_state_escaped() -> None:
    msg = render_export(export(ExportState.UNKNOWN, raw_state="<!here>archived"), now=NOW)
    check(msg)
    assert "`&lt;!here&gt;archived`" in all_text(msg)


def test_missing_organization_and_time() -> None:
    msg = render_export(
        export(ExportState.PENDING, org_gid=None, org_name=None, created_at=None), now=NOW
    )
    check(msg)
    assert "unknown organization" in all_text(msg)
    assert "*Requested*\\nunknown" in all_text(msg)


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("<!channel>", "&lt;!channel&gt;"),
        ("<@U123ABC>", "&lt;@U123ABC&gt;"),
        ("<https://evil.example|click>", "&lt;https://evil.example|click&gt;"),
        ("Fish & Chips", "Fish &amp; Chips"),
    ],
)
def test_organization_names_ping_and_link_nobody(name: str, shown: str) -> None:
    for msg in (
        render_export(export(org_name=name), now=NOW),
        render_status_card(export(org_name=name), now=NOW),
        render_finished_post(
            export(org_name=name), now=NOW, requester_user_id=None, link_valid_until=NOW
        ),
        render_export_failed(export(ExportState.ERROR, org_name=name), now=NOW),
    ):
        check(msg, links={ESCAPED_URL})
        assert shown in msg.text
        assert name not in all_text(msg).replace(shown, "")


def test_multiline_names_are_flattened() -> None:
    msg = render_export(export(org_name="Acme\n> quoted\n*bold*"), now=NOW)
    assert "Acme &gt; quoted *bold*" in all_text(msg)


def test_long_organization_names_are_truncated() -> None:
    msg = render_export(export(org_name="&" * 10_000), now=NOW)
    check(msg, links={ESCAPED_URL})
    assert "&amp;" * 149 + "…" in all_text(msg)


def test_looking_up() -> None:
    msg = render_looking_up("<!channel>")
    check(msg)
    assert msg.response_type == "ephemeral"
    assert msg.text == ":hourglass_flowing_sand: Looking up export `&lt;!channel&gt;`…"


def test_lookup_timeout() -> None:
    msg = render_lookup_timeout("1205", 2.5)
    check(msg)
    assert msg.response_type == "ephemeral"
    assert "did not answer within 2.5 s" in msg.text and "Try again" in msg.text
    assert "within 30 s" in render_lookup_timeout("1205", 29.4).text
    assert "within the time allowed" in render_lookup_timeout("1205", float("nan")).text


def test_internal_error() -> None:
    msg = m.render_internal_error()
    check(msg)
    assert msg.response_type == "ephemeral"


def test_database_unavailable_says_what_was_not_done() -> None:
    msg = m.render_database_unavailable("watch", "<!channel>")
    check(msg)
    assert msg.response_type == "ephemeral"
    assert "database is unavailable" in msg.text and "whoever runs the bot" in msg.text
    assert "did not start watching export `&lt;!channel&gt;`" in msg.text
    assert "did not stop watching" in m.render_database_unavailable("unwatch", "1205").text
    assert "did not list the watches" in m.render_database_unavailable("list").text


# --------------------------------------------------------------------------- problems


@pytest.mark.parametrize(
    ("kind", "phrases"),
    [
        (ProblemKind.NOT_FOUND, ["No export with gid `1205`", "can see", "Check the gid"]),
        (ProblemKind.UNAUTHORIZED, ["invalid or revoked", "new `ASANA_TOKEN`"]),
        (ProblemKind.PAYMENT_REQUIRED, ["Enterprise", "Service Account"]),
        (ProblemKind.FORBIDDEN, ["no access", "Service Account", "organization"]),
        (ProblemKind.RATE_LIMITED, ["rate limiting", "Try again in a minute"]),
        (ProblemKind.ASANA_DOWN, ["server error", "few minutes"]),
        (ProblemKind.TIMEOUT, ["did not answer in time"]),
        (ProblemKind.CONNECTION, ["could not connect"]),
        (ProblemKind.MALFORMED, ["could not understand"]),
        (ProblemKind.BAD_REQUEST, ["invalid", "Check the gid"]),
    ],
)
def test_problem_says_what_went_wrong_and_what_to_do(kind: ProblemKind, phrases: list[str]) -> None:
    msg = render_problem(kind, gid="1205")
    check(msg)
    assert msg.response_type == "ephemeral"
    for phrase in phrases:
        assert phrase in msg.text, phrase
        assert phrase in all_text(msg)


def test_every_problem_kind_has_its_own_words() -> None:
    texts = {render_problem(kind, gid=None).text for kind in ProblemKind}
    assert len(texts) == len(ProblemKind)


def test_rate_limited_says_when_to_try_again() -> None:
    assert (
        "Try again in 30 s."
        in render_problem(ProblemKind.RATE_LIMITED, gid="1", retry_after=30).text
    )
    assert (
        "Try again in 13 s."
        in render_problem(ProblemKind.RATE_LIMITED, gid="1", retry_after=12.2).text
    )
    assert (
        "about 5 minutes" in render_problem(ProblemKind.RATE_LIMITED, gid="1", retry_after=300).text
    )
    for odd in (-1.0, float("inf"), float("nan")):
        text = render_problem(ProblemKind.RATE_LIMITED, gid="1", retry_after=odd).text
        assert "Try again in a minute." in text


def test_problem_includes_asanas_message_escaped_and_truncated() -> None:
    msg = render_problem(ProblemKind.FORBIDDEN, gid="1", asana_message="<!channel> " + "x" * 1000)
    check(msg)
    said = msg.blocks[-1]["elements"][0]["text"]
    assert said.startswith("Asana said: “&lt;!channel&gt; xxx")
    assert len(said) < 330
    assert "Asana said" not in all_text(render_problem(ProblemKind.FORBIDDEN, gid="1"))


# --------------------------------------------------------------------------- usage and help


def test_usage_lists_commands_and_leads_with_the_problem_escaped() -> None:
    msg = render_usage("`<!channel>` is not a gid")
    check(msg)
    assert msg.response_type == "ephemeral"
    assert msg.blocks[0]["text"]["text"].startswith(":warning: `&lt;!channel&gt;` is not a gid")
    body = all_text(msg)
    for sub in ("&lt;gid&gt;", "help", "watch &lt;gid&gt;", "unwatch &lt;gid&gt;", "list all"):
        assert f"/asana-export {sub}" in body, sub


def test_usage_without_problem_and_with_another_command() -> None:
    msg = render_usage(command="/export")
    check(msg)
    assert ":warning:" not in all_text(msg)
    assert "`/export &lt;gid&gt;`" in msg.text


def test_help() -> None:
    msg = render_help()
    check(msg)
    assert msg.response_type == "ephemeral"
    body = all_text(msg)
    for phrase in ("/asana-export help", "Service Account", "hour", "Get a fresh link"):
        assert phrase in body
    assert "/custom list" in all_text(render_help("/custom"))


# --------------------------------------------------------------------------- watching


def test_status_card_never_carries_the_link() -> None:
    for state in ExportState:
        msg = render_status_card(
            export(state), now=NOW, watchers=3, next_check_at=NOW + timedelta(minutes=2)
        )
        check(msg)
        assert msg.response_type is None
        assert "X-Amz" not in all_text(msg)
        assert not buttons(msg)


def test_status_card_notes() -> None:
    running = render_status_card(
        export(ExportState.STARTED), now=NOW, watchers=3, next_check_at=NOW + timedelta(minutes=2)
    )
    assert "next check in 2 minutes" in all_text(running)
    assert "watched in 3 channels" in all_text(running)
    assert "Last checked 2026-11-27 14:05 UTC" in all_text(running)
    done = render_status_card(
        export(), now=NOW, watchers=1, next_check_at=NOW + timedelta(minutes=2)
    )
    assert "next check" not in all_text(done)
    assert "watched in 1 channel" in all_text(done)
    assert "Finished" in all_text(done)


def test_finished_post_mentions_requester_and_offers_link_and_fresh_link() -> None:
    msg = render_finished_post(
        export(), now=NOW, requester_user_id="U0123ABC", link_valid_until=NOW + LINK_VALIDITY
    )
    check(msg, links={ESCAPED_URL}, mentions={"U0123ABC"})
    assert msg.response_type is None
    assert msg.text.startswith("<@U0123ABC> ")
    assert "ready" in msg.text and "X-Amz" not in msg.text
    download, fresh = buttons(msg)
    assert download["url"] == URL
    assert fresh == {
        "type": "button",
        "text": {"type": "plain_text", "text": "Get a fresh link", "emoji": True},
        "action_id": "fresh_link",
        "value": "1205",
    }
    assert "Link valid until 15:05 UTC (about 1 hour)" in all_text(msg)


@pytest.mark.parametrize(
    "user_id", [None, "", "U1", "u0123ABC", "<!channel>", "U0123ABC\n", "C0123ABC", "U0123>x"]
)
def test_finished_post_omits_malformed_requester(user_id: str | None) -> None:
    msg = render_finished_post(
        export(), now=NOW, requester_user_id=user_id, link_valid_until=NOW + LINK_VALIDITY
    )
    check(msg, links={ESCAPED_URL})
    assert "<@" not in all_text(msg)
    assert msg.text.startswith(":white_check_mark:")


def test_finished_post_accepts_enterprise_user_ids() -> None:
    msg = render_finished_post(
        export(), now=NOW, requester_user_id="W0123ABC", link_valid_until=NOW
    )
    check(msg, links={ESCAPED_URL}, mentions={"W0123ABC"})
    assert "<@W0123ABC>" in msg.text


def test_finished_post_without_link_points_to_the_private_button() -> None:
    msg = render_finished_post(
        export(), now=NOW, requester_user_id="U0123ABC", link_valid_until=NOW, include_link=False
    )
    check(msg, mentions={"U0123ABC"})
    assert "X-Amz" not in all_text(msg) and "https://" not in all_text(msg)
    [fresh] = buttons(msg)
    assert fresh["action_id"] == "fresh_link" and fresh["value"] == "1205"
    assert "only you will see it" in all_text(msg)


def test_fresh_link_is_ephemeral_and_carries_the_link() -> None:
    msg = render_fresh_link(export(), now=NOW, link_valid_until=NOW + LINK_VALIDITY)
    check(msg, links={ESCAPED_URL})
    assert msg.response_type == "ephemeral"
    assert buttons(msg)[0]["url"] == URL
    assert "Link valid until 15:05 UTC" in all_text(msg)
    assert "X-Amz" not in msg.text


def test_fresh_link_for_an_export_without_link() -> None:
    not_done = render_fresh_link(export(ExportState.STARTED), now=NOW, link_valid_until=NOW)
    check(not_done)
    assert "not finished" in not_done.text and not buttons(not_done)
    no_url = render_fresh_link(export(url=None), now=NOW, link_valid_until=NOW)
    check(no_url)
    assert "no usable download link" in no_url.text and not buttons(no_url)


def test_expired_link_says_so() -> None:
    msg = render_fresh_link(export(), now=NOW, link_valid_until=NOW - timedelta(minutes=1))
    assert "expired at 14:04 UTC" in all_text(msg)


def test_link_valid_past_midnight_shows_the_date() -> None:
    late = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)
    msg = render_fresh_link(export(), now=late, link_valid_until=late + LINK_VALIDITY)
    assert "Link valid until 2026-11-28 00:30 UTC (about 1 hour)" in all_text(msg)


def test_export_failed_gone_and_paused() -> None:
    failed = render_export_failed(export(ExportState.ERROR), now=NOW)
    check(failed)
    assert "failed on Asana's side" in failed.text
    assert "Request a new export" in all_text(failed)
    assert "3 minutes ago" in all_text(failed)

    gone = render_export_gone("<!channel>")
    check(gone)
    assert "`&lt;!channel&gt;`" in gone.text and "Stopped watching" in gone.text

    paused = render_watch_paused("1205", ProblemKind.UNAUTHORIZED)
    check(paused)
    assert "Paused watching export `1205`" in paused.text
    assert "invalid or revoked" in paused.text
    assert "`/asana-export unwatch 1205`" in all_text(paused)
    assert "resumes on its own" in all_text(paused)


def row(i: int, **kw: Any) -> WatchRow:
    values: dict[str, Any] = {
        "gid": str(1000 + i),
        "organization_name": "Acme",
        "state": ExportState.STARTED,
        "since": NOW - timedelta(hours=1),
        "user_id": "U0123ABC",
        "channel_id": "C0123ABC",
        "next_check_at": NOW + timedelta(minutes=2),
    }
    values.update(kw)
    return WatchRow(**values)


def test_empty_watch_list_says_nothing_is_watched() -> None:
    for scope, where in (("channel", "this channel"), ("workspace", "this workspace")):
        msg = render_watch_list([], now=NOW, scope=scope)
        check(msg)
        assert msg.response_type == "ephemeral"
        assert f"No exports are watched in {where}" in msg.text


def test_watch_list_rows() -> None:
    rows = [row(1), row(2, organization_name="<!channel>", state=ExportState.PENDING)]
    in_channel = render_watch_list(rows, now=NOW, scope="channel")
    check(in_channel, mentions={"U0123ABC"})
    body = all_text(in_channel)
    assert in_channel.text == "2 exports watched in this channel."
    assert "`1001` · Acme · :gear: started" in body
    assert "&lt;!channel&gt; · :hourglass_flowing_sand: pending" in body
    assert "since 2026-11-27 13:05 UTC (1 hour ago) by <@U0123ABC>" in body
    assert "next check in 2 minutes" in body
    assert "<#C0123ABC>" not in body

    in_workspace = render_watch_list(rows, now=NOW, scope="workspace")
    check(in_workspace, mentions={"U0123ABC"}, channels={"C0123ABC"})
    assert "in <#C0123ABC>" in all_text(in_workspace)


def test_watch_list_drops_malformed_ids() -> None:
    msg = render_watch_list(
        [row(1, user_id="<!here>", channel_id="<!channel>")], now=NOW, scope="workspace"
    )
    check(msg)
    assert "here" not in all_text(msg) and "channel&" not in all_text(msg)


def test_long_watch_list_stays_within_limits_and_says_how_many_more() -> None:
    rows = [row(i, organization_name="&" * 500) for i in range(500)]
    msg = render_watch_list(rows, now=NOW, scope="workspace")
    check(msg, mentions={"U0123ABC"}, channels={"C0123ABC"})
    shown = all_text(msg).count("• `")
    assert shown == m.MAX_LIST_ROWS
    assert f"…and {500 - shown} more." in all_text(msg)
    assert msg.text == "500 exports watched in this workspace."


# --------------------------------------------------------------------------- properties

_NASTY = st.sampled_from(
    [
        "<!channel>",
        "<!here>",
        "<!everyone>",
        "<@U123ABC>",
        "<#C123ABC>",
        "<https://evil.example|click>",
        "<!date^1^{date}|x>",
        "<!subteam^S123>",
        "&",
        "&amp;",
        "&lt;",
        "<",
        ">",
        "|",
        "`",
        "*",
        "\n> quote",
        "\u2028",
        "https://evil.example/a b",
        "javascript:alert(1)",
    ]
)
_FOREIGN = st.one_of(
    st.lists(st.one_of(st.text(max_size=20), _NASTY), max_size=6).map("".join),
    st.builds(lambda s, n: s * n, _NASTY, st.integers(0, 1500)),
)
_URLS = st.one_of(
    st.none(),
    st.just(URL),
    _FOREIGN,
    _FOREIGN.map(lambda s: "https://s3.example.com/x?" + s),
    _FOREIGN.map(lambda s: "https://" + s),
)
_TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
_EXPORTS = st.builds(
    Export,
    gid=_FOREIGN,
    state=st.sampled_from(ExportState),
    raw_state=st.none() | _FOREIGN,
    organization_gid=st.none() | _FOREIGN,
    organization_name=st.none() | _FOREIGN,
    created_at=st.none() | _TIMES,
    download_url=_URLS,
)
_USER_IDS = st.none() | st.from_regex(r"[UW][A-Z0-9]{2,12}", fullmatch=True) | _FOREIGN
_CHANNEL_IDS = st.none() | st.from_regex(r"[CG][A-Z0-9]{2,12}", fullmatch=True) | _FOREIGN

_FAST = settings(max_examples=60, deadline=None)


def _ids(*values: str | None, pattern: str) -> set[str]:
    return {v for v in values if v and re.fullmatch(pattern, v)}


@_FAST
@given(_EXPORTS, _TIMES, st.none() | _TIMES, _FOREIGN)
def test_property_render_export(exp: Export, now: datetime, until: datetime | None, cmd: str):
    msg = render_export(exp, now=now, link_valid_until=until, command=cmd or "/x")
    check(msg, links=expected_links(exp))
    assert "<http" not in msg.text  # the download link never goes into notifications


@_FAST
@given(_EXPORTS, _TIMES, st.none() | st.integers(-5, 10**6), st.none() | _TIMES)
def test_property_status_card(exp: Export, now: datetime, watchers: int | None, nxt: Any):
    check(render_status_card(exp, now=now, watchers=watchers, next_check_at=nxt))


@_FAST
@given(_EXPORTS, _TIMES, _TIMES, _USER_IDS, st.booleans())
def test_property_finished_post_and_fresh_link(
    exp: Export, now: datetime, until: datetime, user_id: str | None, include: bool
) -> None:
    msg = render_finished_post(
        exp, now=now, requester_user_id=user_id, link_valid_until=until, include_link=include
    )
    check(
        msg,
        links=expected_links(exp) if include else set(),
        mentions=_ids(user_id, pattern=r"[UW][A-Z0-9]{2,}"),
    )
    for button in buttons(msg):
        if button["action_id"] == "fresh_link":
            assert button["value"] == exp.gid
    check(render_fresh_link(exp, now=now, link_valid_until=until), links=expected_links(exp))
    check(render_export_failed(exp, now=now))


@_FAST
@given(
    st.sampled_from(ProblemKind),
    st.none() | _FOREIGN,
    st.none() | _FOREIGN,
    st.none() | st.floats(allow_nan=True, allow_infinity=True),
)
def test_property_problem(kind: ProblemKind, gid: str | None, said: str | None, retry: Any):
    check(render_problem(kind, gid=gid, asana_message=said, retry_after=retry))
    if gid is not None:
        check(render_watch_paused(gid, kind))
        check(render_export_gone(gid))
        check(render_looking_up(gid))


@_FAST
@given(st.none() | _FOREIGN, _FOREIGN, _FOREIGN, st.floats(allow_nan=True, allow_infinity=True))
def test_property_usage_help_timeout(problem: str | None, command: str, gid: str, waited: float):
    check(render_usage(problem, command=command))
    check(render_help(command))
    check(render_lookup_timeout(gid, waited))


_ROWS = st.builds(
    WatchRow,
    gid=_FOREIGN,
    organization_name=st.none() | _FOREIGN,
    state=st.sampled_from(ExportState),
    since=_TIMES,
    user_id=_USER_IDS,
    channel_id=_CHANNEL_IDS,
    next_check_at=st.none() | _TIMES,
)


@_FAST
@given(st.lists(_ROWS, max_size=70), _TIMES, st.sampled_from(["channel", "workspace"]))
def test_property_watch_list(rows: list[WatchRow], now: datetime, scope: Any) -> None:
    msg = render_watch_list(rows, now=now, scope=scope)
    check(
        msg,
        mentions=_ids(*(r.user_id for r in rows), pattern=r"[UW][A-Z0-9]{2,}"),
        channels=_ids(*(r.channel_id for r in rows), pattern=r"[CG][A-Z0-9]{2,}")
        if scope == "workspace"
        else set(),
    )
    shown = min(len(rows), m.MAX_LIST_ROWS)
    if len(rows) > shown:
        assert f"…and {len(rows) - shown} more." in all_text(msg)


def test_very_long_urls_degrade_to_button_only_then_to_no_link() -> None:
    long_url = "https://x.example/?" + "a" * 2960
    msg = render_export(export(url=long_url), now=NOW)
    check(msg, links={long_url})
    assert buttons(msg)[0]["url"] == long_url
    assert f"<{long_url}|" not in all_text(msg)  # would not fit a section with its validity
    assert "Link valid until" in all_text(msg)

    too_long = "https://x.example/?" + "a" * 3100
    msg = render_export(export(url=too_long), now=NOW)
    check(msg)
    assert not buttons(msg)
    assert "not given a usable download link" in all_text(msg)


# --------------------------------------------------------------------------- golden record


def test_every_renderer_says_exactly_what_the_golden_record_says() -> None:
    """Refactoring the renderers must not change a character (see tests/golden_messages.py)."""
    want = json.loads(GOLDEN.read_text())
    got = renderings()
    changed = sorted(
        name
        for name in want.keys() & got.keys()
        if digests({name: got[name]}) != {name: want[name]}
    )
    assert sorted(got.keys() - want.keys()) == [], "new cases: regenerate the golden record"
    assert sorted(want.keys() - got.keys()) == [], "cases gone from tests/golden_messages.py"
    assert changed == [], f"{len(changed)} renderings changed, e.g. {changed[0]}: {got[changed[0]]}"


# --------------------------------------------------------------------------- the package's shape

#: What `bot.messages` exported as one module, which callers keep importing from the package.
_PUBLIC_BEFORE_THE_SPLIT = {
    *("DEFAULT_COMMAND", "DOWNLOAD_ACTION", "FRESH_LINK_ACTION", "MAX_LIST_ROWS"),
    *("MAX_BLOCKS", "MAX_SECTION_TEXT", "MAX_FIELD_TEXT", "MAX_FIELDS", "MAX_HEADER_TEXT"),
    *("MAX_BUTTON_TEXT", "MAX_BUTTON_URL", "MAX_BUTTON_VALUE", "MAX_CONTEXT_TEXT"),
    *("MAX_FALLBACK_TEXT", "Message", "WatchRow", "escape_mrkdwn", "truncate", "sanitize_url"),
    *("safe_link", "user_mention", "channel_mention", "format_duration", "format_relative"),
    *("format_absolute", "format_timestamp", "render_export", "render_looking_up"),
    *("render_lookup_timeout", "render_internal_error", "render_database_unavailable"),
    *("render_problem", "render_usage", "render_help", "render_status_card"),
    *("render_finished_post", "render_fresh_link", "render_export_failed", "render_export_gone"),
    *("render_watch_paused", "render_watch_list", "render_watch_started"),
    *("render_already_watching", "render_refused", "render_link_withheld", "render_cannot_post"),
    *("render_unwatched", "render_card_unwatched", "render_slow_down", "render_watch_cap"),
}


def test_messages_is_a_package_of_small_modules_that_import_only_models() -> None:
    """Split by job (mrkdwn, blocks, renderers), with the same public face as the old module."""
    import ast
    from pathlib import Path

    package = Path(m.__file__).parent
    assert Path(m.__file__).name == "__init__.py", "bot.messages should be a package"
    modules = sorted(package.glob("*.py"))
    assert {p.stem for p in modules} >= {"__init__", "mrkdwn", "blocks", "exports", "problems"}
    for path in modules:
        assert len(path.read_text().splitlines()) <= 300, f"{path.name} does more than one job"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] in ("bot", "handlers"):
                    assert name == "bot.models" or name.startswith("bot.messages."), (
                        f"{path.name} imports {name}"
                    )
    assert set(m.__all__) == _PUBLIC_BEFORE_THE_SPLIT | {
        "FairUseRefusal",
        "render_fair_use_refusal",
        # `new`: bot/messages/creating.py
        "WATCH_INSTEAD_ACTION",
        "render_already_handled",
        "render_create_refused",
        "render_create_timeout",
        "render_create_unknown",
        "render_created",
        "render_creating",
        "render_no_organization",
        "render_not_admin",
        "render_running_offer",
        # schedules: bot/messages/schedules.py
        "ScheduleLine",
        "render_schedule_list",
        "render_schedule_usage",
        "render_scheduled",
        "render_unscheduled",
        "render_schedule_started",
        "render_schedule_failed",
        "render_schedule_paused",
        "render_schedule_unknown",
        # the ack of a schedule command whose answer needs a slow Slack: problems.py
        "render_working",
        # archiving: bot/messages/archives.py
        "format_size",
        "progress_text",
        "render_archive_failed",
        "render_archived",
        "render_card_archived",
        "render_card_archiving",
        "render_work_timeout",
    }
    assert all(hasattr(m, name) for name in m.__all__)


@pytest.mark.parametrize("limit", ["busy", "user"])
@pytest.mark.parametrize("per_minute", [None, 5.0])
def test_a_fair_use_refusal_renders_in_one_call(limit: str, per_minute: float | None) -> None:
    """Handlers pass `bot.fair_use.Refusal` as it is; messages itself never imports fair_use."""
    from bot.fair_use import Limit, Refusal

    refusal = Refusal(Limit(limit), 12)
    got = m.render_fair_use_refusal(refusal, per_minute=per_minute)
    want = m.render_slow_down(busy=limit == "busy", retry_after=12, per_minute=per_minute)
    assert got == want
    assert got.response_type == "ephemeral"
    assert ("Asana is busy" in got.text) == (limit == "busy")
    check(got)


def test_what_new_says_escapes_everything_foreign() -> None:
    """Asana's words, gids and the command name never become mentions or links."""
    hostile = "<!channel> & <@U123|x>"
    export = Export(gid="1", state=ExportState.PENDING, organization_name=hostile)
    for msg in (
        m.render_create_refused(ProblemKind.FORBIDDEN, org_gid=hostile, asana_message=hostile),
        m.render_create_unknown(hostile, command=hostile),
        m.render_creating(hostile),
        m.render_running_offer(export, requested_by=hostile, requested_at=NOW, now=NOW),
        m.render_created(export, m.render_watch_started(export, now=NOW, next_check_at=NOW)),
        m.render_not_admin([hostile, "U0ADMIN"]),
    ):
        wire = json.dumps(msg.to_ack())
        assert "<!channel>" not in wire and "<@U123|x>" not in wire, wire
    assert "<@U0ADMIN>" in m.render_not_admin(["U0ADMIN"]).text


def test_what_schedules_say_escapes_everything_foreign() -> None:
    """A spec, a zone, a paused reason, ids and the command name never become mentions."""
    hostile = "<!channel> & <@U123|x>"
    row = m.ScheduleLine(
        id=1,
        when=hostile,
        timezone=hostile,
        organization_gid=hostile,
        channel_id=hostile,
        created_by=hostile,
        next_at=NOW,
        paused_reason=hostile,
    )
    for msg in (
        m.render_schedule_usage(hostile, [hostile], command=hostile),
        m.render_scheduled(
            1, when=hostile, timezone=hostile, organization_gid=hostile, occurrences=[(NOW, NOW)]
        ),
        m.render_schedule_list([row], now=NOW, scope="workspace", command=hostile),
        m.render_schedule_list([], now=NOW, scope="channel", command=hostile),
        m.render_schedule_started(1, hostile, occurrence_at=NOW, now=NOW, late=True),
        m.render_schedule_failed(
            1, ProblemKind.NOT_FOUND, occurrence_at=NOW, organization_gid=hostile
        ),
        m.render_schedule_paused(
            1, ProblemKind.FORBIDDEN, organization_gid=hostile, command=hostile
        ),
    ):
        wire = json.dumps(msg.to_ack())
        assert "<!channel>" not in wire and "<@U123|x>" not in wire, wire
        check(msg)
