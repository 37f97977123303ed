"""Approvals park a run in SQL and a decision resumes it.

Parking records a pending approval and sets ``waiting_for_approval`` in the step task's transaction; the
compiled segment ends at the approval step, so no broker message, worker or result key waits with it.
A decision is recorded once, with the ledger row of the approval step and the state entry
``state[step] = {"decision", "decided_by", "comment", "payload"}`` in the same transaction; then a
``rubot.resume`` message re-dispatches the rest of the plan from SQL. An approval nobody decided in time is
rejected through the same :func:`record_decision` by the expiry sweep (:mod:`pipeline.engine.expiry`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from celery import chain
from sqlalchemy.orm import Session

from pipeline.auth import authorize
from pipeline.auth.principal import Principal
from pipeline.definitions import schemas
from pipeline.definitions.dsl import AgentStep, ApprovalStep
from pipeline.definitions.registry import workflow_of
from pipeline.engine import dispatch, evidence, revisions, transitions
from pipeline.engine.compiler import TOOL_TASK, TURN_TASK
from pipeline.engine.snapshots import Approval
from pipeline.engine.transitions import Outcome
from pipeline.errors import ApprovalAlreadyDecided, ApprovalError, ApprovalForbidden, NoPendingApproval
from pipeline.notify import link_uses
from pipeline.store import queries
from pipeline.store.tables import (
    APPROVED,
    CHANGES_REQUESTED,
    PENDING,
    REJECTED,
    WAITING,
    ApprovalRow,
    RunRow,
    utcnow,
)

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

DECISIONS = (APPROVED, REJECTED, CHANGES_REQUESTED)


def park(session: Session, run: RunRow, spec: ApprovalStep) -> Outcome:
    """Record a pending approval for ``spec`` (once) and put the run in ``waiting_for_approval``.

    The approval carries what its approvers are shown (:mod:`pipeline.engine.evidence`): the step's summary and
    the run's state, plus — in a later round of a revise loop — what changed since the last round.
    """
    existing = queries.approval_for_step(session, run.id, spec.name)
    if existing is None:
        now = utcnow()
        context = run.context if isinstance(run.context, dict) else {}
        state = dict(run.state or {})
        round_, previous = revisions.current_round(session, run.id, spec.name)
        transitions.request_approval(
            session,
            run,
            step=spec.name,
            role=spec.role,  # type: ignore[arg-type]
            reason=spec.reason,
            assignee=spec.assignee,
            expires_at=now + spec.expires_in if spec.expires_in else None,
            remind_at=now + spec.sla if spec.sla else None,
            summary=evidence.summarize(
                spec.summary, {"input": run.input, "state": state, "context": context}, positional=True
            ),
            evidence=evidence.step_evidence(state, round=round_, previous=previous),
        )
    else:
        transitions.wait_for_approval(session, run, spec.name)
    return Outcome.PARK


#: ``decision_payload`` when the decider gave none: who decided, as DESIGN §3's example output shows.
DEFAULT_PAYLOAD_KEY = {APPROVED: "approved_by", REJECTED: "rejected_by", CHANGES_REQUESTED: "requested_by"}


def decide(
    runtime: Runtime,
    run_id: str,
    decision: str,
    *,
    by: Principal,
    trusted: bool = False,
    payload: Any = None,
    comment: str | None = None,
    approval_id: str | None = None,
    link_id: str | None = None,
) -> Approval:
    """Record ``decision`` by ``by`` on the run's pending approval and resume or end the run accordingly.

    Unless the caller is ``trusted`` (it vouches for the decider: Python code passing a plain string, the CLI
    without ``--role``), ``by`` must hold the approval's role or be its assignee, and every ``approvers`` hook must
    agree (:mod:`pipeline.auth.authorize`). The check runs here, in the transaction that records the decision and
    under the run's row lock, so what was checked is what gets decided. A refusal is committed as an
    ``approval.refused`` event and raised as :class:`ApprovalForbidden`; nothing else changes.

    ``link_id`` is the id of the signed link the decision came through: it is recorded in the same transaction,
    and a link already used is refused (single use).
    """
    if decision not in DECISIONS:
        raise ApprovalError(f"decision must be one of {DECISIONS}, got {decision!r}")
    if not isinstance(by, Principal):
        raise ApprovalError("a decision needs the principal who makes it")
    payload = schemas.to_json(payload, what="decision payload")
    if payload is None:
        payload = {DEFAULT_PAYLOAD_KEY[decision]: by.id}

    refused: str | None = None
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        approval = _pending(s, run, approval_id)
        refused = authorize.refusal(_check(runtime, run, approval, by), _hooks(runtime, run, approval), trusted=trusted)
        if refused is None and link_id is not None:
            refused = link_uses.use(s, link_id, approval, by)
        if refused is not None:
            transitions.refuse_approval(s, run, approval, principal=by.as_json(), why=refused)
        else:
            send = record_decision(
                runtime, s, run, approval, decision, by=by.id, principal=by.as_json(), payload=payload, comment=comment
            )
            result = Approval.from_row(approval)
    if refused is not None:
        raise ApprovalForbidden(f"{by.id} may not decide approval {approval.id} of run {run_id}: {refused}")
    send()
    return result


def _check(runtime: Runtime, run: RunRow, approval: ApprovalRow, principal: Principal) -> authorize.ApproverCheck:
    context = run.context if isinstance(run.context, dict) else {}
    return authorize.ApproverCheck(
        principal=principal,
        run_id=run.id,
        workflow=run.workflow,
        step=approval.step,
        kind=approval.kind or "step",
        role=approval.role,
        assignee=approval.assignee,
        launched_by=run.user_id,
        context=context,
        tool=approval.tool,
        tool_input=approval.tool_input,
    )


def _hooks(runtime: Runtime, run: RunRow, approval: ApprovalRow) -> list[Callable[..., Any]]:
    """The ``approvers`` hooks that apply: the workflow's, then the step's, or the tool's for a tool call."""
    workflow = workflow_of(runtime, run.workflow)
    found = [getattr(workflow, "approvers", None)]
    if (approval.kind or "step") == "step":
        found.append(getattr(workflow.step_named(approval.step), "approvers", None))
    else:
        match = _TOOL_OP.match(approval.step)
        spec = workflow.step_named(match["step"]) if match else None
        tool = spec.agent.tool_named(approval.tool) if isinstance(spec, AgentStep) and approval.tool else None
        found.append(getattr(tool, "approvers", None))
    return [hook for hook in found if hook is not None]


