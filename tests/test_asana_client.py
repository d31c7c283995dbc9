"""AsanaClient against a real fake Asana on 127.0.0.1, plus the pure retry rules it follows."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.asana import (
    OPT_FIELDS,
    USER_AGENT,
    USER_FIELDS,
    AsanaBadRequest,
    AsanaClient,
    AsanaConnectionError,
    AsanaError,
    AsanaForbidden,
    AsanaMalformedResponse,
    AsanaMissingData,
    AsanaNeedsPerson,
    AsanaNotFound,
    AsanaPaymentRequired,
    AsanaRateLimited,
    AsanaServerError,
    AsanaTimeout,
    AsanaTransientError,
    AsanaUnauthorized,
    AsanaWrongExport,
    error_from_response,
    parse_datetime,
    parse_export,
    parse_retry_after,
    scrub,
)
from bot.backoff import RetryPolicy, attempt_timeout, backoff_delay, fits_budget, next_wait
from bot.demo.fake_asana import FakeAsana
from bot.models import Export, ExportState, ProblemKind

# Recognisable secrets: if either shows up anywhere a person could read, the test fails.
CANARY_TOKEN = "2/1205550000000001/1205559999999999:CANARYc4f3b4b3tok3n"
CANARY_URL = (
    "https://canary-bucket.s3.us-east-1.amazonaws.com/export.json.gz"
    "?X-Amz-Credential=CANARYCRED&X-Amz-Signature=CANARYs1gn4tur3"
)
CANARIES = (CANARY_TOKEN, CANARY_URL, "CANARYs1gn4tur3", "CANARYc4f3b4b3tok3n")
ORG = "1100000000000042"

MakeClient = Callable[..., AsanaClient]


def assert_clean(exc: BaseException) -> None:
    """Neither str, repr, attributes nor the printed traceback of an error carry a secret."""
    texts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    texts += [str(getattr(exc, name, "")) for name in ("message", "phrase")]
    for text in texts:
        for canary in CANARIES:
            assert canary not in text, f"secret leaked into {type(exc).__name__}: {text!r}"


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test here runs with all loggers at DEBUG; no record may carry a secret."""
    caplog.set_level(logging.DEBUG)
    yield
    handler = logging.Formatter()
    for record in caplog.records:
        text = record.getMessage()
        if record.exc_info:
            text += handler.formatException(record.exc_info)
        for canary in CANARIES:
            assert canary not in text, f"secret leaked into log {record.name}: {text!r}"


@pytest.fixture
def fake() -> Iterator[FakeAsana]:
    with FakeAsana(token=CANARY_TOKEN) as server:
        server.set_organization(ORG, "Acme & Co")
        yield server


