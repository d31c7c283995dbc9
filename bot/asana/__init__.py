"""Asana's organization exports: the client, its errors and the parsing of its answers.

`errors` holds one exception tree with grouping bases (catch `AsanaTransientError` or
`AsanaNeedsPerson`), `parsing` turns answers into our types without I/O, and `client` talks HTTP.
"""

import sys

if "httpx" not in sys.modules:
    # httpx imports its command-line tool, and with it rich, pygments and click, whenever they
    # are installed (rich is ours, for the demo): a third of httpx's import time on the start
    # path. A None entry makes that one import fail, which httpx expects (it then offers a stub
    # `httpx.main`); the entry is removed again so nothing else is affected.
    sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx  # noqa: F401
    finally:
        if sys.modules.get("httpx._main", False) is None:
            del sys.modules["httpx._main"]

from bot.asana.client import (
    DEFAULT_BASE_URL,
    DEFAULT_RATE_LIMIT_HOLD,
    MAX_CONNECTIONS,
    OPT_FIELDS,
    USER_AGENT,
    USER_FIELDS,
    AsanaClient,
)
from bot.asana.errors import (
    AsanaBadRequest,
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
)
from bot.asana.parsing import (
    AsanaUser,
    error_from_response,
    parse_datetime,
    parse_export,
    parse_retry_after,
    parse_user,
    scrub,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_RATE_LIMIT_HOLD",
    "MAX_CONNECTIONS",
    "OPT_FIELDS",
    "USER_AGENT",
    "USER_FIELDS",
    "AsanaBadRequest",
    "AsanaClient",
    "AsanaConnectionError",
    "AsanaError",
    "AsanaForbidden",
    "AsanaMalformedResponse",
    "AsanaMissingData",
    "AsanaNeedsPerson",
    "AsanaNotFound",
    "AsanaPaymentRequired",
    "AsanaRateLimited",
    "AsanaServerError",
    "AsanaTimeout",
    "AsanaTransientError",
    "AsanaUnauthorized",
    "AsanaUser",
    "AsanaWrongExport",
    "error_from_response",
    "parse_datetime",
    "parse_export",
    "parse_retry_after",
    "parse_user",
    "scrub",
]
