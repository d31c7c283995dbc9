"""Every renderer of `bot.messages` on fixed inputs, as JSON: the golden record of what we say.

`tests/test_messages.py` compares today's output with `tests/golden/messages.json`, so a
refactoring of the renderers cannot change a single character unnoticed. After a deliberate change
of wording, regenerate the file:

    python -m tests.golden_messages

The file keeps a short hash per case (the renderings themselves are megabytes); to see what
changed, write the renderings of both revisions with `python -m tests.golden_messages --full
FILE` and diff them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bot import messages as m
from bot.models import Export, ExportState, ProblemKind

GOLDEN = Path(__file__).parent / "golden" / "messages.json"

NOW = datetime(2026, 11, 27, 14, 5, tzinfo=UTC)
URL = "https://exports.s3.amazonaws.com/org/1.json.gz?X-Amz-Credential=abc%2F1&X-Amz-Signature=f00"
HOSTILE = "<!channel> & *bold* `tick` <@U123|x>\n> quote\u2028|pipe"
LONG = "Ü" * 400 + "<&>" * 300
URLS: dict[str, str | None] = {
    "url": URL,
    "no_url": None,
    "bad_url": "javascript:alert(1)",
    "odd_url": "https://bücher.example/a b|c<d>?q=1&r=ü",
    "huge_url": "https://x.example/" + "a" * 3100,
    "section_only_url": "https://x.example/" + "a" * 2995,
}
NAMES: dict[str, str | None] = {
    "name": "Acme Corp",
    "no_name": None,
    "blank_name": "   ",
    "hostile_name": HOSTILE,
    "long_name": LONG,
}
GIDS = {"gid": "1205", "hostile_gid": "12`05<x>&", "long_gid": "9" * 300, "empty_gid": ""}


def _exports() -> Iterator[tuple[str, Export]]:
    """A spread of exports: every state, every kind of URL, name, gid and date."""
    for state in ExportState:
        for url_key, url in URLS.items():
            yield (
                f"{state.value}/{url_key}",
                Export(
                    gid="1205",
                    state=state,
                    raw_state=state.value if state is not ExportState.UNKNOWN else "Archiving`<x>",
                    organization_gid="42",
                    organization_name="Acme Corp",
                    created_at=NOW - timedelta(minutes=3),
                    download_url=url,
                ),
            )
    for name_key, name in NAMES.items():
        for gid_key, gid in GIDS.items():
            yield (
                f"finished/{name_key}/{gid_key}",
                Export(
                    gid=gid,
                    state=ExportState.FINISHED,
                    raw_state="finished",
                    organization_gid=None if name is None else HOSTILE,
                    organization_name=name,
                    created_at=None if gid_key == "long_gid" else datetime(2026, 11, 20, 9, 0),
                    download_url=URL,
                ),
            )
    yield (
        "unknown/no_raw",
        Export(gid="7", state=ExportState.UNKNOWN, raw_state=None, download_url=None),
    )


def _rows(n: int, *, state: ExportState = ExportState.STARTED) -> list[m.WatchRow]:
    return [
        m.WatchRow(
            gid=str(1000 + i) if i % 7 else "9" * 80,
            organization_name=[None, "Acme", HOSTILE, LONG][i % 4],
            state=list(ExportState)[i % 5] if i % 3 else state,
            since=NOW - timedelta(minutes=5 * i),
            user_id=["U123ABC", None, "bad id", "W0RKER"][i % 4],
            channel_id=["C0123", None, "nope", "G9ABC"][(i + 1) % 4],
            next_check_at=None if i % 5 == 0 else NOW + timedelta(minutes=i),
        )
        for i in range(n)
    ]


def renderings() -> dict[str, Any]:
    """Case name -> what Slack would receive (or the string a text helper returns)."""
    out: dict[str, Any] = {}

    def add(name: str, value: Any) -> None:
        assert name not in out, name
        if isinstance(value, m.Message):
            assert value.to_post() == {"text": value.text, "blocks": value.blocks}
            value = value.to_ack()
        out[name] = value

    valid = {
        "1h": NOW + timedelta(hours=1),
        "expired": NOW - timedelta(minutes=5),
        "tomorrow": NOW + timedelta(hours=25),
    }
    commands = {"default": m.DEFAULT_COMMAND, "custom": "/export", "hostile": HOSTILE}
    for key, exp in _exports():
        # The full matrix for the plain export of each state; one case per variation elsewhere.
        plain = key.endswith("/url")
        for v_key, until in valid.items() if plain else [("1h", valid["1h"])]:
            add(f"export/{key}/{v_key}", m.render_export(exp, now=NOW, link_valid_until=until))
            add(
                f"fresh_link/{key}/{v_key}",
                m.render_fresh_link(exp, now=NOW, link_valid_until=until),
            )
            for who in ("U123ABC", None, "<!here>") if plain else ("U123ABC",):
                for include in (True, False):
                    add(
                        f"finished_post/{key}/{v_key}/{who}/{include}",
                        m.render_finished_post(
                            exp,
                            now=NOW,
                            requester_user_id=who,
                            link_valid_until=until,
                            include_link=include,
                        ),
                    )
        add(f"export/{key}/default_validity", m.render_export(exp, now=NOW))
        add(f"export/{key}/no_link", m.render_export(exp, now=NOW, include_link=False))
        for c_key, cmd in commands.items() if plain else [("custom", "/export")]:
            add(f"export/{key}/cmd_{c_key}", m.render_export(exp, now=NOW, command=cmd))
            add(
                f"already_watching/{key}/{c_key}",
                m.render_already_watching(exp, now=NOW, command=cmd),
            )
        for w in (None, 0, 1, 3) if plain else (2,):
            add(
                f"status_card/{key}/{w}",
                m.render_status_card(
                    exp, now=NOW, watchers=w, next_check_at=NOW + timedelta(minutes=4)
                ),
            )
        add(f"status_card/{key}/no_next", m.render_status_card(exp, now=NOW))
        add(f"export_failed/{key}", m.render_export_failed(exp, now=NOW))
        add(
            f"watch_started/{key}",
            m.render_watch_started(exp, now=NOW, next_check_at=NOW + timedelta(seconds=30)),
        )
        errors = ("not_in_channel", "channel_not_found", "is_archived", "weird<x>", None)
        for err in errors if key == "pending/url" else ("not_in_channel",):
            add(f"cannot_post/{key}/{err}", m.render_cannot_post(exp, now=NOW, error=err))
        add(f"card_unwatched/{key}", m.render_card_unwatched(exp, now=NOW))
    for g_key, gid in GIDS.items():
        add(f"looking_up/{g_key}", m.render_looking_up(gid))
        for waited in (0.25, 2.999, 12.5, 300.0, float("nan"), -1.0):
            add(f"lookup_timeout/{g_key}/{waited}", m.render_lookup_timeout(gid, waited))
        add(f"export_gone/{g_key}", m.render_export_gone(gid))
        for doing in ("watch", "unwatch"):
            add(f"database_unavailable/{doing}/{g_key}", m.render_database_unavailable(doing, gid))
        for c_key, cmd in commands.items():
            for kind in ProblemKind if c_key == "custom" else [ProblemKind.FORBIDDEN]:
                add(
                    f"watch_paused/{g_key}/{kind.value}/{c_key}",
                    m.render_watch_paused(gid, kind, command=cmd),
                )
            for found in (True, False):
                add(
                    f"unwatched/{g_key}/{found}/{c_key}",
                    m.render_unwatched(gid, found=found, command=cmd),
                )
            for foreign in (True, False):
                add(
                    f"link_withheld/{g_key}/{foreign}/{c_key}",
                    m.render_link_withheld(gid, foreign_user=foreign, command=cmd),
                )
            for scope in ("user", "channel"):
                for cap in (1, 20):
                    add(
                        f"watch_cap/{g_key}/{scope}/{cap}/{c_key}",
                        m.render_watch_cap(gid, scope=scope, cap=cap, command=cmd),
                    )
    add("database_unavailable/list", m.render_database_unavailable("list"))
    add("internal_error", m.render_internal_error())
    for kind in ProblemKind:
        for gid in ("1205", None, "12`<x>"):
            add(f"problem/{kind.value}/{gid}", m.render_problem(kind, gid=gid))
    for said in (None, "  ", "Not a recognized ID: <x> & y", LONG):
        for retry in (None, 0.4, 7.0, 61.0, 900.0, float("nan")):
            add(
                f"problem/rate_limited/{said and said[:10]}/{retry}",
                m.render_problem(
                    ProblemKind.RATE_LIMITED, gid="1", asana_message=said, retry_after=retry
                ),
            )
    for c_key, cmd in commands.items():
        add(f"help/{c_key}", m.render_help(cmd))
        for problem in (None, "", "  ", "`watch` needs a gid: <x>", LONG):
            add(f"usage/{c_key}/{problem and problem[:10]}", m.render_usage(problem, command=cmd))
    # Starting an export (`new`).
    for g_key, gid in GIDS.items():
        add(f"creating/{g_key}", m.render_creating(gid))
        add(f"create_unknown/{g_key}", m.render_create_unknown(gid, command=HOSTILE))
        add(f"create_timeout/{g_key}", m.render_create_timeout(gid, 25.0))
        add(f"already_handled/{g_key}", m.render_already_handled(gid or None))
        for kind in ProblemKind:
            for said in (None, HOSTILE):
                add(
                    f"create_refused/{kind.value}/{g_key}/{said and said[:5]}",
                    m.render_create_refused(
                        kind, org_gid=gid, asana_message=said, retry_after=30.0
                    ),
                )
    for e_key, export in _exports():
        watched = m.render_watch_started(export, now=NOW, next_check_at=NOW)
        add(f"created/{e_key}", m.render_created(export, watched))
        for by in ("U123ABC", "bad id", None):
            add(
                f"running_offer/{e_key}/{by}",
                m.render_running_offer(
                    export, requested_by=by, requested_at=NOW, now=NOW, command=HOSTILE
                ),
            )
    add("no_organization", m.render_no_organization(HOSTILE))
    for admins in (
        (),
        ("U0ADMIN", "U0BOSS"),
        ("bad id", "<!here>"),
        tuple(f"U{i:04}" for i in range(30)),
    ):
        for unknown in (True, False):
            add(
                f"not_admin/{len(admins)}/{admins[:1]}/{unknown}",
                m.render_not_admin(admins, unknown=unknown),
            )
    add("database_unavailable/create", m.render_database_unavailable("create"))
    add("refused/default", m.render_refused())
    add("refused/link", m.render_refused(what="get this link"))
    for busy in (True, False):
        for retry_after in (0, 1, 12, 90):
            for per_minute in (None, 0.0, 5.0, 2.5):
                add(
                    f"slow_down/{busy}/{retry_after}/{per_minute}",
                    m.render_slow_down(busy=busy, retry_after=retry_after, per_minute=per_minute),
                )
    for n in (0, 1, 3, 12, 49, 50, 51, 120):
        for scope in ("channel", "workspace"):
            for withheld in (0, 1, 4):
                add(
                    f"watch_list/{n}/{scope}/{withheld}",
                    m.render_watch_list(
                        _rows(n), now=NOW, scope=scope, withheld=withheld, command="/x"
                    ),
                )
    add(
        "watch_list/hostile_cmd", m.render_watch_list([], now=NOW, scope="channel", command=HOSTILE)
    )
    # Recurring exports (`schedule`, `schedules`, `unschedule`).
    berlin = NOW.astimezone(ZoneInfo("Europe/Berlin"))
    for problem in (None, "`x` is not a day of the week", HOSTILE):
        add(
            f"schedule_usage/{problem and problem[:5]}",
            m.render_schedule_usage(problem, ("daily 03:30", HOSTILE), command=HOSTILE),
        )
    for when, tz in (("weekly mon 02:00", "Europe/Berlin"), (HOSTILE, HOSTILE)):
        for occurrences in ((), ((berlin, NOW),) * 3):
            add(
                f"scheduled/{when[:5]}/{len(occurrences)}",
                m.render_scheduled(
                    7,
                    when=when,
                    timezone=tz,
                    organization_gid="42",
                    occurrences=occurrences,
                    command=HOSTILE,
                ),
            )
    lines = [
        m.ScheduleLine(
            id=i,
            when=HOSTILE if i % 3 == 0 else "daily 03:30",
            timezone="UTC",
            organization_gid="42",
            channel_id="C0001" if i % 2 else "bad id",
            created_by="U0ADMIN" if i % 2 else "<!here>",
            next_at=None if i % 5 == 0 else NOW + timedelta(hours=i),
            paused_reason=HOSTILE if i % 7 == 0 else None,
        )
        for i in range(1, 60)
    ]
    for n in (0, 1, 12, 59):
        for scope in ("channel", "workspace"):
            for withheld in (0, 1, 4):
                add(
                    f"schedule_list/{n}/{scope}/{withheld}",
                    m.render_schedule_list(
                        lines[:n], now=NOW, scope=scope, withheld=withheld, command=HOSTILE
                    ),
                )
    for outcome in ("removed", "not_found", "not_allowed"):
        add(f"unscheduled/{outcome}", m.render_unscheduled(3, outcome))
    add("database_unavailable/schedule", m.render_database_unavailable("schedule"))
    for late, coalesced, resumed in ((False, 1, False), (True, 1, False), (True, 12, True)):
        add(
            f"schedule_started/{late}/{coalesced}/{resumed}",
            m.render_schedule_started(
                7,
                "12`<x>",
                occurrence_at=NOW - timedelta(minutes=90),
                now=NOW,
                late=late,
                coalesced=coalesced,
                resumed=resumed,
            ),
        )
    for kind in ProblemKind:
        for gave_up in (None, 3600.0):
            add(
                f"schedule_failed/{kind.value}/{gave_up}",
                m.render_schedule_failed(
                    7, kind, occurrence_at=NOW, organization_gid=HOSTILE, gave_up_after=gave_up
                ),
            )
        add(
            f"schedule_paused/{kind.value}",
            m.render_schedule_paused(7, kind, organization_gid="42", command=HOSTILE),
        )
    add("schedule_unknown", m.render_schedule_unknown(7, occurrence_at=NOW))
    # Archiving: progress on the card, where it landed, a failure.
    for done, total in ((0, None), (0, 3_400_000_000), (1_234_567_890, 3_400_000_000), (999, 999)):
        add(f"progress/{done}/{total}", m.progress_text(done, total))
    for size in (0, 999, 1_000, 1_234_567, 10**13, 10**18):
        add(f"size/{size}", m.format_size(size))
    for key, exp in list(_exports())[:2]:
        add(
            f"card_archiving/{key}",
            m.render_card_archiving(exp, now=NOW, watchers=2, done=10**9, total=3 * 10**9),
        )
    for location in ("s3://bucket/prefix/1/2026-11-28-1.json.gz", HOSTILE, LONG):
        exp = next(iter(_exports()))[1]
        add(
            f"card_archived/{location[:10]}",
            m.render_card_archived(exp, now=NOW, watchers=1, location=location),
        )
        add(
            f"archived/{location[:10]}",
            m.render_archived("42", location=location, size=3_400_000_000, sha256="ab" * 32),
        )
    for reason in ("the MD5 does not match the server's ETag; gave up after 5 attempts", HOSTILE):
        add(f"archive_failed/{reason[:10]}", m.render_archive_failed("42", reason=reason))
    # The text helpers that are part of the public face.
    for s in ("", "plain", HOSTILE, LONG):
        add(f"escape/{s[:10]}", m.escape_mrkdwn(s))
        add(f"truncate/{s[:10]}", m.truncate(s, 20))
        for label in ("Download", HOSTILE, ""):
            add(f"safe_link/{s[:10]}/{label[:5]}", m.safe_link(f"https://x.example/{s}", label))
        add(f"sanitize/{s[:10]}", m.sanitize_url(f"https://x.example/?q={s}"))
    for url in (
        "ftp://x.example/",
        "https://",
        "https://x.example:99999/",
        "https://[::1/",
        "https://[::1]:8080/a b",
        "https://us er:pw@bücher.example:8080/ü",
        42,
    ):
        add(f"sanitize/{url}", m.sanitize_url(url))  # type: ignore[arg-type]
        add(f"safe_link/{url}", m.safe_link(url, "x"))  # type: ignore[arg-type]
    for ident in ("U123ABC", "W0RKER", "C0123", "G9ABC", "u123", "<!here>", None, ""):
        add(f"user_mention/{ident}", m.user_mention(ident))
        add(f"channel_mention/{ident}", m.channel_mention(ident))
    for seconds in (0, 29, 91, 3599, 3600, 3661, 86400, 90061, -7200, float("inf")):
        add(f"duration/{seconds}", m.format_duration(seconds))
        when = NOW - timedelta(seconds=seconds) if seconds != float("inf") else NOW
        add(f"relative/{seconds}", m.format_relative(when, NOW))
        add(f"timestamp/{seconds}", m.format_timestamp(when.replace(tzinfo=None), NOW))
    add("absolute", m.format_absolute(NOW))
    return out


def canonical(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def digests(data: dict[str, Any]) -> dict[str, str]:
    """Case name -> a short hash of its rendering: small enough to keep in the repository."""
    return {
        name: hashlib.sha256(canonical(value).encode()).hexdigest()[:16]
        for name, value in data.items()
    }


if __name__ == "__main__":
    # `--full FILE` writes the renderings themselves, to diff two revisions by eye.
    if len(sys.argv) == 3 and sys.argv[1] == "--full":
        Path(sys.argv[2]).write_text(
            json.dumps(renderings(), ensure_ascii=False, indent=1, sort_keys=True) + "\n"
        )
        print(f"wrote {sys.argv[2]}")
    else:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(digests(renderings()), indent=0, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN}")
