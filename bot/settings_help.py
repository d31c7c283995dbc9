"""`run --help`'s list of settings, generated from `bot.config.Settings` so it cannot go stale.

Each row names the variable, its default (or "required"), the accepted range or values, how to
get it where a person could get it wrong, and where this shell would take it from right now
(the environment, `.env` in the working directory, or the default), never the value itself.
"""

from __future__ import annotations

import enum
import os
import typing
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values
from pydantic import SecretStr

from bot.config import HOW_TO_GET, Settings

#: Settings without which `run` refuses to start (the Socket Mode exception is in the hint).
REQUIRED = frozenset({"SLACK_BOT_TOKEN", "ASANA_TOKEN", "SLACK_SIGNING_SECRET"})

SOURCES_NOTE = (
    "Each setting is an environment variable; a .env file in the working directory is read "
    "too, and the environment wins over it. In brackets: where this shell would take each "
    "from now (set in env, set in .env, or not set: the default). Values are never shown; what each does is in docs/configuration.md."
)


def _default(name: str) -> str:
    if name in REQUIRED:
        return "required" + (" in HTTP mode" if name == "SLACK_SIGNING_SECRET" else "")
    return "default " + _default_value(name)


def _default_value(name: str) -> str:
    field = Settings.model_fields[name]
    value = field.default
    if value is None or (field.annotation is not None and _is_secret(field.annotation)):
        return "unset"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if value == "" else str(value)


def _is_secret(annotation: object) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def _accepts(name: str) -> str:
    field = Settings.model_fields[name]
    choices = typing.get_args(field.annotation) if typing.get_origin(field.annotation) else ()
    if choices and typing.get_origin(field.annotation) is typing.Literal:
        return "one of " + ", ".join(str(c) for c in choices)
    if isinstance(field.annotation, type) and issubclass(field.annotation, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in field.annotation)
    bounds = []
    for item in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            bound = getattr(item, attr, None)  # annotated_types.Ge and friends
            if bound is not None:
                bounds.append(f"{sign} {bound}")
    return ", ".join(bounds)


def source(name: str, environ: Mapping[str, str], dotenv: Mapping[str, str | None]) -> str:
    """Where Settings would read `name` from: the environment beats `.env`, which beats the
    default (pydantic-settings' order, case-sensitive like Settings)."""
    if name in environ:
        return "set in env"
    if name in dotenv:
        return "set in .env"
    return "not set"


def rows(
    environ: Mapping[str, str] | None = None, env_file: Path | None = None
) -> list[tuple[str, str]]:
    """(name, description) for every setting, in the order Settings declares them."""
    environ = os.environ if environ is None else environ
    path = env_file if env_file is not None else Path(".env")
    dotenv = dotenv_values(path) if path.is_file() else {}
    found = []
    for name in Settings.model_fields:
        parts = [_default(name)]
        accepts = _accepts(name)
        if accepts:
            parts.append(accepts)
        text = "; ".join(parts) + "."
        if name in HOW_TO_GET:
            text += f" Set it to {HOW_TO_GET[name]}."
        found.append((name, f"[{source(name, environ, dotenv)}] {text}"))
    return found
