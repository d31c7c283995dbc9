"""The HTTP endpoint under garbage, forgery and misuse: a 4xx (never a 5xx), and nothing happens.

"Nothing happens" is checked where it would show: no request reached the fake Asana, no Web API
call or response_url post reached the fake Slack, no row changed in the bot's database, and the
process is still healthy. One real bot process (HTTP mode, `MAX_BODY_BYTES` set small) serves the
module. Requests a processed command would act on name an export the fake Asana knows, so a
request that wrongly got through would leave a trace.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.demo.fake_asana import FakeAsana
from bot.demo.fake_slack import FakeSlack
from bot.demo.signing import (
    block_actions_form,
    form_body,
    interactive_form,
    sign,
    slash_command_form,
)
from bot.testing import bot_environment
from bot.testing.process import SIGNING_SECRET, BotProcess
from tests.conftest import ASANA_TOKEN

MAX_BODY = 20_000
#: A finished export: a lookup or a click that got through would fetch it (and answer with it).
GID = "1200000000000042"
#: Unknown to the fake Asana (404): used where a request is known to get through today, so it
#: leaves only a GET behind and no watch that would poll in the background.
UNKNOWN_GID = "1200000000000404"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


# --------------------------------------------------------------------------- the one bot


@dataclass
class Endpoint:
    bot: BotProcess
    asana: FakeAsana
    slack: FakeSlack
    db: Path

    @property
    def url(self) -> str:
        return self.bot.events_url

    def post(
        self,
        body: bytes,
        headers: list[tuple[str, str]] | dict[str, str] | None = None,
        *,
        path: str = "/slack/events",
        method: str = "POST",
    ) -> httpx.Response:
        url = f"http://127.0.0.1:{self.bot.port}{path}"
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            return client.request(method, url, content=body, headers=headers)

    def command_body(self, text: str = GID, **fields: Any) -> bytes:
        return form_body(
            slash_command_form(text=text, response_url=self.slack.new_response_url(), **fields)
        )

    def click_body(self, value: str = GID) -> bytes:
        return form_body(
            block_actions_form(
                action_id="fresh_link", value=value, response_url=self.slack.new_response_url()
            )
        )


def signed(
    body: bytes,
    content_type: str | None = FORM,
    *,
    timestamp: int | str | None = None,
    secret: str = SIGNING_SECRET,
) -> list[tuple[str, str]]:
    """Headers Slack would send for `body` (a list, so tests can drop or repeat one)."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    headers = [("X-Slack-Request-Timestamp", ts), ("X-Slack-Signature", sign(body, secret, ts))]
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    return headers


def unsigned(content_type: str | None = FORM) -> list[tuple[str, str]]:
    return [("Content-Type", content_type)] if content_type is not None else []


def stored_rows(db: Path) -> dict[str, int]:
    """Rows per table of the bot's SQLite database (empty before the bot creates it)."""
    if not db.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'"
                " AND name NOT LIKE 'sqlite_%' AND name != 'alembic_version'"
            )
        ]
        return {
            # names come from sqlite_master, not from input
            name: conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0]
            for name in names
        }


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    workdir = tmp_path_factory.mktemp("http-endpoint")
    db = workdir / "bot.db"
    with FakeAsana(token=ASANA_TOKEN) as asana, FakeSlack() as slack:
        asana.set_export(
            GID,
            "finished",
            organization_name="Acme",
            download_url="https://exports.example.test/a.json.gz?X-Amz-Signature=canary",
        )
        env = bot_environment(
            asana,
            slack,
            f"sqlite:///{db}",
            ASANA_MAX_RETRY_SECONDS="2",
            MAX_BODY_BYTES=str(MAX_BODY),
        )
        bot = BotProcess(workdir, env).start()
        try:
            yield Endpoint(bot, asana, slack, db)
        finally:
            bot.stop()


@dataclass
class Baseline:
    rows: dict[str, int]
    log_at: int


@pytest.fixture
def quiet(endpoint: Endpoint) -> Baseline:
    """Forget what the fakes saw so far; remember the database and where the log ends."""
    endpoint.asana.clear_requests()
    endpoint.slack.clear()
    log_at = endpoint.bot.log_path.stat().st_size if endpoint.bot.log_path.exists() else 0
    return Baseline(stored_rows(endpoint.db), log_at)


