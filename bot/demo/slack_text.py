"""Block Kit as a terminal shows it: what a person would read in Slack, as plain lines.

Pure functions, no I/O: the demo renders what the fake Slack recorded (posts, edits, answers) with
them, and tests can check a message the way a person reads it. Links `<url|label>` become
`label (url)`, mentions `<@U1>` become `@U1`, buttons `[Get a fresh link]`, Slack's entities are
decoded and the common emoji codes become the characters Slack would draw.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_EMOJI = {
    ":hourglass_flowing_sand:": "⏳",
    ":gear:": "⚙️",
    ":white_check_mark:": "✅",
    ":x:": "❌",
    ":grey_question:": "❔",
    ":inbox_tray:": "📥",
    ":warning:": "⚠️",
    ":eyes:": "👀",
    ":no_entry:": "⛔",
    ":hourglass:": "⌛",
}
_EMOJI_CODE = re.compile(r":[a-z0-9_+\-]+:")
_ANGLE = re.compile(r"<([^<>]*)>")
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")


def _angle(match: re.Match[str], names: Mapping[str, str]) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    if target.startswith(("@", "#")):
        return target[0] + (label or names.get(target[1:], target[1:]))
    if target.startswith("!"):
        return "@" + (label or target[1:])
    return f"{label} ({target})" if label else target


def mrkdwn_to_text(text: str, names: Mapping[str, str] | None = None) -> str:
    """Slack mrkdwn as read on screen: links spelled out, entities decoded, emoji drawn.

    `names` maps user and channel ids to the names Slack would show for `<@U...>`, `<#C...>`.
    """
    known = names or {}
    out = _ANGLE.sub(lambda m: _angle(m, known), text)
    out = _BOLD.sub(r"\1", out)
    out = _EMOJI_CODE.sub(lambda m: _EMOJI.get(m.group(0), m.group(0)), out)
    return out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _text_of(obj: Any, names: Mapping[str, str] | None = None) -> str:
    if not isinstance(obj, Mapping):
        return ""
    text = str(obj.get("text") or "")
    return mrkdwn_to_text(text, names) if obj.get("type") == "mrkdwn" else text


def _element(el: Any, names: Mapping[str, str] | None = None) -> str:
    if not isinstance(el, Mapping):
        return ""
    if el.get("type") == "button":
        label = f"[{_text_of(el.get('text'))}]"
        return f"{label} -> {el['url']}" if el.get("url") else label
    return _text_of(el, names)


def block_lines(block: Mapping[str, Any], names: Mapping[str, str] | None = None) -> list[str]:
    """One block as lines of text (empty for blocks with nothing to read, e.g. a divider)."""
    kind = block.get("type")
    lines: list[str] = []
    if kind == "header":
        lines.append(_text_of(block.get("text"), names).upper())
    elif kind == "section":
        if block.get("text"):
            lines.extend(_text_of(block["text"], names).splitlines())
        for field in block.get("fields") or []:
            label, _, value = _text_of(field, names).partition("\n")
            lines.append(f"{label}: {value}" if value else label)
        if block.get("accessory"):
            lines.append(_element(block["accessory"], names))
    elif kind == "context":
        lines.append(
            "  ".join(t for t in (_element(e, names) for e in block.get("elements") or []) if t)
        )
    elif kind == "actions":
        lines.append(
            "   ".join(t for t in (_element(e, names) for e in block.get("elements") or []) if t)
        )
    return [line for line in lines if line]


def message_lines(body: Mapping[str, Any], names: Mapping[str, str] | None = None) -> list[str]:
    """A message (chat.postMessage/chat.update body, an ack or a response_url post) as lines.

    The blocks when there are some, else the fallback text.
    """
    blocks = body.get("blocks")
    if isinstance(blocks, list) and blocks:
        return [line for b in blocks if isinstance(b, Mapping) for line in block_lines(b, names)]
    return mrkdwn_to_text(str(body.get("text") or ""), names).splitlines()


def field_value(body: Mapping[str, Any], label: str) -> str | None:
    """The value of a labelled field (`*State*\\n:gear: started` -> ":gear: started"), if any."""
    for block in body.get("blocks") or []:
        if not isinstance(block, Mapping):
            continue
        for field in block.get("fields") or []:
            text = str(field.get("text") or "") if isinstance(field, Mapping) else ""
            head, _, value = text.partition("\n")
            if head.strip("*") == label:
                return value
    return None


def card_state(body: Mapping[str, Any]) -> str | None:
    """The export state a status card shows (`pending`, `started`, `finished`...), if any."""
    value = field_value(body, "State")
    return value.split()[-1] if value and value.split() else None


def buttons(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every button of a message, in order."""
    found: list[Mapping[str, Any]] = []
    for block in body.get("blocks") or []:
        if not isinstance(block, Mapping):
            continue
        elements = list(block.get("elements") or []) if block.get("type") == "actions" else []
        if block.get("accessory"):
            elements.append(block["accessory"])
        found += [e for e in elements if isinstance(e, Mapping) and e.get("type") == "button"]
    return found
