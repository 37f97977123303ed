"""A decision as the web receives it (form or JSON body), validated, and applied to a run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.runs import Approval, Run
from pipeline.web.errors import invalid_request

ACTIONS = ("approve", "reject", "request-changes", "cancel")
PAST_TENSE = {
    "approve": "approved",
    "reject": "rejected",
    "request-changes": "sent back with requested changes",
    "cancel": "cancelled",
}
# Sized to the database columns (``decided_by`` is 200 characters) so a long value is a 400, not a DB error.
MAX_BY = 200
MAX_COMMENT = 10_000
MAX_ID = 40


@dataclass(frozen=True)
class Decision:
    """Who decided, why, and the optional JSON payload handed to the workflow."""

    by: str
    comment: str | None = None
    payload: Any = None
    approval_id: str | None = None


def from_form(form: Mapping[str, str], *, by: str | None = None) -> Decision:
    """Read a decision from the approval (or cancel) form; the payload field holds JSON text.

    ``by`` is the authenticated principal's id when the app has an authenticator: it wins over the form."""
    return _decision(
        by=by if by is not None else form.get("decided_by"),
        comment=form.get("comment"),
        payload=parse_json(form.get("payload", ""), what="payload"),
        approval_id=form.get("approval_id") or None,
    )


def from_json(body: Any) -> Decision:
    """Read a decision from a JSON API body ``{"by", "comment", "payload", "approval_id"}``."""
    if not isinstance(body, dict):
        raise invalid_request('the request body must be a JSON object like {"by": "you@example.com"}')
    unknown = sorted(set(body) - {"by", "comment", "reason", "payload", "approval_id"})
    if unknown:
        raise invalid_request(f"unknown field(s) in the request body: {', '.join(unknown)}")
    return _decision(
        by=body.get("by"),
        comment=body.get("comment", body.get("reason")),
        payload=body.get("payload"),
        approval_id=body.get("approval_id"),
    )


def parse_json(raw: str | bytes, *, what: str) -> Any:
    """Strict JSON (no NaN/Infinity, which the databases refuse); empty text is ``None``."""
    if not raw or not raw.strip():
        return None
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise invalid_request(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid_request(f"{what} is not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _decision(*, by: Any, comment: Any, payload: Any, approval_id: Any) -> Decision:
    if not isinstance(by, str) or not by.strip():
        raise invalid_request("decided_by is required: say who makes this decision")
    by = by.strip()
    if len(by) > MAX_BY:
        raise invalid_request(f"decided_by is longer than {MAX_BY} characters")
    if comment is not None and not isinstance(comment, str):
        raise invalid_request("comment must be a string")
    if comment is not None:
        comment = comment.strip() or None
    if comment is not None and len(comment) > MAX_COMMENT:
        raise invalid_request(f"comment is longer than {MAX_COMMENT} characters")
    if approval_id is not None and (not isinstance(approval_id, str) or len(approval_id) > MAX_ID):
        raise invalid_request("approval_id must be an approval id string")
    return Decision(by=by, comment=comment, payload=payload, approval_id=approval_id)


def apply(run: Run, action: str, decision: Decision) -> Approval | None:
    """Perform ``action`` on ``run``; Rubot errors (already decided, nothing pending...) propagate."""
    if action == "cancel":
        run.cancel(by=decision.by, reason=decision.comment)
        return None
    decide = {"approve": run.approve, "reject": run.reject, "request-changes": run.request_changes}[action]
    return decide(decision.by, decision.payload, comment=decision.comment, approval_id=decision.approval_id)
