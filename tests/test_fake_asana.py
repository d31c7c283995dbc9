"""The fake Asana speaks Asana's documented shapes, and its scripting, faults and log work."""

from __future__ import annotations

import asyncio
import copy
import gzip
import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from bot.demo import fake_asana as fakes
from bot.demo.export_files import ExportFile
from bot.demo.fake_asana import FakeAsana
from bot.testing.wait import wait_until

SPEC_PATH = Path(__file__).resolve().parent / "reference" / "asana_oas.organization_exports.yaml"

EXPORT_PATH = "/organization_exports/{organization_export_gid}"
COMPONENT_FOR_STATUS = {
    400: "BadRequest",
    401: "Unauthorized",
    402: "PaymentRequired",
    403: "Forbidden",
    404: "NotFound",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


# ----------------------------------------------------------------------------- OAS checking


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


def _resolve(node: Any, root: dict[str, Any], *, strict: bool) -> Any:
    """Inline every local $ref; with strict, objects also forbid properties not in the spec."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = root
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return _resolve(target, root, strict=strict)
        out = {k: _resolve(v, root, strict=strict) for k, v in node.items()}
        if strict and out.get("type") == "object" and "properties" in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_resolve(v, root, strict=strict) for v in node]
    return node


def response_schema(
    spec: dict[str, Any], path: str, method: str, status: int, *, strict: bool = True
) -> dict[str, Any]:
    """The spec's JSON schema for one response; statuses the operation omits use components."""
    responses = spec["paths"][path][method]["responses"]
    response = responses.get(status) or responses.get(str(status))
    if response is None:
        response = {"$ref": f"#/components/responses/{COMPONENT_FOR_STATUS[status]}"}
    resolved = _resolve(response, spec, strict=strict)
    return resolved["content"]["application/json"]["schema"]


def validate(spec: dict[str, Any], path: str, method: str, response: httpx.Response) -> None:
    schema = response_schema(spec, path, method, response.status_code)
    validator = OAS30Validator(schema, format_checker=OAS30Validator.FORMAT_CHECKER)
    validator.validate(response.json())


def test_the_schema_check_can_fail(spec: dict[str, Any]) -> None:
    """Guard against a validator that accepts anything."""
    schema = response_schema(spec, EXPORT_PATH, "get", 200)
    validator = OAS30Validator(schema, format_checker=OAS30Validator.FORMAT_CHECKER)
    good = {"data": {"gid": "1", "resource_type": "organization_export", "state": "started"}}
    validator.validate(good)
    bad_bodies = [
        {"data": {"gid": 1}},
        {"data": {"gid": "1", "state": "done"}},
        {"data": {"gid": "1", "created_at": "yesterday"}},
        {"data": {"gid": "1", "download_url": 5}},
        {"data": {"gid": "1", "stat": "pending"}},  # strict: a misspelt field
        {"data": {"gid": "1", "organization": {"gid": "2", "nam": "x"}}},
    ]
    for bad in bad_bodies:
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(bad)
    error_schema = response_schema(spec, EXPORT_PATH, "get", 404)
    with pytest.raises(jsonschema.ValidationError):
        OAS30Validator(error_schema).validate({"errors": [{"message": 3}]})


# ---------------------------------------------------------------------------------- helpers


@pytest.fixture
def fake() -> Iterator[FakeAsana]:
    yield from fakes.fake_asana()


def _client(fake: FakeAsana, token: str | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=fake.base_url,
        headers={"Authorization": f"Bearer {token or fake.token}"},
        timeout=5.0,
    )


def _get(fake: FakeAsana, gid: str, **params: str) -> httpx.Response:
    with _client(fake) as client:
        return client.get(f"/organization_exports/{gid}", params=params)


# ------------------------------------------------------------------------------- responses


@pytest.mark.parametrize("state", ["pending", "started", "finished", "error"])
def test_every_state_validates_in_full_and_with_opt_fields(
    fake: FakeAsana, spec: dict[str, Any], state: str
) -> None:
    fake.set_export("1001", state, organization_gid="42", organization_name="Acme")
    full = _get(fake, "1001")
    assert full.status_code == 200
    validate(spec, EXPORT_PATH, "get", full)
    data = full.json()["data"]
    assert data["gid"] == "1001"
    assert data["resource_type"] == "organization_export"
    assert data["state"] == state
    assert data["organization"] == {"gid": "42", "resource_type": "workspace", "name": "Acme"}
    if state == "finished":
        assert data["download_url"].startswith("https://")
        assert "X-Amz-Signature=" in data["download_url"]
    else:
        assert data["download_url"] is None

    fields = "state,organization,organization.name,created_at,download_url"
    picked = _get(fake, "1001", opt_fields=fields)
    validate(spec, EXPORT_PATH, "get", picked)
    assert set(picked.json()["data"]) == {
        "gid",
        "resource_type",
        "state",
        "organization",
        "created_at",
        "download_url",
    }


def test_opt_fields_return_only_those_fields(fake: FakeAsana, spec: dict[str, Any]) -> None:
    fake.set_export("7", "finished", organization_gid="42", organization_name="Acme")
    only_state = _get(fake, "7", opt_fields="state")
    validate(spec, EXPORT_PATH, "get", only_state)
    assert only_state.json()["data"] == {
        "gid": "7",
        "resource_type": "organization_export",
        "state": "finished",
    }
    org = _get(fake, "7", opt_fields="organization").json()["data"]
    assert org["organization"] == {"gid": "42", "resource_type": "workspace"}
    named = _get(fake, "7", opt_fields="organization.name").json()["data"]
    assert named["organization"]["name"] == "Acme"
    assert "download_url" not in named
    # No link is minted unless download_url is among the fields.
    assert fake.download_urls("7") == []


def test_download_urls_are_minted_per_request_only_when_asked(fake: FakeAsana) -> None:
    fake.set_export("7", "finished")
    _get(fake, "7", opt_fields="state")
    assert fake.download_urls("7") == []
    first = _get(fake, "7").json()["data"]["download_url"]
    second = _get(fake, "7", opt_fields="download_url").json()["data"]["download_url"]
    assert first != second
    assert fake.download_urls("7") == [first, second]

    fake.set_export("8", "finished", download_url="https://example.invalid/x?sig=1")
    assert _get(fake, "8").json()["data"]["download_url"] == "https://example.invalid/x?sig=1"
    counter = iter(range(100))
    fake.set_export("9", "finished", download_url=lambda: f"https://x.invalid/{next(counter)}")
    assert _get(fake, "9").json()["data"]["download_url"] == "https://x.invalid/0"
    assert _get(fake, "9").json()["data"]["download_url"] == "https://x.invalid/1"


def test_opt_pretty_indents(fake: FakeAsana) -> None:
    fake.set_export("1", "pending")
    assert "\n" not in _get(fake, "1").text
    pretty = _get(fake, "1", opt_pretty="true").text
    assert '\n  "data": {' in pretty
    assert json.loads(pretty)["data"]["gid"] == "1"
    with _client(fake) as client:  # the bare flag, as Asana allows (allowEmptyValue)
        assert "\n" in client.get("/organization_exports/1?opt_pretty").text


def test_extra_fields_and_unknown_states_are_served(fake: FakeAsana) -> None:
    fake.set_export("5", "archived", extra={"size_bytes": 12, "state_reason": "x"})
    data = _get(fake, "5", opt_fields="state").json()["data"]
    assert data["state"] == "archived"
    assert data["size_bytes"] == 12


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_bad_or_missing_token_is_401(
    fake: FakeAsana, spec: dict[str, Any], token: str | None
) -> None:
    fake.set_export("1", "pending")
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    response = httpx.get(f"{fake.base_url}/organization_exports/1", headers=headers)
    assert response.status_code == 401
    validate(spec, EXPORT_PATH, "get", response)
    assert response.json()["errors"][0]["message"] == "Not Authorized"
    fake.set_token("wrong-token")
    again = httpx.get(
        f"{fake.base_url}/organization_exports/1", headers={"Authorization": "Bearer wrong-token"}
    )
    assert again.status_code == 200


def test_unknown_and_invalid_gids(fake: FakeAsana, spec: dict[str, Any]) -> None:
    missing = _get(fake, "999")
    assert missing.status_code == 404
    validate(spec, EXPORT_PATH, "get", missing)
    assert "Not a recognized ID: 999" in missing.json()["errors"][0]["message"]
    invalid = _get(fake, "abc")
    assert invalid.status_code == 400
    validate(spec, EXPORT_PATH, "get", invalid)
    with _client(fake) as client:
        assert client.get("/projects").status_code == 404
        assert client.delete("/organization_exports/1").status_code == 404


def test_users_me_has_asanas_user_shape(fake: FakeAsana) -> None:
    """The OAS subset has no /users/me, so check the documented UserResponse fields and types."""
    with _client(fake) as client:
        full = client.get("/users/me").json()["data"]
        some = client.get("/users/me", params={"opt_fields": "name"}).json()["data"]
        denied = client.get("/users/me", headers={"Authorization": "Bearer wrong"})
    assert full["resource_type"] == "user"
    assert all(isinstance(full[k], str) and full[k] for k in ("gid", "name", "email"))
    assert all(w["resource_type"] == "workspace" for w in full["workspaces"])
    assert some == {"gid": full["gid"], "resource_type": "user", "name": full["name"]}
    assert denied.status_code == 401 and denied.json()["errors"][0]["message"]


def test_post_creates_a_pending_export(fake: FakeAsana, spec: dict[str, Any]) -> None:
    fake.set_organization("42", "Acme")
    with _client(fake) as client:
        first = client.post("/organization_exports", json={"data": {"organization": "42"}})
        second = client.post("/organization_exports", json={"data": {"organization": "42"}})
        assert first.status_code == second.status_code == 201
        validate(spec, "/organization_exports", "post", first)
        data = first.json()["data"]
        assert data["state"] == "pending"
        assert data["download_url"] is None
        assert data["organization"]["name"] == "Acme"
        assert data["gid"].isdigit()
        assert data["gid"] != second.json()["data"]["gid"]
        assert fake.state(data["gid"]) == "pending"
        fetched = client.get(f"/organization_exports/{data['gid']}")
        assert fetched.json()["data"]["state"] == "pending"

        for bad in ({}, {"data": {}}, {"data": {"organization": 42}}, {"data": []}):
            rejected = client.post("/organization_exports", json=bad)
            assert rejected.status_code == 400
            validate(spec, "/organization_exports", "post", rejected)
    recorded = fake.requests[0]
    assert recorded.method == "POST" and recorded.gid is None
    assert recorded.body == {"data": {"organization": "42"}}


@pytest.mark.parametrize("status", sorted(COMPONENT_FOR_STATUS))
def test_injected_errors_validate(fake: FakeAsana, spec: dict[str, Any], status: int) -> None:
    fake.set_export("1", "pending")
    fake.fail(status, retry_after=3 if status == 429 else None)
    response = _get(fake, "1")
    assert response.status_code == status
    validate(spec, EXPORT_PATH, "get", response)
    error = response.json()["errors"][0]
    assert error["message"] and error["help"]
    if status == 500:
        assert len(error["phrase"].split()) == 5
    else:
        assert "phrase" not in error
    if status == 429:
        assert response.headers["Retry-After"] == "3"
    assert _get(fake, "1").status_code == 200  # consumed


def test_injected_errors_on_post_validate(fake: FakeAsana, spec: dict[str, Any]) -> None:
    fake.fail(403, method="POST", phrase="1 odd phrase")
    with _client(fake) as client:
        response = client.post("/organization_exports", json={"data": {"organization": "1"}})
    assert response.status_code == 403
    validate(spec, "/organization_exports", "post", response)
    assert response.json()["errors"][0]["phrase"] == "1 odd phrase"


def test_held_creates_exist_before_their_answer_comes(
    fake: FakeAsana, spec: dict[str, Any]
) -> None:
    """hold_creates: the export is created at once, its answer waits for release_creates; the
    client that gives up (or is killed) never learns the gid, yet the export exists."""
    from bot.testing import wait_until

    fake.hold_creates(2)
    answers: list[httpx.Response | Exception] = []

    def create(timeout: float) -> None:
        try:
            with _client(fake) as client:
                answers.append(
                    client.post(
                        "/organization_exports",
                        json={"data": {"organization": "42"}},
                        timeout=timeout,
                    )
                )
        except httpx.HTTPError as exc:
            answers.append(exc)

    gave_up = threading.Thread(target=create, args=(0.3,))
    gave_up.start()
    (first,) = wait_until(fake.held_creates, 5, "the first creation held")
    assert fake.export_gids() == [first.gid] and fake.state(first.gid) == "pending"
    assert first.client_port is not None
    gave_up.join(5)
    assert isinstance(answers[0], httpx.ReadTimeout), "the client never heard back"
    waiting = threading.Thread(target=create, args=(10.0,))
    waiting.start()
    wait_until(lambda: len(fake.held_creates()) == 2, 5, "the second creation held")
    assert answers == answers[:1], "held, not answered"
    assert fake.release_creates() == 2 and fake.held_creates() == []
    waiting.join(5)
    answer = answers[1]
    assert isinstance(answer, httpx.Response) and answer.status_code == 201
    validate(spec, "/organization_exports", "post", answer)
    second = answer.json()["data"]["gid"]
    assert fake.export_gids() == [first.gid, second]
    with _client(fake) as client:  # holding was for two: the third is answered at once
        third = client.post("/organization_exports", json={"data": {"organization": "42"}})
    assert third.status_code == 201 and fake.held_creates() == []
    assert [r.status for r in fake.requests] == [201, 201, 201], "recorded as created"


# -------------------------------------------------------------------------------- scripting


def test_script_per_request_then_stays_on_last(fake: FakeAsana) -> None:
    before = time.monotonic()
    fake.script("1", ["pending", "started", "finished"])
    seen = [_get(fake, "1").json()["data"]["state"] for _ in range(5)]
    assert seen == ["pending", "started", "finished", "finished", "finished"]
    flips = fake.flips("1")
    assert [f.state for f in flips] == ["started", "finished"]
    times = fake.flip_times("1")
    assert before <= times[0] <= times[1] <= time.monotonic()
    # A flip happens right after the GET that served the previous state.
    gets = fake.requests_for("1")
    assert gets[0].at <= times[0] <= gets[1].at


def test_script_manual_advance(fake: FakeAsana) -> None:
    fake.script("1", ["pending", "started", "finished"], advance="manual")
    assert [_get(fake, "1").json()["data"]["state"] for _ in range(3)] == ["pending"] * 3
    t0 = time.monotonic()
    assert fake.advance("1") == "started"
    assert _get(fake, "1").json()["data"]["state"] == "started"
    assert fake.advance("1") == "finished"
    assert fake.advance("1") == "finished"  # stays on the last state
    assert _get(fake, "1").json()["data"]["download_url"] is not None
    assert len(fake.flip_times("1")) == 2
    assert t0 <= fake.flip_times("1")[0] <= fake.flip_times("1")[1]
    fake.set_state("1", "error")
    assert [f.state for f in fake.flips("1")] == ["started", "finished", "error"]
    with pytest.raises(ValueError):
        fake.script("1", [])
    with pytest.raises(KeyError):
        fake.advance("404")


def test_faults_on_a_scripted_export_do_not_advance_it(fake: FakeAsana) -> None:
    fake.script("1", ["pending", "finished"])
    fake.fail(503, gid="1")
    assert _get(fake, "1").status_code == 503
    assert _get(fake, "1").json()["data"]["state"] == "pending"
    assert _get(fake, "1").json()["data"]["state"] == "finished"


# ----------------------------------------------------------------------------------- faults


def test_faults_are_consumed_in_order_and_match_gid_and_times(fake: FakeAsana) -> None:
    fake.set_export("1", "pending")
    fake.set_export("2", "pending")
    fake.fail(502, gid="2", times=2)
    fake.fail(504)
    assert fake.pending_faults() == 3
    assert _get(fake, "1").status_code == 504  # the gid-2 fault is skipped for gid 1
    assert _get(fake, "1").status_code == 200
    assert [_get(fake, "2").status_code for _ in range(3)] == [502, 502, 200]
    assert fake.pending_faults() == 0
    fake.fail(500, times=3)
    fake.clear_faults()
    assert _get(fake, "1").status_code == 200


def test_body_override_and_raw_bodies(fake: FakeAsana) -> None:
    fake.set_export("1", "pending")
    fake.fail(502, body="<html>bad gateway</html>")
    response = _get(fake, "1")
    assert (response.status_code, response.text) == (502, "<html>bad gateway</html>")
    fake.fail(200, body={"data": {"gid": "1", "state": "started", "novel": True}})
    assert _get(fake, "1").json()["data"]["novel"] is True


def test_malformed_missing_data_and_wrong_gid(fake: FakeAsana) -> None:
    fake.set_export("1", "finished")
    fake.fail(malformed=True)
    fake.fail(missing_data=True)
    fake.fail(wrong_gid="2")
    malformed = _get(fake, "1")
    assert malformed.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed.text)
    missing = _get(fake, "1")
    assert missing.status_code == 200 and "data" not in missing.json()
    wrong = _get(fake, "1")
    assert wrong.status_code == 200 and wrong.json()["data"]["gid"] == "2"
    assert wrong.json()["data"]["state"] == "finished"