def refusal_for(runtime: Runtime, run: RunRow, approval: ApprovalRow, principal: Principal) -> str | None:
    """Why ``principal`` may not decide ``approval`` now, or ``None`` (what the inbox and the approval page show;
    :func:`decide` checks again when the decision is recorded)."""
    return authorize.refusal(_check(runtime, run, approval, principal), _hooks(runtime, run, approval))


def record_decision(
    runtime: Runtime,
    s: Session,
    run: RunRow,
    approval: ApprovalRow,
    decision: str,
    *,
    by: str,
    principal: dict[str, Any] | None = None,
    payload: Any = None,
    comment: str | None = None,
    failure: Mapping[str, Any] | None = None,
) -> Callable[[], None]:
    """Write ``decision`` on the pending ``approval`` in the caller's transaction, which holds the run lock.

    Returns the follow-up to call once that transaction has committed (sending earlier could let a worker
    read the run before the decision is visible): the approved or refused tool call and the next turn, or
    the resume of the run; a no-op when the decision ended the run. ``failure`` adds to (or overrides) the
    fields of ``run.error`` when the decision fails the run, e.g. ``{"reason": "approval_expired"}``.
    """
    if payload is None:
        payload = {DEFAULT_PAYLOAD_KEY[decision]: by}
    if approval.kind == "tool_call":
        step, n, call_id = _decide_tool_call(s, run, approval, decision, by, principal, comment, payload)
        return partial(_send_tool_call, runtime, run.id, step, n, call_id)
    return _decide_step(runtime, s, run, approval, decision, by, principal, comment, payload, failure)


def _send_tool_call(runtime: Runtime, run_id: str, step: str, n: int, call_id: str) -> None:
    # The tool task reads the decision (run exactly the approved call, or tell the model it was refused);
    # the next turn goes on once every call of the turn has a result.
    queue = runtime.settings.queue
    chain(
        runtime.app.signature(TOOL_TASK, args=(run_id, step, n, call_id), immutable=True, queue=queue),
        runtime.app.signature(TURN_TASK, args=(run_id, step, n + 1), immutable=True, queue=queue),
    ).apply_async()


def _nothing() -> None:
    return None