def assert_nothing_happened(endpoint: Endpoint, baseline: Baseline, settle: float = 0.0) -> None:
    """No Asana request, no Slack call or response, no stored row; the bot is alive."""
    if settle:
        time.sleep(settle)  # a click is acked first and acted on right after
    assert endpoint.asana.requests == [], "a refused request reached Asana"
    calls = [c.method for c in endpoint.slack.calls if c.method != "auth.test"]
    assert calls == [], f"a refused request made Slack calls: {calls}"
    assert endpoint.slack.responses() == [], "a refused request was answered via response_url"
    assert stored_rows(endpoint.db) == baseline.rows, "a refused request changed the database"
    assert_alive(endpoint)


def assert_alive(endpoint: Endpoint) -> None:
    proc = endpoint.bot.proc
    assert proc is not None and proc.poll() is None, "the bot process died"
    assert httpx.get(endpoint.bot.health_url, timeout=2.0).status_code == 200


def assert_refused(response: httpx.Response, *allowed: int) -> None:
    assert response.status_code < 500, f"5xx: {response.status_code} {response.text}"
    if allowed:
        assert response.status_code in allowed, (response.status_code, response.text)
    else:
        assert 400 <= response.status_code < 500, (response.status_code, response.text)


def new_log(endpoint: Endpoint, baseline: Baseline) -> str:
    return endpoint.bot.log_path.read_bytes()[baseline.log_at :].decode("utf-8", "replace")


# --------------------------------------------------------------------------- garbage bodies


def _json_command() -> dict[str, str]:
    return slash_command_form(text=UNKNOWN_GID, response_url="http://127.0.0.1:9/response/x")


#: (id, body, content type)
GARBAGE: list[tuple[str, bytes, str | None]] = [
    ("random-bytes", bytes(range(256)) * 4, FORM),
    ("invalid-utf8", b"command=%2Fasana-export&text=\xff\xfe\xfd", FORM),
    ("empty", b"", FORM),
    ("not-a-form", b"hello world, this is not a form", FORM),
    ("truncated-form", form_body(_json_command())[:60], FORM),
    ("form-as-json", form_body(_json_command()), JSON),
    ("json-broken", b'{"type": "event_callback", "event": ', JSON),
    ("json-array", b"[1, 2, 3]", JSON),
    ("json-string", b'"event_callback"', JSON),
    ("payload-broken-json", b"payload=%7Bnot+json", FORM),
    ("payload-array", form_body({"payload": "[1,2]"}), FORM),
    ("payload-null", form_body({"payload": "null"}), FORM),
    ("payload-unknown-type", form_body(interactive_form({"type": "no_such_type"})), FORM),
    ("payload-no-type", form_body(interactive_form({"actions": []})), FORM),
    (
        "payload-view-submission",
        form_body(interactive_form({"type": "view_submission", "view": {"id": "V1"}})),
        FORM,
    ),
    (
        "unhandled-event",
        json.dumps(
            {
                "type": "event_callback",
                "team_id": "T0001",
                "api_app_id": "A0001",
                "event": {"type": "reaction_added", "user": "U0001", "reaction": "tada"},
                "event_id": "Ev1",
                "event_time": 1,
            }
        ).encode(),
        JSON,
    ),
    ("other-command", form_body({**_json_command(), "command": "/not-ours"}), FORM),
    ("xml", b"<?xml version='1.0'?><command>/asana-export</command>", "application/xml"),
    ("json-command-as-form", json.dumps(_json_command()).encode(), FORM),
    ("json-command-as-json", json.dumps(_json_command()).encode(), JSON),
]


def _garbage_cases() -> list[Any]:
    cases = []
    for name, body, content_type in GARBAGE:
        for how in ("signed", "unsigned"):
            cases.append(pytest.param(body, content_type, how, id=f"{name}-{how}"))
    return cases