def test_reset_drops_the_connection_and_is_recorded(fake: FakeAsana) -> None:
    fake.set_export("1", "pending")
    fake.fail(reset=True)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        _get(fake, "1")
    assert fake.requests[-1].status is None
    assert _get(fake, "1").status_code == 200


def test_fault_delay_and_retry_after(fake: FakeAsana) -> None:
    fake.set_export("1", "pending")
    fake.fail(429, retry_after=1.5, delay=0.3)
    start = time.monotonic()
    response = _get(fake, "1")
    assert time.monotonic() - start >= 0.3
    assert response.headers["Retry-After"] == "1.5"


def test_persistent_delay_hang_and_stop_with_a_hung_request() -> None:
    fake = FakeAsana().start()
    try:
        fake.set_export("1", "pending")
        fake.set_export("2", "pending")
        fake.set_delay(30, gid="1")
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(
                f"{fake.base_url}/organization_exports/1",
                headers={"Authorization": f"Bearer {fake.token}"},
                timeout=0.3,
            )
        start = time.monotonic()
        assert _get(fake, "2").status_code == 200  # other gids are not delayed
        assert time.monotonic() - start < 5  # not gid 1's 30 s
        fake.set_delay(0.2)
        start = time.monotonic()
        assert _get(fake, "2").status_code == 200
        assert time.monotonic() - start >= 0.2
        fake.set_delay(0)
        # A request still hanging when the fake stops does not hold the stop up.
        outcome: list[object] = []

        def call() -> None:
            try:
                outcome.append(_get(fake, "1"))
            except httpx.HTTPError as exc:
                outcome.append(exc)

        hung = threading.Thread(target=call, daemon=True)
        hung.start()
        time.sleep(0.1)
    finally:
        start = time.monotonic()
        fake.stop()
    assert time.monotonic() - start < 3
    hung.join(5)
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.HTTPError)


