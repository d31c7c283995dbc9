"""mrkdwn safety: foreign strings are escaped, flattened and shortened; links and mentions are ours.

Every string that came from Asana or a user goes through `esc` (or `code`) before it reaches
mrkdwn, so an organization named `<!channel>` pings nobody and a newline in a name cannot start a
block quote. The only `<...>` constructs we emit are built here: `<@U...>` and `<#C...>` from ids
of Slack's shape, and `<https://...|label>` whose URL went through `sanitize_url`. `clip` cuts
mrkdwn to a length without leaving half an entity or half a `<...>` construct.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit, urlunsplit

# Budgets (in characters of the raw string, before escaping) for strings we do not control.
GID_BUDGET = 64
NAME_BUDGET = 150
STATE_BUDGET = 60
ASANA_MESSAGE_BUDGET = 300
PROBLEM_BUDGET = 300
COMMAND_BUDGET = 40

ELLIPSIS = "…"
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,}")
_LINE_BREAKERS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
# Characters kept as they are in a URL: RFC 3986 reserved + unreserved, and `%` so that existing
# escapes survive. Everything else (space, `<`, `>`, `|`, quotes, backslash, non-ASCII...) is
# percent-encoded as UTF-8.
_URL_SAFE = ":/?#[]@!$&'()*+,;=%~"


def escape_mrkdwn(s: str) -> str:
    """Turn Slack's control characters into entities so the text is shown, never parsed."""
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def truncate(s: str, limit: int) -> str:
    """Shorten `s` to at most `limit` characters, marking the cut with an ellipsis."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if len(s) <= limit:
        return s
    return s[: limit - 1] + ELLIPSIS


def sanitize_url(url: str) -> str | None:
    """Return `url` made safe for Slack (percent-encoded), or None unless it is http(s) with a host.

    The result contains no space, `<`, `>`, `|`, quote or non-ASCII character, so it cannot break
    `<url|label>` markup, and it still points where it pointed (only unsafe characters change).
    """
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url.strip())
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            return None
        port = parts.port  # raises ValueError on a port that is not a number in range
        netloc = parts.netloc
        if not netloc.isascii():
            # An international host name becomes its IDNA form, which is what browsers send.
            host = parts.hostname.encode("idna").decode("ascii")
            if ":" in host:  # an IPv6 literal keeps its brackets
                host = f"[{host}]"
            userinfo, _, _ = netloc.rpartition("@")
            netloc = (
                (f"{quote(userinfo, safe=':%')}@" if userinfo else "")
                + host
                + (f":{port}" if port is not None else "")
            )
    except (ValueError, UnicodeError):  # bad port, bad IPv6 literal, unencodable host
        return None
    return urlunsplit(
        (
            parts.scheme.lower(),
            quote(netloc, safe=_URL_SAFE),
            quote(parts.path, safe=_URL_SAFE),
            quote(parts.query, safe=_URL_SAFE),
            quote(parts.fragment, safe=_URL_SAFE),
        )
    )


def safe_link(url: str, label: str) -> str | None:
    """Build a mrkdwn link `<url|label>` with a sanitized URL and escaped label; None if unsafe."""
    clean = sanitize_url(url)
    if clean is None:
        return None
    # Inside mrkdwn, `&` is still a control character: Slack decodes `&amp;` back in the URL.
    text = escape_mrkdwn(inline(label)).replace("|", "¦") or "link"
    return f"<{escape_mrkdwn(clean)}|{text}>"


def user_mention(user_id: str | None) -> str | None:
    """`<@U...>` for a well-formed Slack user id, else None (a malformed id is never echoed)."""
    if user_id and _USER_ID.fullmatch(user_id):
        return f"<@{user_id}>"
    return None


def channel_mention(channel_id: str | None) -> str | None:
    """`<#C...>` for a well-formed public/private channel id, else None."""
    if channel_id and _CHANNEL_ID.fullmatch(channel_id):
        return f"<#{channel_id}>"
    return None


def inline(s: str) -> str:
    """Flatten to one line: a newline in a name must not start a block quote or a list."""
    return _LINE_BREAKERS.sub(" ", s)


def esc(s: str | None, limit: int, *, default: str = "") -> str:
    """Inline, truncate, then escape a foreign string (in that order: never cut an entity)."""
    if s is None:
        return default
    return escape_mrkdwn(truncate(inline(s), limit))


def code(s: str | None, limit: int = GID_BUDGET) -> str:
    """Show a foreign string as inline code; backticks in it would end the code span early."""
    shown = esc(s, limit).replace("`", "ˋ").strip()
    return f"`{shown}`" if shown else "(empty)"


def command_text(command: str) -> str:
    """The slash command's name as configured (an admin's string, so escaped like any other)."""
    return esc(command, COMMAND_BUDGET)


def clip(text: str, limit: int) -> str:
    """Cut mrkdwn to `limit` chars without leaving half an entity or half a `<...>` construct."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    while True:
        amp = cut.rfind("&")
        lt = cut.rfind("<")
        if amp != -1 and ";" not in cut[amp:]:
            cut = cut[:amp]
        elif lt != -1 and ">" not in cut[lt:]:
            cut = cut[:lt]
        else:
            return cut + ELLIPSIS