@pytest.fixture
async def make_client(fake: FakeAsana) -> AsyncIterator[MakeClient]:
    """Clients on the fake with fast defaults (no jitter waits); all closed at teardown."""
    clients: list[AsanaClient] = []

    def make(**kwargs: Any) -> AsanaClient:
        options: dict[str, Any] = {"timeout": 2.0, "max_retry_time": 5.0, "rng": lambda: 0.0}
        options.update(kwargs)
        token = options.pop("token", CANARY_TOKEN)
        base_url = options.pop("base_url", fake.base_url)
        client = AsanaClient(token, base_url, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def raises(cls: type[AsanaError], awaitable: Awaitable[Any]) -> AsanaError:
    """Await, expect exactly `cls` (not a subclass or parent), check it is clean, return it."""
    with pytest.raises(AsanaError) as info:
        await awaitable
    assert type(info.value) is cls, f"expected {cls.__name__}, got {info.value!r}"
    assert_clean(info.value)
    return info.value


# ---------------------------------------------------------------------- fake time


class FakeTime:
    """A clock and a sleep that advances it, so budgets are tested exactly and instantly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class SteppedTime:
    """A clock that moves only when the test says, and sleeps that end when it passes them."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.asked: list[float] = []
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._began = asyncio.Condition()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.asked.append(seconds)
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sleepers.append((self.now + seconds, woken))
        async with self._began:
            self._began.notify_all()
        await woken

    async def until_sleeping(self, count: int) -> None:
        """Return once `count` sleeps have begun (a hang fails after 5 s)."""
        async with asyncio.timeout(5.0), self._began:
            await self._began.wait_for(lambda: len(self.sleepers) >= count)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for deadline, woken in self.sleepers:
            if deadline <= self.now and not woken.done():
                woken.set_result(None)


# ------------------------------------------------------------------------------- happy paths


@pytest.mark.parametrize("state", ["pending", "started", "finished", "error"])
async def test_each_state_parses(fake: FakeAsana, make_client: MakeClient, state: str) -> None:
    fake.set_export("1001", state, organization_gid=ORG, created_at="2026-01-02T03:04:05.678Z")
    export = await make_client().get_export("1001")
    assert export.gid == "1001"
    assert export.state is ExportState(state)
    assert export.raw_state == state
    assert export.organization_gid == ORG
    assert export.organization_name == "Acme & Co"
    assert export.created_at == datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    if state == "finished":
        assert export.download_url == fake.download_urls("1001")[-1]
        assert "X-Amz-Signature=" in export.download_url
    else:
        assert export.download_url is None


async def test_finished_link_is_fresh_each_time_and_not_in_repr(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    fake.set_export("1", "finished", download_url=CANARY_URL)
    client = make_client()
    export = await client.get_export("1")
    assert export.download_url == CANARY_URL
    assert CANARY_URL not in repr(export) and "CANARY" not in repr(client)
    fake.set_export("2", "finished")
    first, second = await client.get_export("2"), await client.get_export("2")
    assert first.download_url != second.download_url


async def test_request_shape_opt_fields_user_agent_auth(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    fake.set_export("1", "pending")
    await make_client().get_export("1")
    (request,) = fake.requests
    assert request.method == "GET"
    assert request.path == "/api/1.0/organization_exports/1"
    assert request.query == {"opt_fields": OPT_FIELDS}
    assert set(OPT_FIELDS.split(",")) == {
        "state",
        "organization",
        "organization.name",
        "created_at",
        "download_url",
    }
    assert request.headers["authorization"] == f"Bearer {CANARY_TOKEN}"
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert USER_AGENT.startswith("asana-export-bot/") and USER_AGENT.endswith("(+python httpx)")
    await make_client(user_agent="custom/1").get_export("1")
    assert fake.requests[-1].headers["user-agent"] == "custom/1"


async def test_get_me_names_the_tokens_user(fake: FakeAsana, make_client: MakeClient) -> None:
    """GET /users/me (for `doctor`): its own opt_fields, and a 401 typed like any other call."""
    fake.set_me(name="Exports <bot>", email="svc@example.com")
    user = await make_client().get_me()
    assert (user.gid, user.name, user.email) == (
        "1100000000000099",
        "Exports <bot>",
        "svc@example.com",
    )
    (request,) = fake.requests
    assert request.path == "/api/1.0/users/me" and request.query == {"opt_fields": USER_FIELDS}
    error = await raises(AsanaUnauthorized, make_client(token="wrong").get_me())
    assert error.status == 401
    fake.fail(missing_data=True, times=1)
    await raises(AsanaMissingData, make_client().get_me())


async def test_unknown_state_and_extra_fields_are_tolerated(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    fake.set_export("1", "Archived", extra={"size": 5, "tags": [{"x": None}]})
    export = await make_client().get_export("1")
    assert export.state is ExportState.UNKNOWN
    assert export.raw_state == "Archived"
    fake.set_export("2", " FINISHED ")
    assert (await make_client().get_export("2")).state is ExportState.FINISHED


async def test_missing_and_bad_fields_become_none(fake: FakeAsana, make_client: MakeClient) -> None:
    fake.set_export("1", "started", organization_gid=None, created_at="not a date")
    export = await make_client().get_export("1")
    assert (export.organization_gid, export.organization_name, export.created_at) == (
        None,
        None,
        None,
    )
    fake.fail(200, body={"data": {"gid": "1", "resource_type": "organization_export"}})
    bare = await make_client().get_export("1")
    assert bare == Export(gid="1", state=ExportState.UNKNOWN)


async def test_keep_alive_and_request_count(fake: FakeAsana, make_client: MakeClient) -> None:
    fake.set_export("1", "pending")
    client = make_client()
    for _ in range(3):
        await client.get_export("1")
    assert len(fake.requests) == 3
    assert len({r.client_port for r in fake.requests}) == 1


async def test_concurrent_lookups_share_the_pool(fake: FakeAsana, make_client: MakeClient) -> None:
    fake.set_export("1", "pending")
    fake.set_delay(0.3)
    client = make_client()
    start = time.monotonic()
    results = await asyncio.gather(*(client.get_export("1") for _ in range(40)))
    assert all(r.state is ExportState.PENDING for r in results)
    assert time.monotonic() - start < 2.0


async def test_async_context_manager_closes(fake: FakeAsana) -> None:
    fake.set_export("1", "pending")
    async with AsanaClient(CANARY_TOKEN, fake.base_url) as client:
        assert (await client.get_export("1")).gid == "1"
    with pytest.raises(RuntimeError):
        await client.get_export("1")


# ---------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "cls", "kind"),
    [
        (400, AsanaBadRequest, ProblemKind.BAD_REQUEST),
        (401, AsanaUnauthorized, ProblemKind.UNAUTHORIZED),
        (402, AsanaPaymentRequired, ProblemKind.PAYMENT_REQUIRED),
        (403, AsanaForbidden, ProblemKind.FORBIDDEN),
        (404, AsanaNotFound, ProblemKind.NOT_FOUND),
    ],
)
async def test_client_errors_are_typed_and_not_retried(
    fake: FakeAsana,
    make_client: MakeClient,
    status: int,
    cls: type[AsanaError],
    kind: ProblemKind,
) -> None:
    fake.set_export("1", "pending")
    fake.fail(status, times=5, phrase="4 calm owls ponder gently")
    error = await raises(cls, make_client().get_export("1"))
    assert error.kind is kind and not error.kind.is_transient
    assert error.status == status
    assert error.message and error.message in str(error)
    assert error.phrase == "4 calm owls ponder gently"
    assert error.gid == "1"
    assert len(fake.requests) == 1


async def test_real_404_and_401_carry_asanas_message(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    error = await raises(AsanaNotFound, make_client().get_export("999"))
    assert error.message == "organization_export: Not a recognized ID: 999"
    fake.set_export("1", "pending")
    error = await raises(AsanaUnauthorized, make_client(token="wrong").get_export("1"))
    assert error.message == "Not Authorized"


async def test_unknown_4xx_is_a_generic_bad_request(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    fake.set_export("1", "pending")
    fake.fail(418, times=3)
    error = await raises(AsanaError, make_client().get_export("1"))
    assert error.kind is ProblemKind.BAD_REQUEST and error.status == 418
    assert len(fake.requests) == 1


async def test_invalid_gid_is_refused_without_a_request(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    client = make_client()
    for gid in ("../users/me", "1?x=2", "", "1 2", "a/b", "1" * 100):
        await raises(AsanaBadRequest, client.get_export(gid))
    await raises(AsanaBadRequest, client.create_export("../x"))
    assert fake.requests == []


async def test_429_then_success_waits_retry_after(fake: FakeAsana, make_client: MakeClient) -> None:
    fake.set_export("1", "started")
    fake.fail(429, retry_after=3)
    fake_time = FakeTime()
    client = make_client(clock=fake_time.clock, sleep=fake_time.sleep)
    export = await client.get_export("1")
    assert export.state is ExportState.STARTED
    first, second = fake.requests
    assert (first.status, second.status) == (429, 200)
    assert fake_time.sleeps == [3.0]  # exactly Retry-After, before the second request


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retried_then_succeed(
    fake: FakeAsana, make_client: MakeClient, status: int
) -> None:
    fake.set_export("1", "finished")
    fake.fail(status, times=2)
    export = await make_client().get_export("1")
    assert export.state is ExportState.FINISHED
    assert [r.status for r in fake.requests] == [status, status, 200]


async def test_server_error_keeps_its_phrase_when_retries_run_out(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    fake.set_export("1", "pending")
    fake.fail(500, times=10, phrase="6 sad squid snuggle softly")
    error = await raises(AsanaServerError, make_client(max_attempts=3).get_export("1"))
    assert error.kind is ProblemKind.ASANA_DOWN
    assert error.phrase == "6 sad squid snuggle softly"
    assert "6 sad squid snuggle softly" in str(error)
    assert error.attempts == 3 and len(fake.requests) == 3


async def test_html_gateway_error_has_no_message(fake: FakeAsana, make_client: MakeClient) -> None:
    fake.set_export("1", "pending")
    fake.fail(502, body="<html><body>502 Bad Gateway</body></html>", times=5)
    error = await raises(AsanaServerError, make_client(max_attempts=2).get_export("1"))
    assert error.status == 502 and error.message is None


async def test_backoff_waits_with_jitter(fake: FakeAsana, make_client: MakeClient) -> None:
    """rng near 1 means the full exponential ceiling: 0.5 s then 1.0 s between attempts."""
    fake.set_export("1", "pending")
    fake.fail(503, times=2)
    fake_time = FakeTime()
    await make_client(rng=lambda: 0.999, clock=fake_time.clock, sleep=fake_time.sleep).get_export(
        "1"
    )
    assert [r.status for r in fake.requests] == [503, 503, 200]
    first, second = fake_time.sleeps
    assert 0.49 <= first < 0.9
    assert 0.99 <= second < 1.5


async def test_retry_budget_exceeded_raises_the_last_error_early(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    fake.set_export("1", "pending")
    fake.fail(503, times=10)
    fake_time = FakeTime()
    client = make_client(
        max_retry_time=1.2, rng=lambda: 0.999, clock=fake_time.clock, sleep=fake_time.sleep
    )
    start = fake_time.now
    error = await raises(AsanaServerError, client.get_export("1"))
    elapsed = fake_time.now - start
    # Waits 0.5 s, then the next 1.0 s wait would cross the 1.2 s budget: give up at once.
    assert error.attempts == 2 and len(fake.requests) == 2
    assert 0.45 <= elapsed < 1.2


async def test_retry_after_beyond_budget_raises_at_once_and_gates_the_token(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    fake.set_export("1", "pending")
    fake.set_export("2", "pending")
    fake.fail(429, retry_after=30)
    client = make_client(max_retry_time=5)
    start = time.monotonic()
    error = await raises(AsanaRateLimited, client.get_export("1"))
    assert error.retry_after == 30 and error.status == 429
    assert time.monotonic() - start < 1
    assert 29 < client.gate.remaining() <= 30
    # Another gid: refused locally, without touching the wire, with the time left.
    gated = await raises(AsanaRateLimited, client.get_export("2"))
    assert gated.status is None and not gated.request_sent
    assert gated.retry_after is not None and 28 < gated.retry_after <= 30
    await raises(AsanaRateLimited, client.create_export(ORG))
    assert len(fake.requests) == 1


async def test_rate_limit_gate_delays_another_gid(fake: FakeAsana, make_client: MakeClient) -> None:
    fake.set_export("1", "pending")
    fake.set_export("2", "started")
    fake.fail(429, gid="1", retry_after=3)
    fake_time = FakeTime()
    client = make_client(max_attempts=1, clock=fake_time.clock, sleep=fake_time.sleep)
    assert client.gate.remaining() == 0
    await raises(AsanaRateLimited, client.get_export("1"))
    assert client.gate.remaining() == 3.0
    export = await client.get_export("2")
    assert export.state is ExportState.STARTED
    limited, other = fake.requests
    assert (limited.gid, limited.status, other.gid, other.status) == ("1", 429, "2", 200)
    assert fake_time.sleeps == [3.0]  # another gid waited out the token's hold
    assert client.gate.remaining() == 0


async def test_rate_limit_gate_holds_concurrent_callers(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    """Requests started while a 429 is being waited out go after it, not in between."""
    for gid in ("1", "2", "3"):
        fake.set_export(gid, "pending")
    fake.fail(429, gid="1", retry_after=5)
    steps = SteppedTime()
    client = make_client(max_retry_time=20, clock=steps.clock, sleep=steps.sleep)
    first = asyncio.create_task(client.get_export("1"))
    await steps.until_sleeping(1)  # the 429 is in and the gate closed
    rest = asyncio.gather(client.get_export("2"), client.get_export("3"))
    await steps.until_sleeping(3)  # both wait at the gate
    assert [r.status for r in fake.requests] == [429]
    assert sorted(steps.asked) == [5.0, 5.0, 5.0]
    steps.advance(5.0)
    others = await rest
    await first
    assert [o.gid for o in others] == ["2", "3"]
    assert len(fake.requests) == 4


async def test_fake_rate_limit_window_is_respected(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    fake.set_export("1", "pending")
    fake.set_rate_limit(2)
    client = make_client(max_retry_time=5)
    await client.get_export("1")
    await client.get_export("1")
    error = await raises(AsanaRateLimited, client.get_export("1"))
    assert error.retry_after is not None and error.retry_after > 50
    assert client.gate.remaining() > 50


async def test_hang_longer_than_timeout_is_a_timeout(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    fake.set_export("1", "pending")
    fake.set_delay(30, gid="1")
    client = make_client(timeout=0.2, max_retry_time=0.5)
    start = time.monotonic()
    error = await raises(AsanaTimeout, client.get_export("1"))
    elapsed = time.monotonic() - start
    assert error.kind is ProblemKind.TIMEOUT and error.request_sent
    assert 0.2 <= elapsed < 1.5
    assert 2 <= len(fake.requests) <= 3  # retried inside the budget, each attempt shortened


async def test_slow_then_fast_succeeds(fake: FakeAsana, make_client: MakeClient) -> None:
    fake.set_export("1", "pending")
    fake.fail(200, delay=1.0, body={"data": {"gid": "1", "state": "started"}})
    export = await make_client(timeout=0.3).get_export("1")
    assert export.state is ExportState.PENDING  # the delayed answer was abandoned
    assert len(fake.requests) == 2


async def test_reset_is_a_connection_error_after_retries(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    fake.set_export("1", "pending")
    fake.fail(reset=True, times=10)
    error = await raises(AsanaConnectionError, make_client(max_attempts=3).get_export("1"))
    assert error.kind is ProblemKind.CONNECTION and error.attempts == 3
    assert [r.status for r in fake.requests] == [None, None, None]


async def test_reset_once_then_success(fake: FakeAsana, make_client: MakeClient) -> None:
    fake.set_export("1", "error")
    fake.fail(reset=True)
    assert (await make_client().get_export("1")).state is ExportState.ERROR


async def test_closed_port_is_a_connection_error(make_client: MakeClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(base_url=f"http://127.0.0.1:{port}/api/1.0", max_attempts=2)
    error = await raises(AsanaConnectionError, client.get_export("1"))
    assert not error.request_sent and error.attempts == 2
    post_error = await raises(AsanaConnectionError, client.create_export(ORG))
    assert post_error.attempts == 2  # never sent, so a POST may be tried again


@pytest.mark.parametrize(
    ("fault", "cls", "says"),
    [
        ({"malformed": True}, AsanaMalformedResponse, "not JSON"),
        ({"missing_data": True}, AsanaMissingData, "had no `data`"),
        ({"wrong_gid": "2"}, AsanaWrongExport, "answered about export 2, not 1"),
    ],
    ids=["invalid-json", "missing-data", "wrong-gid"],
)
async def test_malformed_bodies_are_not_retried_and_say_which(
    fake: FakeAsana, make_client: MakeClient, fault: dict[str, Any], cls: type, says: str
) -> None:
    """Asking again gets the same answer: one request, and the error names what was wrong."""
    fake.set_export("1", "finished", download_url=CANARY_URL)
    fake.fail(times=10, **fault)
    error = await raises(cls, make_client(max_attempts=5).get_export("1"))
    assert error.kind is ProblemKind.MALFORMED and not error.kind.is_transient
    assert len(fake.requests) == 1 and error.attempts == 1
    assert says in str(error)
    fake.clear_faults()
    assert (await make_client().get_export("1")).state is ExportState.FINISHED


@pytest.mark.parametrize("state", ["pending", "started", "error", "on_fire"])
async def test_download_url_only_for_a_finished_export(
    fake: FakeAsana, make_client: MakeClient, state: str
) -> None:
    """Asana's own examples carry a download_url on a pending export: it is dropped."""
    fake.set_export("1", state, extra={"download_url": CANARY_URL})
    assert (await make_client().get_export("1")).download_url is None
    fake.set_export("1", "finished", download_url=CANARY_URL)
    assert (await make_client().get_export("1")).download_url == CANARY_URL


async def test_secrets_in_asana_error_text_are_scrubbed(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    fake.set_export("1", "pending")
    body = {
        "errors": [
            {
                "message": f"token {CANARY_TOKEN} cannot read {CANARY_URL}\nsecond line",
                "phrase": f"x {CANARY_TOKEN}",
            }
        ]
    }
    fake.fail(400, body=body)
    error = await raises(AsanaBadRequest, make_client().get_export("1"))
    assert error.message is not None and "<redacted>" in error.message
    assert "\n" not in error.message
    assert "canary-bucket.s3.us-east-1.amazonaws.com/export.json.gz" in error.message


# -------------------------------------------------------------------------------- creating


async def test_create_export(fake: FakeAsana, make_client: MakeClient) -> None:
    export = await make_client().create_export(ORG)
    assert export.state is ExportState.PENDING
    assert export.organization_gid == ORG and export.organization_name == "Acme & Co"
    assert fake.state(export.gid) == "pending"
    (request,) = fake.requests
    assert request.method == "POST" and request.body == {"data": {"organization": ORG}}
    assert request.query == {"opt_fields": OPT_FIELDS}
    assert request.status == 201


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 503}, {"reset": True}])
async def test_create_is_not_retried_when_it_may_have_acted(
    fake: FakeAsana, make_client: MakeClient, fault: dict[str, Any]
) -> None:
    fake.fail(method="POST", times=5, **fault)
    with pytest.raises(AsanaError) as info:
        await make_client().create_export(ORG)
    assert_clean(info.value)
    assert info.value.request_sent
    assert len(fake.requests) == 1


async def test_create_timeout_is_not_retried(fake: FakeAsana, make_client: MakeClient) -> None:
    fake.fail(method="POST", delay=5, status=201, body={"data": {"gid": "9"}})
    await raises(AsanaTimeout, make_client(timeout=0.2).create_export(ORG))
    assert len(fake.requests) == 1


async def test_create_retries_429_with_retry_after_only(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    fake.fail(429, method="POST", retry_after=2)
    fake_time = FakeTime()
    export = await make_client(clock=fake_time.clock, sleep=fake_time.sleep).create_export(ORG)
    assert export.state is ExportState.PENDING
    assert [r.status for r in fake.requests] == [429, 201]
    assert fake_time.sleeps == [2.0]
    fake.clear_requests()
    fake.fail(429, method="POST")  # no Retry-After: Asana did nothing, but we do not guess
    error = await raises(AsanaRateLimited, make_client().create_export(ORG))
    assert error.retry_after is None and len(fake.requests) == 1


async def test_create_with_malformed_answer_is_not_retried(
    fake: FakeAsana, make_client: MakeClient
) -> None:
    fake.fail(method="POST", status=201, missing_data=True)
    await raises(AsanaMissingData, make_client().create_export(ORG))
    assert len(fake.requests) == 1


# ------------------------------------------------------- on a mock transport, with fake time


def mock_client(
    responses: list[httpx.Response | Exception], fake_time: FakeTime, **kwargs: Any
) -> tuple[AsanaClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses.pop(0) if len(responses) > 1 else responses[0]
        if isinstance(item, Exception):
            raise item
        return item

    options: dict[str, Any] = {"rng": lambda: 0.999999}
    options.update(kwargs)
    client = AsanaClient(
        CANARY_TOKEN,
        "https://asana.invalid/api/1.0",
        transport=httpx.MockTransport(handler),
        clock=fake_time.clock,
        sleep=fake_time.sleep,
        **options,
    )
    return client, seen


def ok(gid: str = "1", state: str = "pending") -> httpx.Response:
    return httpx.Response(200, json={"data": {"gid": gid, "state": state}})


async def test_budget_arithmetic_with_a_fake_clock() -> None:
    fake_time = FakeTime()
    client, seen = mock_client([httpx.Response(503)], fake_time, max_retry_time=3.0)
    error = await raises(AsanaServerError, client.get_export("1"))
    # 0.5 then 1.0 (elapsed 1.5); the next 2.0 would end at 3.5 > 3.0: give up.
    assert [round(s, 3) for s in fake_time.sleeps] == [0.5, 1.0]
    assert error.attempts == 3 and len(seen) == 3
    # Later attempts get only what the budget has left as their timeout.
    timeouts = [r.extensions["timeout"]["read"] for r in seen]
    assert timeouts[0] == 10.0 and all(t <= 3.0 for t in timeouts[1:])
    await client.aclose()


async def test_max_attempts_with_a_fake_clock() -> None:
    fake_time = FakeTime()
    client, seen = mock_client(
        [httpx.ConnectError("refused")], fake_time, max_attempts=4, max_retry_time=100
    )
    error = await raises(AsanaConnectionError, client.get_export("1"))
    assert error.attempts == 4 and len(seen) == 4 and len(fake_time.sleeps) == 3
    await client.aclose()


async def test_gate_with_a_fake_clock() -> None:
    fake_time = FakeTime()
    responses: list[httpx.Response | Exception] = [
        httpx.Response(429, headers={"Retry-After": "5"}),
        ok("1"),
        ok("2"),
        ok("3"),
    ]
    client, seen = mock_client(responses, fake_time, max_retry_time=20)
    await client.get_export("1")
    assert fake_time.sleeps == [5.0]
    assert client.gate.remaining() == 0
    await client.get_export("2")
    assert fake_time.sleeps == [5.0]  # the gate is open again
    # A 429 seen elsewhere on the token (a poll): it closes the shared gate, and we wait.
    client.gate.hold(3)
    await client.get_export("3")
    assert fake_time.sleeps == [5.0, 3.0]
    assert [r.url.path for r in seen][-1] == "/api/1.0/organization_exports/3"
    await client.aclose()


async def test_429_without_retry_after_still_holds_the_token() -> None:
    fake_time = FakeTime()
    client, seen = mock_client([httpx.Response(429), ok("2")], fake_time, max_attempts=1)
    error = await raises(AsanaRateLimited, client.get_export("1"))
    assert error.retry_after is None
    assert client.gate.remaining() == 1.0
    await client.get_export("2")
    assert fake_time.sleeps == [1.0] and len(seen) == 2
    await client.aclose()


async def test_retry_after_http_date_with_a_fake_clock() -> None:
    fake_time = FakeTime()
    when = datetime.now(UTC) + timedelta(seconds=4)
    date = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    responses: list[httpx.Response | Exception] = [
        httpx.Response(429, headers={"Retry-After": date}),
        ok(),
    ]
    client, _ = mock_client(responses, fake_time)
    await client.get_export("1")
    assert len(fake_time.sleeps) == 1 and 2.0 <= fake_time.sleeps[0] <= 4.0
    await client.aclose()


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("read"),
        httpx.ConnectTimeout("connect"),
        httpx.PoolTimeout("pool"),
        httpx.WriteTimeout("write"),
    ],
)
async def test_httpx_timeouts_map_to_asana_timeout(exc: Exception) -> None:
    client, seen = mock_client([exc], FakeTime(), max_attempts=2)
    error = await raises(AsanaTimeout, client.get_export("1"))
    assert len(seen) == 2
    assert error.request_sent is not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
    await client.aclose()


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError(f"refused {CANARY_TOKEN}"),
        httpx.ReadError(f"reset {CANARY_URL}"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.WriteError("broken pipe"),
    ],
)
async def test_httpx_network_errors_never_leak_their_text(exc: Exception) -> None:
    client, _ = mock_client([exc], FakeTime(), max_attempts=1)
    error = await raises(AsanaConnectionError, client.get_export("1"))
    assert type(exc).__name__ in str(error)
    assert error.__cause__ is None and error.__suppress_context__
    await client.aclose()


async def test_non_json_2xx_and_unexpected_status() -> None:
    client, _ = mock_client([httpx.Response(200, text="<html>")], FakeTime(), max_attempts=1)
    await raises(AsanaMalformedResponse, client.get_export("1"))
    client2, _ = mock_client([httpx.Response(304)], FakeTime(), max_attempts=1)
    error = await raises(AsanaMalformedResponse, client2.get_export("1"))
    assert error.status == 304
    await client.aclose()
    await client2.aclose()


# ------------------------------------------------------------------------------ pure parsing


def test_parse_datetime_variants() -> None:
    utc = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_datetime("2026-01-02T03:04:05Z") == utc
    assert parse_datetime("2026-01-02T03:04:05.000Z") == utc
    assert parse_datetime("2026-01-02T05:04:05+02:00") == utc
    assert parse_datetime("2026-01-02T03:04:05") == utc
    assert parse_datetime(" 2026-01-02T03:04:05z ") == utc
    assert parse_datetime("2026-01-02T03:04:05.147123Z") == utc.replace(microsecond=147123)
    parsed = parse_datetime("2026-01-02T05:04:05+02:00")
    assert parsed is not None and parsed.tzinfo is UTC
    for bad in ("", "yesterday", "2026-13-01T00:00:00Z", None, 12, [], "Z"):
        assert parse_datetime(bad) is None


def test_parse_export_edges() -> None:
    assert parse_export({"data": {"gid": 12, "state": "pending"}}, "12").gid == "12"
    assert parse_export({"data": {"state": "started"}}, "12").gid == "12"  # gid left out
    with pytest.raises(AsanaMalformedResponse):
        parse_export({"data": {"state": "started"}})  # after a POST the gid is needed
    with pytest.raises(AsanaMalformedResponse):
        parse_export([1, 2], "1")
    with pytest.raises(AsanaMalformedResponse):
        parse_export({"data": "x"}, "1")
    odd = parse_export(
        {
            "data": {
                "gid": "1",
                "state": 5,
                "organization": "nope",
                "download_url": "javascript:alert(1)",
                "created_at": 17,
            }
        },
        "1",
    )
    assert odd == Export(gid="1", state=ExportState.UNKNOWN)
    assert odd.raw_state is None and odd.download_url is None
    named = parse_export({"data": {"organization": {"gid": "5", "name": ""}}}, "1")
    assert (named.organization_gid, named.organization_name) == ("5", None)


def test_error_from_response_mapping() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    body = json.dumps({"errors": [{"message": "m", "phrase": "p"}]}).encode()
    cases = {
        400: AsanaBadRequest,
        401: AsanaUnauthorized,
        402: AsanaPaymentRequired,
        403: AsanaForbidden,
        404: AsanaNotFound,
        429: AsanaRateLimited,
        500: AsanaServerError,
        503: AsanaServerError,
        599: AsanaServerError,
        409: AsanaError,
        302: AsanaMalformedResponse,
    }
    for status, cls in cases.items():
        error = error_from_response(status, body, {}, now=now)
        assert type(error) is cls, status
    limited = error_from_response(429, b"", {"Retry-After": "7"}, now=now)
    assert limited.retry_after == 7 and "7.0 s" in str(limited)
    assert error_from_response(500, b"{", {}, now=now).message is None
    assert error_from_response(500, b'{"errors": "x"}', {}, now=now).message is None
    assert error_from_response(500, b'{"errors": [5]}', {}, now=now).message is None


def test_scrub() -> None:
    assert scrub(None) is None and scrub(5) is None and scrub("  ") is None
    assert scrub("a\nb\tc") == "a b c"
    assert scrub("see https://x.example/a?sig=1 now") == "see https://x.example/a?<redacted> now"
    assert scrub("tok SECRET here", ("SECRET",)) == "tok <redacted> here"
    long = scrub("x" * 1000)
    assert long is not None and len(long) == 300


def test_error_str_is_a_short_sentence() -> None:
    error = AsanaServerError(status=500, message="Server Error", phrase="6 sad squid")
    assert str(error) == "Asana had a server error (HTTP 500): Server Error [phrase: 6 sad squid]"
    assert repr(error).startswith("AsanaServerError(")
    assert str(AsanaNotFound(status=404)) == "Asana does not know this export (HTTP 404)"
    assert issubclass(AsanaTimeout, AsanaError) and AsanaTimeout.kind is ProblemKind.TIMEOUT


RAISED = [
    AsanaBadRequest,
    AsanaUnauthorized,
    AsanaPaymentRequired,
    AsanaForbidden,
    AsanaNotFound,
    AsanaRateLimited,
    AsanaServerError,
    AsanaTimeout,
    AsanaConnectionError,
    AsanaMalformedResponse,
    AsanaMissingData,
    AsanaWrongExport,
]


def test_grouping_bases_agree_with_the_kinds() -> None:
    """`except AsanaTransientError` / `except AsanaNeedsPerson` catch exactly those kinds."""
    assert {cls.kind for cls in RAISED} == set(ProblemKind)
    for cls in RAISED:
        assert issubclass(cls, AsanaTransientError) is cls.kind.is_transient, cls
        assert issubclass(cls, AsanaNeedsPerson) is cls.kind.needs_person, cls
    assert not issubclass(AsanaNeedsPerson, AsanaTransientError)
    assert issubclass(AsanaTransientError, AsanaError) and issubclass(AsanaNeedsPerson, AsanaError)


async def test_a_caller_catches_a_family(fake: FakeAsana, make_client: MakeClient) -> None:
    fake.set_export("1", "pending")
    fake.fail(503, times=5)
    with pytest.raises(AsanaTransientError) as transient:
        await make_client(max_attempts=1).get_export("1")
    assert transient.value.kind is ProblemKind.ASANA_DOWN
    fake.clear_faults()
    with pytest.raises(AsanaNeedsPerson) as person:
        await make_client(token="wrong").get_export("1")
    assert person.value.kind is ProblemKind.UNAUTHORIZED


def test_client_requires_a_token() -> None:
    with pytest.raises(ValueError):
        AsanaClient("")


# ------------------------------------------------------------------------- the retry policy


def test_backoff_is_full_jitter_doubling_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    assert backoff_delay(1, policy, lambda: 0.0) == 0.0
    assert [backoff_delay(n, policy, lambda: 1.0) for n in range(1, 8)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        8.0,
        8.0,
    ]
    assert backoff_delay(3, policy, lambda: 0.5) == 1.0
    assert backoff_delay(10_000, policy, lambda: 1.0) == 8.0


def test_next_wait_rules() -> None:
    policy = RetryPolicy(max_attempts=3, max_retry_time=10.0)
    one = lambda: 1.0  # noqa: E731
    assert next_wait(policy, attempts_made=1, elapsed=0, retry_after=None, rng=one) == 0.5
    assert next_wait(policy, attempts_made=2, elapsed=0, retry_after=None, rng=one) == 1.0
    assert next_wait(policy, attempts_made=3, elapsed=0, retry_after=None, rng=one) is None
    # Retry-After wins, even over a longer backoff, and may be zero.
    assert next_wait(policy, attempts_made=1, elapsed=0, retry_after=4.0, rng=one) == 4.0
    assert next_wait(policy, attempts_made=2, elapsed=0, retry_after=0.0, rng=one) == 0.0
    # A wait that would cross the budget is not taken.
    assert next_wait(policy, attempts_made=1, elapsed=5.0, retry_after=5.0, rng=one) is None
    assert next_wait(policy, attempts_made=1, elapsed=9.95, retry_after=None, rng=one) is None


@given(
    attempts=st.integers(min_value=0, max_value=20),
    elapsed=st.floats(min_value=0, max_value=100),
    retry_after=st.none() | st.floats(min_value=0, max_value=1000),
    draw=st.floats(min_value=0, max_value=1, exclude_max=True),
    max_attempts=st.integers(min_value=1, max_value=10),
    budget=st.floats(min_value=0, max_value=60),
)
def test_next_wait_never_crosses_budget_or_attempts(
    attempts: int,
    elapsed: float,
    retry_after: float | None,
    draw: float,
    max_attempts: int,
    budget: float,
) -> None:
    policy = RetryPolicy(max_attempts=max_attempts, max_retry_time=budget)
    wait = next_wait(
        policy, attempts_made=attempts, elapsed=elapsed, retry_after=retry_after, rng=lambda: draw
    )
    if wait is None:
        return
    assert attempts < max_attempts
    assert wait >= 0
    assert elapsed + wait + policy.min_attempt_time <= budget
    if retry_after is not None:
        assert wait == retry_after
    else:
        assert wait <= policy.max_delay


def test_attempt_timeout_and_budget() -> None:
    policy = RetryPolicy(max_retry_time=5.0)
    assert attempt_timeout(policy, timeout=10, elapsed=0, first=True) == 10
    assert attempt_timeout(policy, timeout=10, elapsed=2, first=False) == 3
    assert attempt_timeout(policy, timeout=1, elapsed=2, first=False) == 1
    assert attempt_timeout(policy, timeout=1, elapsed=5, first=False) == policy.min_attempt_time
    assert fits_budget(policy, elapsed=1, wait=3.9)
    assert not fits_budget(policy, elapsed=1, wait=4.0)
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


def test_parse_retry_after() -> None:
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("5", now) == 5
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("0", now) == 0
    for bad in (None, "", "-1", "soon", "nan", "inf", "1e400"):
        assert parse_retry_after(bad, now) is None, bad
    assert parse_retry_after("Sun, 01 Mar 2026 12:00:30 GMT", now) == 30
    assert parse_retry_after("Sun, 01 Mar 2026 11:59:00 GMT", now) == 0
    other_tz = now.astimezone(timezone(timedelta(hours=2)))
    assert parse_retry_after("Sun, 01 Mar 2026 12:00:10 GMT", other_tz) == 10