def test_rate_limit_sliding_window_counts_rejected_requests(
    fake: FakeAsana, spec: dict[str, Any]
) -> None:
    fake.set_export("1", "pending")
    fake.set_rate_limit(3)
    statuses = [_get(fake, "1") for _ in range(5)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429, 429]
    limited = statuses[3]
    validate(spec, EXPORT_PATH, "get", limited)
    assert 55 <= int(limited.headers["Retry-After"]) <= 60
    fake.set_rate_limit(None)
    assert _get(fake, "1").status_code == 200


def test_rate_limit_window_slides() -> None:
    """Requests older than 60 s leave the window (the fake's rate clock is moved, not waited on)."""
    offset = [0.0]
    with FakeAsana(rate_clock=lambda: time.monotonic() + offset[0]) as fake:
        fake.set_export("1", "pending")
        fake.set_rate_limit(2)
        assert [_get(fake, "1").status_code for _ in range(3)] == [200, 200, 429]
        offset[0] = 30
        assert _get(fake, "1").status_code == 429
        offset[0] = 61  # everything from t=0 has left the window: [30, 61]
        assert _get(fake, "1").status_code == 200
        offset[0] = 62  # the rejected request at t=30 still counts
        assert _get(fake, "1").status_code == 429


# -------------------------------------------------------------------------------- recording


