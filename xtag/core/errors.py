"""Domain errors: what went wrong, in words for the person who can fix it.
Each web edge turns them into its own HTTP answer; nothing here knows a status."""

from __future__ import annotations


class Invalid(ValueError):
    """Input that breaks a rule; `field` names the field when it is one."""

    code = "invalid"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message, self.field = message, field


class BadReference(Invalid):
    """Well-formed input naming a row that does not exist (a pixel, a site)."""


class Conflict(Invalid):
    """Input that clashes with an existing row (a unique name or id)."""

    code = "conflict"


class NotFound(Invalid):
    code = "not_found"


class Unauthenticated(Invalid):
    code = "unauthorized"


class Forbidden(Invalid):
    code = "forbidden"


class RateLimited(Invalid):
    """Too many requests; `retry_after` seconds until the next are taken."""

    code = "too_many_requests"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after
