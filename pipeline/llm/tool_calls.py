"""Where a model's tool call is guarded: task ``rubot.agent_tool``, one per tool call of a turn.

The model only advises. Before anything runs, a call is answered with an error result (recorded, sent back to
the model, counted on the run and visible in the events) when the tool is unknown, the same call was already
made in this step, the run's user or the workflow's policy does not allow it, or the arguments do not match
the tool's schema. A call the tool says needs a person parks the run with an approval bound to a hash of the
exact arguments. A side-effecting tool gets a *claim* row in the ledger, committed before it runs, so a
redelivered task never runs it a second time. The model is shown the tool's ``for_model`` projection of the result
(the full result stays in the ledger row, under ``output``); results over the agent's cap are stored and the model
gets a token for ``read_data``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.definitions.tool import Tool, ToolContext
from pipeline.engine import compiler, evidence, leases, recovery, transitions
from pipeline.engine.leases import Claim
from pipeline.errors import InvalidToolInput, RubotError, ToolTimeout
from pipeline.llm import policy as policies
from pipeline.models.base import FINAL_ANSWER_TOOL, ModelResponse, ToolCall
from pipeline.store import queries
from pipeline.store.tables import (
    APPROVED,
    CLAIMED,
    DONE,
    PENDING,
    RUNNING,
    WAITING,
    BlobRow,
    EffectRow,
    utcnow,
)

if TYPE_CHECKING:
    from pipeline.definitions.agent import Agent
    from pipeline.definitions.workflow import Workflow
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.tools")
TOOL_TASK = compiler.TOOL_TASK
READ_DATA_TOOL = "read_data"
DUPLICATE = "You already called {name} with these arguments — try a different approach."


def tool_op(step: str, n: int, call_id: str) -> str:
    return f"{step}/turn-{n}/tool-{call_id}"


def args_hash(name: str, arguments: dict[str, Any]) -> str:
    canonical = json.dumps({"tool": name, "input": arguments}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Answer:
    """A result for the model that is decided without running the tool."""

    content: str
    event: str
    counter: str | None = None
    details: Any = None
    #: The tool's full result when the model was shown a projection of it (``Tool.for_model``); kept in the ledger.
    output: Any = None
    projected: bool = False


def run_tool_call(runtime: Runtime, run_id: str, step: str, n: int, call_id: str, *, task_id: str | None) -> bool:
    """Handle one tool call; False when the run now waits for a person (send no next turn)."""
    from pipeline.definitions.registry import workflow_of

    op = tool_op(step, n, call_id)
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        existing = queries.get_effect(s, run_id, op)
        if existing is not None and existing.status == DONE:
            return True
        if run.status not in (RUNNING, WAITING):
            queries.add_event(s, run_id, "tool.skipped", step, op_key=op, status=run.status)
            return True
        workflow = workflow_of(runtime, run.workflow)
        agent = workflow.agent_step(step).agent
        turn = ModelResponse.from_json(queries.effect(s, run_id, f"{step}/turn-{n}").result)
        call = next(c for c in turn.tool_calls if c.id == call_id)
        user = (run.context or {}).get("user") if isinstance(run.context, dict) else None
        if existing is not None and existing.status == CLAIMED:
            verdict = _interrupted(runtime, s, run, agent, op, call, task_id)
            if verdict != "retry":
                return verdict == "held"
            s.delete(existing)  # an idempotent tool: run it again under a fresh claim
            s.flush()
        if call.name == READ_DATA_TOOL:
            _record(s, run, op, call, _read_data(s, run_id, call.input, agent.result_cap_bytes), is_error=None)
            return True
        tools = {t.name: t for t in agent.tool_classes()}
        tool_cls = tools.get(call.name)
        answer = _screen(s, run, workflow, agent, step, n, call, tool_cls, user)
        if answer is not None:
            _record(s, run, op, call, answer, is_error=True)
            return True
        assert tool_cls is not None
        tool = tool_cls(ToolContext(run_id=run_id, op_key=op, user=user))
        reason = tool.requires_approval(**tool_cls.validate_input(call.input))
        if reason:
            gate = _approval_gate(s, run, op, call, tool_cls, reason, model_reason=turn.text)
            if isinstance(gate, Answer):
                _record(s, run, op, call, gate, is_error=True)
                return True
            if gate:
                return False
        if tool_cls.side_effects:
            # Claimed (with a lease) before the effect, so no other delivery can run it while this one lives.
            _, claimed = leases.claim(
                s, run_id, op, "tool_call", task_id=task_id, lease_seconds=runtime.settings.lease_seconds
            )
            claimed.result = {"tool": call.name}
            queries.add_event(s, run_id, "tool.claimed", step, op_key=op, tool=call.name)

    return _run_claimed(runtime, run_id, op, call, tool, agent)


def _run_claimed(runtime: Runtime, run_id: str, op: str, call: ToolCall, tool: Any, agent: type[Agent]) -> bool:
    with leases.heartbeat(runtime, run_id, op):
        try:
            content, is_error, event, output = _execute(tool, call)
        except ToolTimeout as exc:  # only a side-effecting tool's timeout gets here (see _execute)
            with runtime.db.transaction() as s:
                run = queries.lock_run(s, run_id)
                queries.add_event(s, run_id, "tool.timed_out", op.split("/")[0], op_key=op, **exc.as_dict())
                recovery.needs_reconciliation(
                    s,
                    run,
                    op,
                    f"the call to {call.name}",
                    happened=f"timed out after {exc.details['timeout_seconds']:g}s",
                )
            return False
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        row = queries.get_effect(s, run_id, op)
        if row is not None and row.status == DONE:
            return True  # a concurrent delivery recorded first (only possible for tools without side effects)
        _record(
            s,
            run,
            op,
            call,
            Answer(
                _capped(s, run_id, op, content, agent.result_cap_bytes),
                event,
                output=output,
                projected=type(tool).projects_results() and output is not None,
            ),
            is_error=is_error,
            row=row,
        )
    return True


def _interrupted(
    runtime: Runtime, s: Any, run: Any, agent: type[Agent], op: str, call: ToolCall, task_id: str | None
) -> str:
    """A side-effecting call is claimed: "held" (its holder lives), "set_aside" or "retry" (idempotent)."""
    claim, _ = leases.claim(s, run.id, op, "tool_call", task_id=task_id, lease_seconds=runtime.settings.lease_seconds)
    if claim is Claim.HELD:
        queries.add_event(s, run.id, "tool.held_elsewhere", op.split("/")[0], op_key=op, task_id=task_id)
        return "held"
    tool_cls = agent.tool_named(call.name)
    if tool_cls is None or not tool_cls.idempotent:
        recovery.needs_reconciliation(s, run, op, f"the call to {call.name}")
        return "set_aside"
    if not recovery.count_recovery(s, run, op, "lease expired", runtime.settings.max_recoveries):
        return "set_aside"
    return "retry"


def _screen(
    s: Any,
    run: Any,
    workflow: type[Workflow],
    agent: type[Agent],
    step: str,
    n: int,
    call: ToolCall,
    tool_cls: type[Tool] | None,
    user: Any,
) -> Answer | None:
    """The checks that answer a call without running it, in order."""
    if tool_cls is None:
        available = ", ".join([t.name for t in agent.tool_classes()] + [READ_DATA_TOOL, FINAL_ANSWER_TOOL])
        return Answer(f"Unknown tool {call.name!r}. Available tools: {available}.", "tool.unknown", "unknown_tool")
    if _seen_before(s, run.id, step, n, call):
        return Answer(DUPLICATE.format(name=call.name), "tool.duplicate", "duplicate_tool_call")
    check = policies.ToolCallCheck(
        run_id=run.id, workflow=run.workflow, step=step, tool=call.name, input=call.input, user=user
    )
    reason = policies.refusal(tool_cls(None), check, (workflow, agent))
    if reason is not None:
        return Answer(f"Not permitted: {reason}.", "tool.denied", "tool_denied")
    try:
        tool_cls.validate_input(call.input)
    except InvalidToolInput as exc:
        return Answer(
            f"Invalid arguments for {call.name}: {json.dumps(exc.details, sort_keys=True)}",
            "tool.invalid_input",
            "invalid_tool_input",
            details=exc.details,
        )
    return None


def _seen_before(s: Any, run_id: str, step: str, n: int, call: ToolCall) -> bool:
    signature = args_hash(call.name, call.input)
    ledger = queries.effects_under(s, run_id, f"{step}/")
    for k in range(1, n + 1):
        row = ledger.get(f"{step}/turn-{k}")
        if row is None or row.result is None:
            continue
        for earlier in ModelResponse.from_json(row.result).tool_calls:
            if k == n and earlier.id == call.id:
                break  # calls after this one in the same turn do not count
            if args_hash(earlier.name, earlier.input) == signature:
                return True
    return False


def _approval_gate(
    s: Any, run: Any, op: str, call: ToolCall, tool_cls: type[Tool], reason: str, *, model_reason: str
) -> Answer | bool | None:
    """Park for a person (True), refuse (an Answer), or let an approved call through (None).

    The approval shows its approvers the tool, the exact arguments, their hash (what the decision is bound to),
    the model's stated reason and the tool's ``approval_summary``.
    """
    approval = queries.approval_for_step(s, run.id, op)
    digest = args_hash(call.name, call.input)
    if approval is None:
        now = utcnow()
        transitions.request_approval(
            s,
            run,
            step=op,
            role=tool_cls.approval_role,
            reason=reason,
            kind="tool_call",
            tool_input=call.input,
            args_hash=digest,
            expires_at=tool_cls.approval_expires_at(now),
            remind_at=tool_cls.approval_remind_at(now),
            tool=call.name,
            summary=evidence.summarize(tool_cls.approval_summary, dict(call.input)),
            evidence=evidence.tool_evidence(model_reason),
        )
        return True
    if approval.status == PENDING:
        return True
    if approval.args_hash != digest:
        return Answer(
            "The approval on record is for different arguments; this call was not run.", "tool.approval_mismatch"
        )
    if approval.status != APPROVED:
        comment = f": {approval.comment}" if approval.comment else ""
        return Answer(
            f"A person ({approval.decided_by}) {approval.status.replace('_', ' ')} this call{comment}. It was not run.",
            "tool.rejected",
        )
    return None


def _execute(tool: Any, call: ToolCall) -> tuple[str, bool, str, Any]:
    """(what the model is shown, is it an error, the event, the full output when it differs from what is shown)."""
    try:
        output = tool.invoke(call.input)
    except ToolTimeout:
        if type(tool).side_effects:
            raise  # it may still act: the run is handed to a person, the model is not told it failed
        return f"{call.name} did not finish within {type(tool).timeout:g}s.", True, "tool.timed_out", None
    except RubotError as exc:
        details = f" {json.dumps(exc.details, sort_keys=True, default=str)}" if exc.details else ""
        return f"{call.name} failed: {exc.message}{details}", True, "tool.error", None
    except Exception as exc:  # a bug in the tool: tell the model it failed, keep the details in the log
        log.exception("tool %s raised", call.name)
        return f"{call.name} failed with {type(exc).__name__}.", True, "tool.error", None
    if not type(tool).projects_results():
        return json.dumps(output, sort_keys=True), False, "tool.completed", None
    try:
        shown = json.dumps(tool.for_model(output), sort_keys=True)
    except Exception as exc:
        # The tool ran (its effect happened; the result is kept). The model is not shown the unprojected result
        # instead: a projection may exist to keep fields from it.
        log.exception("for_model of tool %s raised", call.name)
        return (
            f"{call.name} ran, but its result could not be prepared for you ({type(exc).__name__}).",
            True,
            "tool.projection_failed",
            output,
        )
    return shown, False, "tool.completed", output


def _capped(s: Any, run_id: str, op: str, content: str, cap: int) -> str:
    size = len(content.encode())
    if size <= cap:
        return content
    token = queries.new_id("blob")
    s.add(BlobRow(id=token, run_id=run_id, op_key=op, content=content, size=size, created_at=utcnow()))
    pages = math.ceil(size / cap)
    return json.dumps(
        {
            "stored_result": token,
            "bytes": size,
            "pages": pages,
            "preview": content[:300],
            "note": f"The result is too large to show ({size} bytes). Call read_data with this token "
            f"and page 1..{pages} to read it.",
        }
    )


def _read_data(s: Any, run_id: str, arguments: dict[str, Any], cap: int) -> Answer:
    token, page = arguments.get("token"), arguments.get("page", 1)
    blob = s.get(BlobRow, token) if isinstance(token, str) else None
    if blob is None or blob.run_id != run_id:  # tokens of other runs do not exist for this one
        return Answer(f"No stored result with token {token!r}.", "tool.read_data_unknown")
    pages = max(1, math.ceil(blob.size / cap))
    if not isinstance(page, int) or not 1 <= page <= pages:
        return Answer(f"page must be an integer from 1 to {pages}.", "tool.read_data_bad_page")
    data = blob.content.encode()[(page - 1) * cap : page * cap].decode(errors="replace")
    return Answer(json.dumps({"token": token, "page": page, "pages": pages, "data": data}), "tool.read_data")


def _record(
    s: Any, run: Any, op: str, call: ToolCall, answer: Answer, *, is_error: bool | None, row: EffectRow | None = None
) -> None:
    error = is_error if is_error is not None else answer.event != "tool.read_data"
    if answer.counter:
        queries.bump_counter(run, answer.counter)
    data: dict[str, Any] = {}
    if error:
        data["message"] = answer.content[:500]
    if answer.details is not None:
        data["details"] = answer.details
    result: dict[str, Any] = {"content": answer.content, "is_error": error}
    if answer.projected:
        result["output"] = answer.output  # the full result, for people; the model saw `content`
        data["projected"] = True
    transitions.answer_tool_call(s, run, op, call.name, result, event=answer.event, row=row, **data)