def test_requests_are_recorded(fake: FakeAsana) -> None:
    fake.set_export("1", "pending")
    before_mono, before_wall = time.monotonic(), time.time()
    with _client(fake) as client:
        client.get("/organization_exports/1", params={"opt_fields": "state"})
        client.get("/organization_exports/1", headers={"X-Probe": "yes"})
        client.get("/organization_exports/2")
    first, second, third = fake.requests
    assert (first.method, first.path, first.gid) == ("GET", "/api/1.0/organization_exports/1", "1")
    assert first.query == {"opt_fields": "state"}
    assert first.headers["authorization"] == f"Bearer {fake.token}"
    assert second.headers["x-probe"] == "yes"
    assert first.body is None
    assert before_mono <= first.at <= second.at <= third.at <= time.monotonic()
    assert before_wall - 1 <= first.wall <= time.time() + 1
    assert [r.status for r in fake.requests] == [200, 200, 404]
    assert first.client_port == second.client_port  # keep-alive connection reused
    assert [r.gid for r in fake.requests_for("1")] == ["1", "1"]
    fake.clear_requests()
    assert fake.requests == []


async def test_serves_async_clients_concurrently_while_the_test_loop_runs(
    fake: FakeAsana,
) -> None:
    fake.set_export("1", "pending")
    fake.set_delay(0.3)
    headers = {"Authorization": f"Bearer {fake.token}"}
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=fake.base_url, headers=headers) as client:
        responses = await asyncio.gather(
            *(client.get("/organization_exports/1") for _ in range(20))
        )
    assert all(r.status_code == 200 for r in responses)
    assert time.monotonic() - start < 2.0  # concurrent, not 20 x 0.3 s


