"""How Rubot errors map to HTTP: user mistakes are 4xx with a clear message, never a 500."""

from __future__ import annotations

from pipeline.errors import (
    ApprovalAlreadyDecided,
    ApprovalError,
    ApprovalForbidden,
    DatabaseNotMigratedError,
    DefinitionError,
    InvalidRunState,
    NoPendingApproval,
    NotSerializable,
    RubotError,
    RunError,
    RunNotFound,
    ValidationError,
)

# First match wins, so subclasses come before their bases.
_STATUSES: tuple[tuple[type[RubotError], int], ...] = (
    (RunNotFound, 404),
    (ApprovalForbidden, 403),
    (ApprovalAlreadyDecided, 409),
    (NoPendingApproval, 409),
    (InvalidRunState, 409),
    (ApprovalError, 400),
    (ValidationError, 400),
    (NotSerializable, 400),
    (DatabaseNotMigratedError, 503),
    (DefinitionError, 500),  # the web process is misconfigured (e.g. a workflow module it cannot import)
    (RunError, 400),
)


def status_for(exc: RubotError) -> int:
    """The HTTP status for a Rubot error."""
    return next((status for kind, status in _STATUSES if isinstance(exc, kind)), 500)


def invalid_request(message: str) -> ValidationError:
    """A 400 for a malformed form field or JSON body."""
    return ValidationError(message, reason="invalid_request")