@pytest.mark.parametrize(("body", "content_type", "how"), _garbage_cases())
def test_garbage_body_is_refused_and_does_nothing(
    endpoint: Endpoint, quiet: Baseline, body: bytes, content_type: str | None, how: str
) -> None:
    headers = signed(body, content_type) if how == "signed" else unsigned(content_type)
    response = endpoint.post(body, headers)
    assert_refused(response)
    assert_nothing_happened(endpoint, quiet)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=3000),
    content_type=st.sampled_from([FORM, JSON, "text/plain", None]),
    sign_it=st.booleans(),
)
def test_random_bytes_never_get_a_5xx(
    endpoint: Endpoint, body: bytes, content_type: str | None, sign_it: bool
) -> None:
    endpoint.asana.clear_requests()
    headers = signed(body, content_type) if sign_it else unsigned(content_type)
    response = endpoint.post(body, headers)
    assert_refused(response)
    assert endpoint.asana.requests == []


def test_url_verification_challenge_is_answered_only_when_signed(
    endpoint: Endpoint, quiet: Baseline
) -> None:
    challenge = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    body = json.dumps(
        {"token": "Jhj5dZrVaK7ZwHHjRyZWjbDl", "challenge": challenge, "type": "url_verification"}
    ).encode()
    response = endpoint.post(body, signed(body, JSON))
    assert response.status_code == 200, response.text
    assert response.json() == {"challenge": challenge}

    stale = int(time.time()) - 6 * 60
    for headers in (unsigned(JSON), signed(body, JSON, timestamp=stale)):
        refused = endpoint.post(body, headers)
        assert refused.status_code == 401, refused.text
        assert challenge not in refused.text
    assert_nothing_happened(endpoint, quiet)


@pytest.mark.parametrize(
    "content_type",
    [
        pytest.param(JSON, id="json"),
        *[
            pytest.param(ct, id=name)
            for name, ct in [
                ("text-plain", "text/plain"),
                ("multipart", "multipart/form-data; boundary=xyz"),
                ("xml", "application/xml"),
                ("octet-stream", "application/octet-stream"),
                ("none", None),
            ]
        ],
    ],
)
def test_signed_command_with_wrong_content_type_is_refused(
    endpoint: Endpoint, quiet: Baseline, content_type: str | None
) -> None:
    body = endpoint.command_body(UNKNOWN_GID)
    response = endpoint.post(body, signed(body, content_type))
    assert_refused(response)
    assert_nothing_happened(endpoint, quiet)


def test_form_with_a_charset_is_still_served(endpoint: Endpoint, quiet: Baseline) -> None:
    """The control for the content-type checks: Slack's own form, with a charset, gets through."""
    body = endpoint.command_body(GID)
    response = endpoint.post(body, signed(body, f"{FORM}; charset=utf-8"))
    assert response.status_code == 200, response.text
    assert "Acme" in response.text
    assert [r.gid for r in endpoint.asana.requests] == [GID]


# --------------------------------------------------------------------------- size, method, path


@pytest.mark.parametrize("how", ["signed", "unsigned", "chunked"])
def test_body_over_max_body_bytes_is_413(endpoint: Endpoint, quiet: Baseline, how: str) -> None:
    body = endpoint.command_body("9" * (MAX_BODY + 1))
    assert len(body) > MAX_BODY
    if how == "chunked":  # no Content-Length: the limit must hold while reading, too

        def pieces() -> Iterator[bytes]:
            for start in range(0, len(body), 4096):
                yield body[start : start + 4096]

        with httpx.Client(timeout=10.0, trust_env=False) as client:
            response = client.post(endpoint.url, content=pieces(), headers=signed(body))
    else:
        headers = signed(body) if how == "signed" else unsigned()
        response = endpoint.post(body, headers)
    assert response.status_code == 413, response.text
    assert_nothing_happened(endpoint, quiet)