def test_binds_loopback_on_a_random_port() -> None:
    with FakeAsana() as one, FakeAsana() as two:
        assert one.port != two.port
        assert one.base_url.startswith("http://127.0.0.1:")
        with socket.create_connection(("127.0.0.1", one.port), timeout=1):
            pass
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", one.port), timeout=1):
        pass


def test_fixture_function_starts_and_stops() -> None:
    gen = fakes.fake_asana()
    server = next(gen)
    server.set_export("1", "started")
    assert _get(server, "1").json()["data"]["state"] == "started"
    with pytest.raises(StopIteration):
        next(gen)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{server.port}/", timeout=1)


def test_unstarted_fake_has_no_url() -> None:
    with pytest.raises(RuntimeError):
        _ = FakeAsana().base_url


def test_copy_of_records_is_independent(fake: FakeAsana) -> None:
    fake.set_export("1", "pending")
    _get(fake, "1")
    snapshot = copy.copy(fake.requests)
    _get(fake, "1")
    assert len(snapshot) == 1 and len(fake.requests) == 2


# -- export files -----------------------------------------------------------------------------


def _download_url(fake: FakeAsana, gid: str) -> str:
    data = _get(fake, gid).json()["data"]
    assert data["state"] == "finished"
    return str(data["download_url"])


