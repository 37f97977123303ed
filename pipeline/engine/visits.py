"""Loop visits: how a ``choice`` that goes back to an earlier step keeps the earlier visit and counts it.

When a choice sends the run back, the ledger rows of every step from the target up to the choice (agent turns and
tool calls included) are renamed under the visit's prefix, ``#<visit>.<choice>:<op key>`` (``#1.route:draft`` is
``draft`` as the first pass of the loop closed by ``route`` left it), in the transaction that records the decision.
The steps are then no longer "done", so the next dispatch runs them again; the history stays readable; the unique
``(run_id, op_key)`` holds. The choice's own decision of that visit is kept as ``#<visit>.<choice>:<choice>``, so
the number of times a choice went back is read from the ledger, never from memory.

The prefix starts with ``#``, which no step name (a Python identifier) and no revise round (``r1:``) starts with.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.store.tables import ApprovalRow, EffectRow


def key(visit: int, choice: str, op_key: str) -> str:
    """The key the row ``op_key`` is kept under once ``choice`` sent the run back for the ``visit``-th time."""
    return f"#{visit}.{choice}:{op_key}"


def jumps_done(op_keys: set[str], choice: str) -> int:
    """How many times ``choice`` already sent the run back (its archived decisions among ``op_keys``)."""
    pattern = re.compile(rf"#(\d+)\.{re.escape(choice)}:{re.escape(choice)}")
    return sum(1 for op in op_keys if pattern.fullmatch(op))


def archive(s: Session, run_id: str, visit: int, choice: str, step_names: list[str]) -> None:
    """Rename the ledger rows of ``step_names`` (and their turns, tool calls and tool-call approvals)."""
    names = set(step_names)
    for row in s.execute(select(EffectRow).where(EffectRow.run_id == run_id)).scalars():
        head = row.op_key.split("/", 1)[0]
        if ":" not in head and head in names:
            row.op_key = key(visit, choice, row.op_key)
    for approval in s.execute(select(ApprovalRow).where(ApprovalRow.run_id == run_id)).scalars():
        head = approval.step.split("/", 1)[0]
        if ":" not in head and head in names and approval.kind == "tool_call":
            approval.step = key(visit, choice, approval.step)
    s.flush()
