"""The JSON API for programmatic approvers, authenticated by personal API tokens (``rubot tokens create``).

Every request needs ``Authorization: Bearer <token>``; the token's owner is the principal who reads and decides,
with the token's roles (a body never says who decides). Without a valid, unrevoked token the answer is 401.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from werkzeug.exceptions import Forbidden

from pipeline.auth.principal import Principal
from pipeline.auth.tokens import TokenAuthenticator
from pipeline.errors import RubotError
from pipeline.redact import redact
from pipeline.runs import Approval, Run
from pipeline.web import auth, decisions, reads
from pipeline.web.errors import status_for
from pipeline.web.security import secure_headers

log = logging.getLogger("rubot.web")

bp = Blueprint("rubot_api", __name__)
bp.after_request(secure_headers)


def json_error(status: int, reason: str, message: str) -> tuple[Response, int]:
    """The one error shape of the API: ``{"error": reason, "message": ...}``."""
    return jsonify({"error": reason, "message": message}), status


@bp.before_request
def _authenticate() -> tuple[Response, int] | None:
    principal = TokenAuthenticator(lambda: reads.runtime().db)(request)
    if principal is None:
        response, status = json_error(
            401,
            "unauthorized",
            "send Authorization: Bearer <token> with a personal API token (create one with `rubot tokens create`); "
            "this one is missing, unknown or revoked",
        )
        response.headers["WWW-Authenticate"] = 'Bearer realm="rubot"'
        return response, status
    g.rubot_api_principal = principal
    return None


def principal() -> Principal:
    return g.rubot_api_principal


@bp.errorhandler(Forbidden)
def _forbidden(exc: Forbidden) -> tuple[Response, int]:
    return json_error(403, "forbidden", exc.description or "forbidden")


@bp.errorhandler(RubotError)
def _rubot_error(exc: RubotError) -> tuple[Response, int]:
    status = status_for(exc)
    if status >= 500:
        log.error("API request %s %s failed: %s", request.method, request.path, exc, exc_info=exc)
    return json_error(status, exc.reason, exc.message)


@bp.get("/runs/<run_id>")
def get_run(run_id: str) -> Response:
    return jsonify(run_json(reads.get_run(run_id)))


@bp.get("/approvals")
def pending() -> Response:
    """The pending approvals the token's owner may decide (and only those)."""
    return jsonify(
        {
            "approvals": [
                {
                    **approval_json(item.approval),
                    "run_id": item.run_id,
                    "workflow": item.workflow,
                    "run_status": item.run_status,
                }
                for item in reads.pending_approvals(principal())
            ]
        }
    )


def _act(run_id: str, action: str) -> Response:
    body = decisions.parse_json(request.get_data(cache=False), what="the request body")
    decision = decisions.from_json(body if body is not None else {})
    run = reads.get_run(run_id)
    approval = decisions.apply(run, action, decision, principal(), admin_role=auth.admin_role())
    answer: dict[str, Any] = {"id": run.id, "status": run.status}
    if approval is not None:
        answer["approval"] = approval_json(approval)
    return jsonify(answer)


def _register_actions() -> None:
    for action in decisions.ACTIONS:
        endpoint = f"{action.replace('-', '_')}_run"

        def view(run_id: str, _action: str = action) -> Response:
            return _act(run_id, _action)

        view.__name__ = endpoint
        bp.add_url_rule(f"/runs/<run_id>/{action}", endpoint=endpoint, view_func=view, methods=["POST"])


_register_actions()


# --- serialisation: only what ``Run`` exposes --------------------------------------------------------------------


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC (SQLite hands back naive datetimes that are UTC already)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def approval_json(approval: Approval) -> dict[str, Any]:
    return {
        "id": approval.id,
        "step": approval.step,
        "role": approval.role,
        "reason": approval.reason,
        "assignee": approval.assignee,
        "status": approval.status,
        "decided_by": approval.decided_by,
        "principal": approval.principal,
        "decided_at": iso(approval.decided_at),
        "comment": approval.comment,
        "payload": redact(approval.decision_payload),
        "expires_at": iso(approval.expires_at),
        "reminded_at": iso(approval.reminded_at),
        "created_at": iso(approval.created_at),
        "kind": approval.kind,
        "summary": approval.summary,
        "tool": approval.tool,
        "tool_input": approval.approver_input,
        "args_hash": approval.args_hash,
        "evidence": approval.evidence,
        "round": approval.round,
    }


def _with_transcript(run: Run, approval: Approval) -> dict[str, Any]:
    data = approval_json(approval)
    if approval.kind == "tool_call":
        data["transcript"] = reads.transcript(run.id, approval.step)
    return data


def run_json(run: Run) -> dict[str, Any]:
    pending = reads.open_approval(run)
    return {
        "id": run.id,
        "workflow": run.workflow,
        "status": run.status,
        # Values under secret-looking keys never leave through the API (as on the pages and in events).
        "input": redact(run.input),
        "context": redact(run.context),
        "subject": redact(run.subject),
        "state": redact(run.state),
        "output": redact(run.output),
        "error": redact(run.error),
        "tokens": {
            "input": run.tokens.input_tokens,
            "output": run.tokens.output_tokens,
            "cache_write": run.tokens.cache_write_tokens,
            "cache_read": run.tokens.cache_read_tokens,
            "total": run.tokens.total,
        },
        "cost_micros": run.cost_micros,
        "cost_usd": run.cost_usd,
        "estimated_cost_micros": run.estimated_cost_micros,
        "estimated_cost_usd": run.estimated_cost_usd,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "pending_approval": _with_transcript(run, pending) if pending else None,
        "approvals": [approval_json(a) for a in run.approvals],
        "ledger": [
            {
                "op_key": e.op_key,
                "kind": e.kind,
                "created_at": iso(e.created_at),
                **({"estimated": True, "cost_micros": e.result.get("cost_micros")} if _estimated(e) else {}),
            }
            for e in run.effects
        ],
        "events": [
            {"id": e.id, "type": e.type, "step": e.step, "data": e.data, "created_at": iso(e.created_at)}
            for e in run.events
        ],
    }


def _estimated(effect: Any) -> bool:
    return effect.kind == "model_charge_estimate" and isinstance(effect.result, dict)