def test_generated_export_files_are_valid_gzip_of_the_exact_size() -> None:
    for size in (23, 24, 1000, 65_558, 65_563, 131_100, 300_001):
        served = ExportFile(size)
        data = b"".join(served.read())
        assert len(data) == size
        gzip.decompress(data)  # a valid gzip member (raises otherwise)
        assert hashlib.md5(data, usedforsecurity=False).hexdigest() == served.md5
        assert hashlib.sha256(data).hexdigest() == served.sha256
        assert b"".join(served.read(size // 3, size // 2)) == data[size // 3 : size // 2]
    with pytest.raises(ValueError):
        ExportFile(22)


def test_a_served_file_has_length_etag_name_and_ranges(fake: FakeAsana) -> None:
    fake.set_export("77", "finished")
    served = fake.serve_file("77", 200_000)
    url = _download_url(fake, "77")
    assert url.startswith(f"http://127.0.0.1:{fake.port}/files/") and "X-Amz-Signature=" in url
    assert url != _download_url(fake, "77")  # minted per request, like Asana's
    whole = httpx.get(url)  # no Asana token: the link is presigned
    assert whole.status_code == 200
    assert whole.headers["content-length"] == "200000"
    assert whole.headers["etag"] == f'"{served.md5}"'
    assert whole.headers["accept-ranges"] == "bytes"
    assert "domain_export_" in whole.headers["content-disposition"]
    assert hashlib.sha256(whole.content).hexdigest() == served.sha256
    part = httpx.get(url, headers={"Range": "bytes=150000-", "If-Range": whole.headers["etag"]})
    assert part.status_code == 206
    assert part.headers["content-range"] == "bytes 150000-199999/200000"
    assert part.content == whole.content[150_000:]
    changed = httpx.get(url, headers={"Range": "bytes=150000-", "If-Range": '"other"'})
    assert changed.status_code == 200 and len(changed.content) == 200_000
    assert httpx.get(url, headers={"Range": "bytes=300000-"}).status_code == 416
    assert [r.status for r in fake.file_requests("77")] == [200, 206, 200, 416]


def test_file_faults_drop_ignore_range_corrupt_and_status(fake: FakeAsana) -> None:
    fake.set_export("78", "finished")
    served = fake.serve_file("78", 100_000)
    url = _download_url(fake, "78")
    fake.file_fault("78", drop_after=30_000)
    got = bytearray()
    with pytest.raises(httpx.HTTPError), httpx.stream("GET", url) as response:
        for chunk in response.iter_raw():
            got += chunk
    assert 0 < len(got) <= 30_000
    fake.file_fault("78", ignore_range=True)
    ignored = httpx.get(url, headers={"Range": "bytes=10-"})
    assert ignored.status_code == 200 and len(ignored.content) == 100_000
    fake.file_fault("78", corrupt_at=5_000)
    corrupted = httpx.get(url)
    assert corrupted.headers["etag"] == f'"{served.md5}"'  # the file's, not what was sent
    assert hashlib.md5(corrupted.content, usedforsecurity=False).hexdigest() != served.md5
    assert sum(a != b for a, b in zip(corrupted.content, b"".join(served.read()), strict=True)) == 1
    fake.file_fault("78", status=503)
    assert httpx.get(url).status_code == 503
    assert httpx.get(url).status_code == 200  # faults are used up
    assert fake.file_requests("78")[0].sent == 30_000


def test_a_stall_sends_nothing_more(fake: FakeAsana) -> None:
    fake.set_export("79", "finished")
    fake.serve_file("79", 100_000)
    url = _download_url(fake, "79")
    fake.file_fault("79", stall_after=10_000, stall_seconds=30)
    got = bytearray()
    with pytest.raises(httpx.ReadTimeout), httpx.stream("GET", url, timeout=0.5) as response:
        for chunk in response.iter_raw():
            got += chunk
    assert len(got) == 10_000


def test_links_expire_after_their_time_and_on_demand(fake: FakeAsana) -> None:
    fake.set_export("80", "finished")
    fake.serve_file("80", 1_000, expires_after=0.5)
    url = _download_url(fake, "80")
    wait_until(lambda: httpx.get(url).status_code == 403, timeout=10)
    assert fake.file_requests("80")[-1].expired
    expired = httpx.get(url)
    assert "<Code>AccessDenied</Code>" in expired.text and "expired" in expired.text
    fake.serve_file("80", 1_000)
    fresh = _download_url(fake, "80")
    assert httpx.get(fresh).status_code == 200
    fake.expire_links("80")
    assert httpx.get(fresh).status_code == 403
    assert httpx.get(fresh.replace("X-Amz-Signature=", "X-Amz-Signature=forged")).status_code == 403
