"""The one state machine: every change of a run's status and of a ledger row's state, with its event.

Other modules decide *when* a run moves; this module is the only one that moves it. Each function takes the
session of the caller's transaction and the run row locked by it (``queries.lock_run``), changes the rows,
writes the event that explains the change in the same transaction, and queues the lifecycle hook
(:mod:`pipeline.engine.hooks`) that fires once the transaction commits.

Run statuses and the moves between them::

    queued ──► running ──► completed
      │          │ ▲ ▲
      │          │ │ └──── waiting_for_child     (an operation's run waits for a child run; the child's
      │          ▼ │ (decision)                   transition to rest moves it back to running)
      │        waiting_for_approval
      │          │
      └──────────┴──► failed | cancelled                       (final)
                 └──► needs_reconciliation | dead_letter ──► running   (a person reconciles or retries)

A run launched by an operation's routing names its parent (``parent_run_id``); whenever such a run comes to rest
(final, or waiting for an approval) and its parent waits for a child, the parent goes back to ``running`` in the
same transaction (event ``run.resumed`` with the child's id), and the ``run_resumed`` hook of
:mod:`pipeline.engine.children` dispatches the parent's routing again once that commits. A lost dispatch leaves the
parent ``running`` with nothing claimed: the sweeper's stall check dispatches it again.

Ledger rows (``rubot_effects``, unique per ``(run_id, op_key)``) are ``claimed`` (with a lease, see
:mod:`pipeline.engine.leases`) while work is in flight and ``done`` once its result is recorded here.

The package is split by what moves, and re-exports everything (callers write ``transitions.fail(...)``):
:mod:`.runs` (status moves, the table of allowed moves, batches), :mod:`.ledger` (recorded results and step
events, branch decisions, children launched, replays seeded), :mod:`.approvals`, :mod:`.agents` (model turns,
tool-call answers, estimated charges, batch requests) and :mod:`.hotpath` (a step recorded in one transaction).
"""

from __future__ import annotations

from pipeline.engine.transitions.agents import (
    answer_tool_call,
    note_batch_submitted,
    record_estimated_charge,
    record_model_turn,
    settle_batch_request,
)
from pipeline.engine.transitions.approvals import (
    approval_info,
    decide_approval,
    escalate_approval,
    note_approval_expired,
    refuse_approval,
    remind_approval,
    request_approval,
    start_revision,
)
from pipeline.engine.transitions.hotpath import (
    Recorded,
    record_step,
    record_step_at_once,
)
from pipeline.engine.transitions.ledger import (
    apply,
    complete_step,
    decide_branch,
    diff,
    fail_step,
    launch_child,
    loop_back,
    record,
    seed_replay,
    skip_step,
    step_info,
    step_started,
)
from pipeline.engine.transitions.runs import (
    RESTING,
    RUN_MOVES,
    SET_ASIDE,
    Outcome,
    batch_failed,
    batch_launched,
    cancel,
    complete,
    fail,
    reject_launch,
    reopen,
    resume,
    set_aside,
    start,
    start_batch,
    wait_for_approval,
    wait_for_child,
)

__all__ = [
    "Outcome",
    "RESTING",
    "RUN_MOVES",
    "Recorded",
    "SET_ASIDE",
    "answer_tool_call",
    "apply",
    "approval_info",
    "batch_failed",
    "batch_launched",
    "cancel",
    "complete",
    "complete_step",
    "decide_approval",
    "decide_branch",
    "diff",
    "escalate_approval",
    "fail",
    "fail_step",
    "launch_child",
    "loop_back",
    "note_approval_expired",
    "note_batch_submitted",
    "record",
    "record_estimated_charge",
    "record_model_turn",
    "record_step",
    "record_step_at_once",
    "refuse_approval",
    "reject_launch",
    "remind_approval",
    "reopen",
    "request_approval",
    "resume",
    "seed_replay",
    "set_aside",
    "settle_batch_request",
    "skip_step",
    "start",
    "start_batch",
    "start_revision",
    "step_info",
    "step_started",
    "wait_for_approval",
    "wait_for_child",
]
