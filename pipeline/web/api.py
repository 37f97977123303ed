"""The JSON API for programmatic approvers, authorised by ``Authorization: Bearer $RUBOT_WEB_API_TOKEN``.

Without a configured token the API is disabled (403) rather than open: approving a run moves real work forward.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from pipeline.errors import RubotError
from pipeline.runs import Approval, Run
from pipeline.web import decisions, reads
from pipeline.web.errors import status_for
from pipeline.web.security import api_token_ok, secure_headers

log = logging.getLogger("rubot.web")

bp = Blueprint("rubot_api", __name__)
bp.after_request(secure_headers)


def json_error(status: int, reason: str, message: str) -> tuple[Response, int]:
    """The one error shape of the API: ``{"error": reason, "message": ...}``."""
    return jsonify({"error": reason, "message": message}), status


@bp.before_request
def _authorise() -> tuple[Response, int] | None:
    configured = current_app.extensions.get(reads.EXTENSION, {}).get("api_token")
    if not configured:
        return json_error(403, "api_disabled", "API disabled: set RUBOT_WEB_API_TOKEN to enable the JSON API")
    if not api_token_ok(configured):
        response, status = json_error(401, "unauthorized", "send Authorization: Bearer <RUBOT_WEB_API_TOKEN>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="rubot"'
        return response, status
    return None


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
    return jsonify(
        {
            "approvals": [
                {
                    **approval_json(item.approval),
                    "run_id": item.run_id,
                    "workflow": item.workflow,
                    "run_status": item.run_status,
                }
                for item in reads.pending_approvals()
            ]
        }
    )


def _act(run_id: str, action: str) -> Response:
    body = decisions.parse_json(request.get_data(cache=False), what="the request body")
    decision = decisions.from_json(body if body is not None else {})
    run = reads.get_run(run_id)
    approval = decisions.apply(run, action, decision)
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
        "decided_at": iso(approval.decided_at),
        "comment": approval.comment,
        "payload": approval.decision_payload,
        "expires_at": iso(approval.expires_at),
        "created_at": iso(approval.created_at),
    }


def run_json(run: Run) -> dict[str, Any]:
    pending = reads.open_approval(run)
    return {
        "id": run.id,
        "workflow": run.workflow,
        "status": run.status,
        "input": run.input,
        "context": run.context,
        "subject": run.subject,
        "state": run.state,
        "output": run.output,
        "error": run.error,
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
        "pending_approval": approval_json(pending) if pending else None,
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
