"""Errors of the serving process, and the one place that maps them to HTTP status codes.

Example:
    >>> http_status(BadParameterError("limit", "must be an integer"))
    422
"""

from __future__ import annotations

from typing import Final

from kernel.errors import FeedflowError


class ServingError(FeedflowError):
    """Root of the errors a request can end with; `code` names it in the JSON body."""

    code = "internal_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field = message, field

    def body(self) -> dict[str, str]:
        """The JSON error body."""
        out = {"error": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


class BadParameterError(ServingError):
    """A query or path parameter is missing, malformed or out of range."""

    code = "invalid_parameter"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}", field=field)


class UnknownItemError(ServingError):
    """The item asked about is not in the served index (never published, or removed)."""

    code = "unknown_item"


class UnknownBoardError(ServingError):
    """The trending board asked about is not held by this process."""

    code = "unknown_board"


class RouteNotFoundError(ServingError):
    """No endpoint at this path."""

    code = "not_found"


class NotReadyError(ServingError):
    """The process has not loaded what it needs to answer yet (see /readyz)."""

    code = "not_ready"


class StoreUnavailableError(ServingError):
    """A store this answer needs did not answer in time (the feed itself has fallbacks; the
    explorer's listings do not)."""

    code = "store_unavailable"


HTTP_STATUS: Final[dict[type[ServingError], int]] = {
    BadParameterError: 422,
    UnknownItemError: 404,
    UnknownBoardError: 404,
    RouteNotFoundError: 404,
    NotReadyError: 503,
    StoreUnavailableError: 503,
}


def http_status(exc: ServingError) -> int:
    """The HTTP status code of a serving error (500 for anything not listed)."""
    for kind in type(exc).__mro__:
        if kind in HTTP_STATUS:
            return HTTP_STATUS[kind]
    return 500
