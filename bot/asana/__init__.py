"""Asana's organization exports: the client, its errors and the parsing of its answers.

`errors` holds one exception tree with grouping bases (catch `AsanaTransientError` or
`AsanaNeedsPerson`), `parsing` turns answers into our types without I/O, and `client` talks HTTP.
"""

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
