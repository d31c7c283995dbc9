"""The App Home renderer and the New export modal (pure): slack_sdk's models, limits, escaping.

Any mix of list lengths and hostile strings renders a view that slack_sdk's Block Kit models
parse unchanged, with at most 100 blocks and every text within Slack's limits; a cut list says
how many are not shown; the Archive section appears only for a non-empty list.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.models.views import View

from bot import messages as m
from bot.models import EndReason, ExportState

NOW = datetime(2026, 11, 27, 14, 5, tzinfo=UTC)
HOSTILE = "<!channel> & *bold* `tick` <@U123|x>\n> quote\u2028|pipe"


def check(view: dict[str, Any]) -> None:
    """slack_sdk parses it unchanged, and Slack's limits hold (100 blocks, text lengths)."""
    blocks = view["blocks"]
    assert 1 <= len(blocks) <= 100
    parsed = View(**view)
    parsed.validate_json()
    for block in parsed.blocks:
        block.validate_json()
    assert [b.to_dict() for b in parsed.blocks] == blocks
    for block in blocks:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= 3000
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
    assert "<!channel>" not in json.dumps(view)


def watches(n: int, name: str | None = "Acme") -> list[m.HomeWatch]:
    return [
        m.HomeWatch(
            subscription_id=i + 1,
            gid=str(1200000000000000 + i),
            organization_name=name,
            state=list(ExportState)[i % len(ExportState)],
            channel_id=f"C{i:04d}",
            user_id="U0ALICE",
            since=NOW - timedelta(hours=i),
            next_check_at=NOW + timedelta(minutes=i),
        )
        for i in range(n)
    ]


def schedules(n: int, when: str = "weekly mon 02:00") -> list[m.ScheduleLine]:
    return [
        m.ScheduleLine(
            id=i + 1,
            when=when,
            timezone="Europe/Berlin",
            organization_gid="42",
            channel_id="C0001",
            created_by="U0ADMIN",
            next_at=NOW + timedelta(days=i),
            paused_reason=HOSTILE if i == 2 else None,
        )
        for i in range(n)
    ]


def ended(n: int) -> list[m.EndedWatch]:
    reasons = [*list(EndReason), None, HOSTILE]
    return [
        m.EndedWatch(
            gid=str(1300000000000000 + i),
            organization_name=HOSTILE,
            channel_id="C0001",
            user_id="U0BOB",
            ended_at=NOW - timedelta(minutes=i),
            end_reason=reasons[i % len(reasons)],
        )
        for i in range(n)
    ]


@settings(max_examples=40, deadline=None)
@given(
    n_watches=st.integers(0, 200),
    n_schedules=st.integers(0, 40),
    n_ended=st.integers(0, 20),
    n_archives=st.integers(0, 30),
    withheld=st.integers(0, 5),
    may_create=st.booleans(),
    name=st.sampled_from([None, "Acme", HOSTILE, "Ü" * 400 + "<&>" * 300]),
)
def test_any_home_fits_slacks_limits_and_parses(
    n_watches: int,
    n_schedules: int,
    n_ended: int,
    n_archives: int,
    withheld: int,
    may_create: bool,
    name: str | None,
) -> None:
    archives = [
        m.ArchiveSummary(gid=str(i), state=HOSTILE, at=NOW, location="s3://bucket/" + "x" * 400)
        for i in range(n_archives)
    ]
    content = m.HomeContent(
        watches=watches(n_watches, name),
        schedules=schedules(n_schedules, HOSTILE),
        ended=ended(n_ended),
        archives=archives,
        withheld=withheld,
        may_create=may_create,
        notice=m.unwatch_notice("1", "C0001", "stopped"),
    )
    view = m.render_home(content, now=NOW, command=HOSTILE).to_view()
    check(view)
    text = json.dumps(view["blocks"])
    shown = text.count('"action_id": "home_unwatch"')
    if shown < n_watches:
        assert f"and {n_watches - shown} more watches not shown here" in text
        assert "list all" in text
    assert (f"Active watches ({n_watches})") in text
    assert ('"action_id": "home_new_export"' in text) == may_create
    assert ("not shown: in channels you are not a member of" in text) == bool(withheld)


def test_the_archive_section_renders_only_for_a_non_empty_list() -> None:
    assert m.archive_section(None, now=NOW) == []
    assert m.archive_section([], now=NOW) == []
    for archives in (None, []):
        view = m.render_home(m.HomeContent(archives=archives), now=NOW).to_view()
        assert "Archive" not in json.dumps(view)
    summary = m.ArchiveSummary(gid="1205", state="done", at=NOW, location="s3://b/1205.json.gz")
    blocks = m.archive_section([summary], now=NOW)
    assert blocks[0]["text"]["text"] == "Archive"
    assert "`1205`" in json.dumps(blocks) and "s3://b/1205.json.gz" in json.dumps(blocks)
    check(m.render_home(m.HomeContent(archives=[summary]), now=NOW).to_view())


def test_each_end_reason_reads_as_what_happened() -> None:
    labels = {
        EndReason.FINISHED: "finished",
        EndReason.EXPORT_FAILED: "failed",
        EndReason.EXPORT_NOT_FOUND: "gone",
        EndReason.UNWATCHED: "unwatched",
        EndReason.SLACK_IS_ARCHIVED: "channel lost (`is_archived`)",
    }
    for reason, says in labels.items():
        gone = m.EndedWatch("1", "Acme", "C0001", "U0001", NOW, reason.value)
        text = json.dumps(m.render_home(m.HomeContent(ended=[gone]), now=NOW).to_view())
        assert says in text, reason


def test_the_refused_home_shows_nothing_but_why() -> None:
    content = m.HomeContent(watches=watches(3), schedules=schedules(2), refused=True)
    view = m.render_home(content, now=NOW).to_view()
    check(view)
    text = json.dumps(view)
    assert "cannot use this bot" in text and "1200000000000000" not in text
    assert "home_" not in text.replace("asana_export_home", "")


def test_the_modal_asks_the_organization_and_the_channel() -> None:
    view = m.render_new_export_modal("4200000000000042").to_view()
    check(view)
    assert view["type"] == "modal" and view["callback_id"] == m.NEW_EXPORT_CALLBACK
    assert len(view["title"]["text"]) <= 24 and len(view["submit"]["text"]) <= 24
    org, channel = view["blocks"][1], view["blocks"][2]
    assert (org["block_id"], org["element"]["action_id"]) == m.ORG_INPUT
    assert org["element"]["initial_value"] == "4200000000000042"
    assert (channel["block_id"], channel["element"]["action_id"]) == m.CHANNEL_INPUT
    assert channel["element"]["type"] == "conversations_select"
    assert "initial_value" not in m.render_new_export_modal(None).to_view()["blocks"][1]["element"]


def test_a_view_refuses_more_than_a_hundred_blocks() -> None:
    with pytest.raises(ValueError, match="101 blocks"):
        m.View("home", [{"type": "divider"}] * 101)
