"""Revise and resubmit: ``request_changes`` sends a run back to an earlier step, a bounded number of times.

An approval step declared with ``on_changes_requested="revise", revise_from="draft", max_revisions=n`` handles a
"changes requested" decision by starting another **round**, in the decision's transaction:

1. The decided approval and the ledger rows of every step from ``revise_from`` up to the approval step (agent
   turns and tool calls included) are kept, renamed under the round's prefix: ``manager`` becomes ``r1:manager``,
   ``draft`` becomes ``r1:draft``. The unique ``(run_id, step)`` of approvals and ``(run_id, op_key)`` of the
   ledger stay intact, the history stays readable, and the steps are no longer "done", so the next dispatch runs
   them again. Because this happens in the transaction that records the decision (under the run lock) and the
   resume it sends carries the new ``dispatch_seq``, a parked or redelivered run never runs a recorded round again.
2. ``state[approval step]`` holds the decision record (``decision``, ``comment``, ``decided_by``, ``round``): the
   re-run steps read the reviewer's comment from there.
3. When the approval step parks again, its evidence has ``round`` n+1 and the ``changes`` since round n's state.

Changes requested again after ``max_revisions`` rounds fail the run with reason ``max_revisions_exceeded``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.store.tables import ApprovalRow, EffectRow

REASON = "max_revisions_exceeded"


def archived_key(round_: int, key: str) -> str:
    """The key a row of round ``round_`` is kept under once a later round starts."""
    return f"r{round_}:{key}"


def rounds_done(s: Session, run_id: str, step: str) -> int:
    """How many earlier rounds of approval ``step`` were sent back (archived)."""
    rows = s.execute(
        select(ApprovalRow.step).where(ApprovalRow.run_id == run_id, ApprovalRow.step.like(f"r%:{step}"))
    ).scalars()
    return sum(1 for key in rows if key.split(":", 1)[1] == step)


def current_round(s: Session, run_id: str, step: str) -> tuple[int, dict[str, Any] | None]:
    """The round an approval of ``step`` requested now belongs to, and what the last round showed and heard."""
    done = rounds_done(s, run_id, step)
    if done == 0:
        return 1, None
    previous = s.execute(
        select(ApprovalRow).where(ApprovalRow.run_id == run_id, ApprovalRow.step == archived_key(done, step))
    ).scalar_one_or_none()
    if previous is None:
        return done + 1, None
    return done + 1, {"state": (previous.evidence or {}).get("state") or {}, "comment": previous.comment}


def archive_round(s: Session, run_id: str, approval: ApprovalRow, step_names: list[str]) -> int:
    """Rename the decided ``approval`` and the ledger rows of ``step_names`` under this round's prefix.

    Returns the round that was archived. Agent steps' turns and tool calls (``draft/turn-1``...) move with their
    step; tool-call approvals of those turns move too.
    """
    round_ = rounds_done(s, run_id, approval.step) + 1
    names = set(step_names)
    rows = s.execute(select(EffectRow).where(EffectRow.run_id == run_id)).scalars()
    for row in rows:
        if ":" in row.op_key.split("/", 1)[0]:
            continue  # archived in an earlier round
        if row.op_key.split("/", 1)[0] in names:
            row.op_key = archived_key(round_, row.op_key)
    approvals = s.execute(select(ApprovalRow).where(ApprovalRow.run_id == run_id)).scalars()
    for other in approvals:
        head = other.step.split("/", 1)[0]
        if other.id != approval.id and ":" not in head and head in names and other.kind == "tool_call":
            other.step = archived_key(round_, other.step)
    approval.step = archived_key(round_, approval.step)
    s.flush()
    return round_
