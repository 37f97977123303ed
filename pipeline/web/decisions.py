"""A decision as the web receives it (form or JSON body), validated, and applied to a run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from werkzeug.exceptions import Forbidden

from pipeline.auth.principal import Principal
from pipeline.runs import Approval, Run
from pipeline.web.errors import invalid_request

ACTIONS = ("approve", "reject", "request-changes", "cancel")
PAST_TENSE = {
    "approve": "approved",
    "reject": "rejected",
    "request-changes": "sent back with requested changes",
    "cancel": "cancelled",
}
MAX_COMMENT = 10_000
MAX_ID = 40


@dataclass(frozen=True)
class Decision:
    """Why, and the optional JSON payload handed to the workflow. Who decides is the request's principal,
    established by the server; a form or body never says it."""

    comment: str | None = None
    payload: Any = None
    approval_id: str | None = None


def from_form(form: Mapping[str, str]) -> Decision:
    """Read a decision from the approval (or cancel) form; the payload field holds JSON text."""
    return _decision(
        comment=form.get("comment"),
        payload=parse_json(form.get("payload", ""), what="payload"),
        approval_id=form.get("approval_id") or None,
    )


def from_json(body: Any) -> Decision:
    """Read a decision from a JSON API body ``{"comment", "payload", "approval_id"}``."""
    if not isinstance(body, dict):
        raise invalid_request('the request body must be a JSON object like {"comment": "fine"}')
    if "by" in body:
        raise invalid_request('"by" is not accepted: the decision is made by the owner of the API token')
    unknown = sorted(set(body) - {"comment", "reason", "payload", "approval_id"})
    if unknown:
        raise invalid_request(f"unknown field(s) in the request body: {', '.join(unknown)}")
    return _decision(
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


def _decision(*, comment: Any, payload: Any, approval_id: Any) -> Decision:
    if comment is not None and not isinstance(comment, str):
        raise invalid_request("comment must be a string")
    if comment is not None:
        comment = comment.strip() or None
    if comment is not None and len(comment) > MAX_COMMENT:
        raise invalid_request(f"comment is longer than {MAX_COMMENT} characters")
    if approval_id is not None and (not isinstance(approval_id, str) or len(approval_id) > MAX_ID):
        raise invalid_request("approval_id must be an approval id string")
    return Decision(comment=comment, payload=payload, approval_id=approval_id)


def may_cancel(run: Run, principal: Principal, admin_role: str, operator_role: str | None = None) -> bool:
    """From the web, a run is cancelled by whoever launched it or by a holder of the admin (or operator) role."""
    if operator_role is not None and principal.has_role(operator_role):
        return True
    return principal.has_role(admin_role) or (run.user_id is not None and run.user_id == principal.id)


def apply(
    run: Run,
    action: str,
    decision: Decision,
    principal: Principal,
    *,
    admin_role: str,
    link_id: str | None = None,
    operator_role: str | None = None,
) -> Approval | None:
    """Perform ``action`` on ``run`` as ``principal``; Rubot errors (forbidden, already decided...) propagate."""
    if action == "cancel":
        if not may_cancel(run, principal, admin_role, operator_role):
            raise Forbidden(
                f"{principal.id} may not cancel run {run.id}: only whoever launched it or a holder of the "
                f"{admin_role!r} role may"
            )
        run.cancel(by=principal.id, reason=decision.comment)
        return None
    verb = {"approve": "approved", "reject": "rejected", "request-changes": "changes_requested"}[action]
    return run._decide(
        verb, principal, decision.payload, decision.comment, decision.approval_id, principal.via, link_id=link_id
    )
