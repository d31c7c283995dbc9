"""Posting and editing Slack messages, with Slack's errors sorted into what to do about them."""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.access import LinkPolicy, may_post_link
from bot.messages import Message

log = logging.getLogger(__name__)


class Failure(enum.StrEnum):
    """Why a Slack call failed, by what the caller should do."""

    CHANNEL = "channel"  # this channel is unusable for us: end the watch, never retry
    TOKEN = "token"  # noqa: S105 - a category, not a secret; the bot's token is dead: pause everything, a person must act
    CONTENT = "content"  # Slack refused the blocks: send plain text instead
    TRANSIENT = "transient"  # try again later (the SDK already retried 429/5xx/connection)


_CHANNEL_ERRORS = frozenset(
    {
        "channel_not_found",
        "is_archived",
        "not_in_channel",
        "restricted_action",
        "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel",
        "restricted_action_non_threadable_channel",
        "cannot_reply_to_message",
        "team_access_not_granted",
        "ekm_access_denied",
    }
)
_TOKEN_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "token_expired",
        "account_inactive",
        "missing_scope",
        "not_allowed_token_type",
    }
)
_CONTENT_ERRORS = frozenset(
    {
        "msg_too_long",
        "invalid_blocks",
        "invalid_blocks_format",
        "invalid_metadata_format",
        "invalid_metadata_schema",
        "metadata_too_large",
        "no_text",
    }
)

#: Every error code the bot sorts by name (the metrics keep these as labels).
KNOWN_ERRORS = _CHANNEL_ERRORS | _TOKEN_ERRORS | _CONTENT_ERRORS


def classify(error: str | None) -> Failure:
    """Sort a Slack error code; unknown codes are treated as transient (retried with backoff)."""
    if error in _CHANNEL_ERRORS:
        return Failure.CHANNEL
    if error in _TOKEN_ERRORS:
        return Failure.TOKEN
    if error in _CONTENT_ERRORS:
        return Failure.CONTENT
    return Failure.TRANSIENT


@dataclass(frozen=True, slots=True)
class SlackResult:
    """A call's outcome: the message ts on success, otherwise the error and its class."""

    ts: str | None = None
    error: str | None = None
    failure: Failure | None = None

    @property
    def ok(self) -> bool:
        return self.ts is not None


async def _call(method: str, call: Any, **kwargs: Any) -> SlackResult:
    try:
        response = await call(**kwargs)
    except SlackApiError as exc:
        error = str(exc.response.get("error") or "unknown_error")
        log.warning("Slack %s in %s failed: %s", method, kwargs.get("channel"), error)
        return SlackResult(error=error, failure=classify(error))
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("Slack %s in %s failed: %s", method, kwargs.get("channel"), type(exc).__name__)
        return SlackResult(error=type(exc).__name__, failure=Failure.TRANSIENT)
    return SlackResult(ts=str(response.get("ts")))


async def post(
    client: AsyncWebClient,
    channel: str,
    message: Message,
    *,
    metadata: dict[str, Any] | None = None,
    thread_ts: str | None = None,
) -> SlackResult:
    """chat.postMessage (a reply when `thread_ts` is given); if Slack refuses the blocks, post
    the plain text instead."""
    kwargs: dict[str, Any] = {"channel": channel, "unfurl_links": False, "unfurl_media": False}
    if metadata is not None:
        kwargs["metadata"] = metadata
    if thread_ts is not None:
        kwargs["thread_ts"] = thread_ts
    result = await _call("chat.postMessage", client.chat_postMessage, **kwargs, **message.to_post())
    if result.failure is Failure.CONTENT:
        result = await _call(
            "chat.postMessage", client.chat_postMessage, **kwargs, text=message.text[:3000]
        )
    return result


async def update(client: AsyncWebClient, channel: str, ts: str, message: Message) -> SlackResult:
    """chat.update of a card; plain text fallback as for `post`."""
    kwargs: dict[str, Any] = {"channel": channel, "ts": ts}
    result = await _call("chat.update", client.chat_update, **kwargs, **message.to_post())
    if result.failure is Failure.CONTENT:
        result = await _call(
            "chat.update", client.chat_update, **kwargs, text=message.text[:3000], blocks=[]
        )
    return SlackResult(ts=ts) if result.ok else result


async def find_posted(
    client: AsyncWebClient,
    channel: str,
    *,
    event_type: str,
    subscription_id: int,
    oldest: float,
) -> str | None:
    """The ts of our own earlier post for this subscription, found by its message metadata.

    Closes the gap between Slack accepting a post and our database recording it.
    Returns None when no such message exists; raises nothing (an unreadable history means
    the caller must not guess, so it gets None only when the history was actually read).
    """
    cursor: str | None = None
    for _ in range(10):  # at most 10 pages of 200 messages
        try:
            response = await client.conversations_history(
                channel=channel,
                oldest=f"{oldest:.6f}",
                limit=200,
                include_all_metadata=True,
                cursor=cursor,
            )
        except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
            raise HistoryUnavailable(type(exc).__name__) from None
        for message in response.get("messages") or []:
            meta = message.get("metadata") or {}
            payload = meta.get("event_payload") or {}
            if meta.get("event_type") == event_type and str(payload.get("subscription_id")) == str(
                subscription_id
            ):
                return str(message.get("ts"))
        cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
        if not cursor:
            return None
    return None


class HistoryUnavailable(Exception):
    """The channel history could not be read, so whether we posted is unknown."""


async def channel_info(client: AsyncWebClient, channel: str) -> dict[str, Any] | None:
    """conversations.info's channel object, or None when Slack will not say."""
    try:
        response = await client.conversations_info(channel=channel)
    except (SlackApiError, aiohttp.ClientError, TimeoutError) as exc:
        error = exc.response.get("error") if isinstance(exc, SlackApiError) else type(exc).__name__
        log.info("conversations.info for %s failed: %s", channel, error)
        return None
    found = response.get("channel")
    return found if isinstance(found, dict) else None


class LinkGate:
    """LINK_POLICY applied per channel, asking Slack only when the policy needs to.

    Only the safe answer is cached: "no link here" is kept for `ttl` seconds (a channel made
    private later waits that long for links). "Private, link allowed" is asked again before every
    post that carries a link, so a channel just shared with another organization never gets one
    on the strength of an old answer. A failed lookup says "no" and is not cached.
    """

    def __init__(
        self,
        client: AsyncWebClient,
        policy: LinkPolicy,
        *,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self.policy = policy
        self._ttl = ttl
        self._clock = clock
        self._denied: dict[str, float] = {}  # channel -> when Slack said "no link here"

    async def allowed(self, channel: str) -> bool:
        """May the link itself be posted where everyone in `channel` sees it?"""
        if self.policy is not LinkPolicy.PRIVATE:
            return may_post_link(self.policy, None)
        now = self._clock()
        denied_at = self._denied.get(channel)
        if denied_at is not None and now - denied_at < self._ttl:
            return False
        info = await channel_info(self._client, channel)
        verdict = may_post_link(self.policy, info)
        if info is not None and not verdict:
            if len(self._denied) > 10_000:
                self._denied.clear()
            self._denied[channel] = now
        return verdict