def test_body_just_under_the_limit_is_served(endpoint: Endpoint, quiet: Baseline) -> None:
    """The control for 413: a long but allowed body reaches the command (which rejects the text)."""
    body = endpoint.command_body("x" * (MAX_BODY - 1000))
    assert MAX_BODY - 1000 < len(body) <= MAX_BODY
    response = endpoint.post(body, signed(body))
    assert response.status_code == 200, response.text
    assert response.json()["response_type"] == "ephemeral"
    assert "too long" in response.json()["text"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_on_the_endpoint_are_405(
    endpoint: Endpoint, quiet: Baseline, method: str
) -> None:
    body = endpoint.command_body() if method != "GET" else b""
    response = endpoint.post(body, signed(body), method=method)
    assert response.status_code == 405, response.text
    assert_nothing_happened(endpoint, quiet)


@pytest.mark.parametrize(
    "path", ["/", "/slack/event", "/slack/events/x", "/slack/commands", "/SLACK/EVENTS", "/admin"]
)
def test_unknown_paths_are_404_even_when_signed(
    endpoint: Endpoint, quiet: Baseline, path: str
) -> None:
    body = endpoint.command_body()
    response = endpoint.post(body, signed(body), path=path)
    assert response.status_code == 404, response.text
    assert_nothing_happened(endpoint, quiet)


def test_post_to_health_check_is_405(endpoint: Endpoint, quiet: Baseline) -> None:
    body = endpoint.command_body()
    response = endpoint.post(body, signed(body), path="/healthz")
    assert response.status_code == 405, response.text
    assert_nothing_happened(endpoint, quiet)


def test_body_cut_short_by_the_client_does_nothing(endpoint: Endpoint, quiet: Baseline) -> None:
    """Content-Length promises more than arrives and the client hangs up: no answer, no harm."""
    body = endpoint.command_body()
    head = ["POST /slack/events HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in signed(body)]
    with socket.create_connection(("127.0.0.1", endpoint.bot.port), timeout=5) as conn:
        conn.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body[: len(body) // 2])
        conn.shutdown(socket.SHUT_WR)
        answer = conn.recv(4096)
    assert not answer.startswith(b"HTTP/1.1 5"), answer
    assert_nothing_happened(endpoint, quiet, settle=0.2)


def test_malformed_http_does_not_hurt(endpoint: Endpoint, quiet: Baseline) -> None:
    with socket.create_connection(("127.0.0.1", endpoint.bot.port), timeout=5) as conn:
        conn.sendall(b"NOT HTTP AT ALL\r\n\x00\xff\r\n\r\n")
        answer = conn.recv(4096)
    assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(b"\r\n")[0], answer
    assert_nothing_happened(endpoint, quiet)


# --------------------------------------------------------------------------- signatures


def _forged(kind: str, forgery: str, endpoint: Endpoint) -> tuple[bytes, list[tuple[str, str]]]:
    body = endpoint.command_body() if kind == "command" else endpoint.click_body()
    now = int(time.time())
    match forgery:
        case "unsigned":
            return body, unsigned()
        case "empty-signature":
            return body, [
                ("X-Slack-Request-Timestamp", str(now)),
                ("X-Slack-Signature", ""),
                ("Content-Type", FORM),
            ]
        case "wrong-secret":
            return body, signed(body, secret="not-the-signing-secret")
        case "tampered":
            other = body.replace(b"general", b"generaL")
            assert other != body
            return body, [*signed(other, None, timestamp=now), ("Content-Type", FORM)]
        case "stale":
            return body, signed(body, timestamp=now - 6 * 60)
        case "future":
            return body, signed(body, timestamp=now + 6 * 60)
        case "other-version":
            good = sign(body, SIGNING_SECRET, now)
            return body, [
                ("X-Slack-Request-Timestamp", str(now)),
                ("X-Slack-Signature", "v1=" + good.removeprefix("v0=")),
                ("Content-Type", FORM),
            ]
        case "signature-of-other-timestamp":
            return body, [
                ("X-Slack-Request-Timestamp", str(now)),
                ("X-Slack-Signature", sign(body, SIGNING_SECRET, now - 1)),
                ("Content-Type", FORM),
            ]
    raise AssertionError(forgery)


FORGERIES = [
    "unsigned",
    "empty-signature",
    "wrong-secret",
    "tampered",
    "stale",
    "future",
    "other-version",
    "signature-of-other-timestamp",
]


@pytest.mark.parametrize("kind", ["command", "click"])
@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_requests_are_401_and_do_nothing(
    endpoint: Endpoint, quiet: Baseline, kind: str, forgery: str
) -> None:
    body, headers = _forged(kind, forgery, endpoint)
    response = endpoint.post(body, headers)
    assert response.status_code == 401, response.text
    assert_nothing_happened(endpoint, quiet, settle=0.15 if kind == "click" else 0.0)


@pytest.mark.parametrize("kind", ["command", "click"])
def test_genuine_requests_do_get_through(endpoint: Endpoint, quiet: Baseline, kind: str) -> None:
    """The control for the forgeries: the same requests, correctly signed, reach Asana."""
    body = endpoint.command_body() if kind == "command" else endpoint.click_body()
    response = endpoint.post(body, signed(body))
    assert response.status_code == 200, response.text
    endpoint.slack.wait_for(lambda: endpoint.asana.requests, timeout=5)
    assert [r.gid for r in endpoint.asana.requests] == [GID]
    if kind == "click":  # the fresh link is shown privately, via the click's response_url
        (answer,) = endpoint.slack.wait_for(endpoint.slack.responses, timeout=5)
        assert answer.body["response_type"] == "ephemeral"


def _header_case(name: str, endpoint: Endpoint) -> tuple[bytes, list[tuple[str, str]]]:
    body = endpoint.command_body(UNKNOWN_GID)
    now = int(time.time())
    good = sign(body, SIGNING_SECRET, now)
    ts = ("X-Slack-Request-Timestamp", str(now))
    sig = ("X-Slack-Signature", good)
    ctype = ("Content-Type", FORM)

    def odd_timestamp(value: str) -> list[tuple[str, str]]:
        return [
            ("X-Slack-Request-Timestamp", value),
            ("X-Slack-Signature", sign(body, SIGNING_SECRET, value)),
            ctype,
        ]

    cases: dict[str, list[tuple[str, str]]] = {
        "no-signature": [ts, ctype],
        "no-timestamp": [sig, ctype],
        "neither": [ctype],
        "timestamp-empty": [("X-Slack-Request-Timestamp", ""), sig, ctype],
        "timestamp-words": odd_timestamp("yesterday"),
        "timestamp-float": odd_timestamp(f"{now}.5"),
        "timestamp-exponent": odd_timestamp("1.7e9"),
        "timestamp-negative": odd_timestamp("-1"),
        "timestamp-5000-digits": odd_timestamp("9" * 5000),
        "signature-twice-bad-first": [ts, ("X-Slack-Signature", "v0=00"), sig, ctype],
        "signature-twice-good-first": [ts, sig, ("X-Slack-Signature", "v0=00"), ctype],
        "timestamp-twice-stale-first": [
            ("X-Slack-Request-Timestamp", str(now - 600)),
            ts,
            sig,
            ctype,
        ],
        "timestamp-twice-good-first": [
            ts,
            ("X-Slack-Request-Timestamp", str(now - 600)),
            sig,
            ctype,
        ],
    }
    return body, cases[name]


@pytest.mark.parametrize(
    "case",
    [
        "no-signature",
        "no-timestamp",
        "neither",
        "timestamp-empty",
        "timestamp-words",
        "timestamp-float",
        "timestamp-exponent",
        "timestamp-negative",
        "timestamp-5000-digits",
        "signature-twice-bad-first",
        "signature-twice-good-first",
        "timestamp-twice-stale-first",
        "timestamp-twice-good-first",
    ],
)
def test_odd_signature_headers_are_refused(endpoint: Endpoint, quiet: Baseline, case: str) -> None:
    body, headers = _header_case(case, endpoint)
    response = endpoint.post(body, headers)
    assert_refused(response, 400, 401)
    assert_nothing_happened(endpoint, quiet)


@pytest.mark.parametrize("case", ["timestamp-words", "timestamp-5000-digits"])
def test_odd_timestamp_is_refused_without_a_traceback(
    endpoint: Endpoint, quiet: Baseline, case: str
) -> None:
    body, headers = _header_case(case, endpoint)
    response = endpoint.post(body, headers)
    assert response.status_code == 401, response.text
    logged = new_log(endpoint, quiet)
    assert "Traceback" not in logged, logged[-3000:]