def _pending(s: Session, run: RunRow, approval_id: str | None) -> ApprovalRow:
    approval = queries.pending_approval(s, run.id, approval_id)
    if approval is None:
        decided = [a for a in queries.approvals(s, run.id) if approval_id in (None, a.id)]
        if decided:
            last = decided[-1]
            by_whom = f" by {last.decided_by}" if last.decided_by else ""
            raise ApprovalAlreadyDecided(f"approval {last.id} of run {run.id} was already {last.status}{by_whom}")
        raise NoPendingApproval(f"run {run.id} has no pending approval (status {run.status})")
    if run.status != WAITING:
        raise NoPendingApproval(f"run {run.id} is {run.status}, not waiting for approval")
    return approval


def _decide_step(
    runtime: Runtime,
    s: Session,
    run: RunRow,
    approval: ApprovalRow,
    decision: str,
    by: str,
    principal: dict[str, Any] | None,
    comment: str | None,
    payload: Any,
    failure: Mapping[str, Any] | None,
) -> Callable[[], None]:
    """An approval_step's decision: ledger row and state entry, and the next segment decided in the same
    transaction (no ``rubot.resume`` hop); returns what to send once it commits."""
    step = approval.step
    spec = workflow_of(runtime, run.workflow).step_named(step)
    record = {
        "decision": decision,
        "decided_by": by,
        "comment": comment,
        "payload": payload,
        "approval_id": approval.id,
        "round": int((approval.evidence or {}).get("round", 1)),
    }
    delta = {"set": {step: record}, "unset": []}
    transitions.decide_approval(
        s, run, approval, decision, by=by, principal=principal, comment=comment, payload=payload
    )
    outcome = getattr(spec, "on_reject" if decision == REJECTED else "on_changes_requested", "continue")
    if decision == CHANGES_REQUESTED and outcome == "revise":
        return _revise(s, runtime, run, approval, spec, record, by)
    transitions.record(s, run, step, "approval", delta)
    run.state = transitions.apply(run.state, delta)
    if decision == APPROVED or outcome == "continue":
        transitions.resume(s, run, step, decision=decision)
        return dispatch.plan_next(s, runtime, run, workflow_of(runtime, run.workflow))
    error = {
        "reason": decision,
        "message": f"{step} was {decision} by {by}",
        "comment": comment,
        "step": step,
    }
    transitions.fail(s, run, {**error, **(failure or {})}, step=step)
    return _nothing


def _revise(
    s: Session, runtime: Runtime, run: RunRow, approval: ApprovalRow, spec: Any, record: dict[str, Any], by: str
) -> Callable[[], None]:
    """Changes requested on a revise step: another round from ``revise_from``, or the end of the run."""
    step = approval.step
    if revisions.rounds_done(s, run.id, step) >= spec.max_revisions:
        transitions.record(s, run, step, "approval", {"set": {step: record}, "unset": []})
        run.state = transitions.apply(run.state, {"set": {step: record}, "unset": []})
        transitions.fail(
            s,
            run,
            {
                "reason": revisions.REASON,
                "message": f"{step}: changes were requested by {by} after {spec.max_revisions} revision(s); "
                "no revisions are left",
                "comment": record["comment"],
                "step": step,
                "max_revisions": spec.max_revisions,
            },
            step=step,
        )
        return _nothing
    workflow = workflow_of(runtime, run.workflow)
    transitions.start_revision(s, run, approval, workflow.steps_from(spec.revise_from, to=step), record)
    return dispatch.plan_next(s, runtime, run, workflow)


_TOOL_OP = re.compile(r"^(?P<step>[^/]+)/turn-(?P<n>\d+)/tool-(?P<call>.+)$")


def _decide_tool_call(
    s: Session,
    run: RunRow,
    approval: ApprovalRow,
    decision: str,
    by: str,
    principal: dict[str, Any] | None,
    comment: str | None,
    payload: Any,
) -> tuple[str, int, str]:
    match = _TOOL_OP.match(approval.step)
    if match is None:
        raise ApprovalError(f"approval {approval.id} names no tool call ({approval.step!r})")
    transitions.decide_approval(
        s,
        run,
        approval,
        decision,
        by=by,
        principal=principal,
        comment=comment,
        payload=payload,
        args_hash=approval.args_hash,
    )
    others = [a for a in queries.approvals(s, run.id) if a.status == PENDING and a.id != approval.id]
    if not others:
        transitions.resume(s, run, approval.step, decision=decision)
    return match["step"], int(match["n"]), match["call"]
