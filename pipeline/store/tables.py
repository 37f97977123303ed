"""All Rubot tables in one place (SQLAlchemy 2 declarative). Migrations live in ``pipeline/migrations``.

Tables are prefixed ``rubot_`` so they can share a database with the host application.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Statuses a run can be in. "Active" ones may still change; the rest are final.
QUEUED, RUNNING, WAITING, COMPLETED, FAILED, CANCELLED = (
    "queued",
    "running",
    "waiting_for_approval",
    "completed",
    "failed",
    "cancelled",
)
# An operation's run whose routing waits for one of its child runs: it holds nothing but rows (like an approval)
# until the child's transition to rest wakes it.
WAITING_FOR_CHILD = "waiting_for_child"
# A run whose side effect may or may not have happened waits for a person to reconcile it; a run that kept
# crashing its workers is set aside in the dead letter state. Neither moves on by itself.
NEEDS_RECONCILIATION, DEAD_LETTER = "needs_reconciliation", "dead_letter"
RUN_STATUSES = (
    QUEUED,
    RUNNING,
    WAITING,
    WAITING_FOR_CHILD,
    COMPLETED,
    FAILED,
    CANCELLED,
    NEEDS_RECONCILIATION,
    DEAD_LETTER,
)
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED, NEEDS_RECONCILIATION, DEAD_LETTER})
ACTIVE = (QUEUED, RUNNING, WAITING)

DONE, CLAIMED = "done", "claimed"

PENDING, APPROVED, REJECTED, CHANGES_REQUESTED = "pending", "approved", "rejected", "changes_requested"
# An approval is "cancelled" when its run is cancelled before anyone decided it.
APPROVAL_STATUSES = (PENDING, APPROVED, REJECTED, CHANGES_REQUESTED, CANCELLED)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime | None) -> datetime | None:
    """A stored datetime as an aware UTC one (SQLite hands back naive datetimes, stored as UTC)."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class RunRow(Base):
    __tablename__ = "rubot_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32), default=QUEUED)
    input: Mapped[Any] = mapped_column(JSON, nullable=True)
    context: Mapped[Any] = mapped_column(JSON, nullable=True)
    subject: Mapped[Any] = mapped_column(JSON, nullable=True)
    # Derived at enqueue for the concurrency caps: context["user"]["id"] (or the user string) and the subject.
    user_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    subject_key: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # The scheduled batch that launched this run (rubot_batches.id), if any.
    batch_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # The operation run whose routing launched this run (its children are the runs naming it here).
    parent_run_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    state: Mapped[Any] = mapped_column(JSON, default=dict)
    output: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[Any] = mapped_column(JSON, nullable=True)
    # Bumped every time a segment of the canvas is dispatched; a resume message carries the value it expects,
    # so a duplicated resume message cannot dispatch the same steps twice.
    dispatch_seq: Mapped[int] = mapped_column(Integer, default=0)
    # How often the sweeper (or a redelivery) had to take over work from a dead worker.
    recoveries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_read_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    # The part of cost_micros that is estimated: requests that may have been billed but whose response was lost.
    estimated_cost_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Guard counters, e.g. {"unknown_tool": 2, "tool_denied": 1, "duplicate_tool_call": 5}.
    counters: Mapped[Any] = mapped_column(JSON, nullable=True)
    # The head of the run's event chain (see pipeline/store/chain.py): how many events, and the last one's hash.
    event_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    event_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # A replay: the run whose recorded results this one reused up to its fork point (pipeline.replay).
    replay_of: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        Index("ix_rubot_runs_status_created", "status", "created_at"),
        Index("ix_rubot_runs_user_status", "user_id", "status"),
        Index("ix_rubot_runs_subject_status", "subject_key", "status"),
        Index("ix_rubot_runs_batch_status", "batch_id", "status"),
        Index("ix_rubot_runs_parent", "parent_run_id"),
        # The console's runs list and the metrics window read runs by creation time.
        Index("ix_rubot_runs_created", "created_at"),
        Index("ix_rubot_runs_workflow_created", "workflow", "created_at"),
        Index(
            "ix_rubot_runs_active",
            "workflow",
            "status",
            postgresql_where=(status.in_(ACTIVE)),
            sqlite_where=(status.in_(ACTIVE)),
        ),
    )


# A batch is "launching" while its runs are being created and "launched" once every one exists (or "failed" when
# its list of subjects could not be produced); how far its runs got is counted from rubot_runs.
LAUNCHING, LAUNCHED = "launching", "launched"
BATCH_STATUSES = (LAUNCHING, LAUNCHED, FAILED)


class BatchRow(Base):
    """One scheduled launch fanned out over many subjects. Its id is derived from the schedule and the tick."""

    __tablename__ = "rubot_batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    schedule: Mapped[str] = mapped_column(String(200))
    workflow: Mapped[str] = mapped_column(String(200))
    tick: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(32), default=LAUNCHING)
    total: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_rubot_batches_created", "created_at"),)


class EventRow(Base):
    """Append-only trail: never updated, never deleted by Rubot. Each event is a link of its run's hash chain
    (``seq`` 1, 2, 3 ... and ``hash``; see :mod:`pipeline.store.chain`)."""

    __tablename__ = "rubot_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("rubot_runs.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(64))
    step: Mapped[str | None] = mapped_column(String(200), nullable=True)
    data: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    hash: Mapped[str | None] = mapped_column(String(64), nullable=True)

    # One chain position per run; spend today and the agents' metrics read events by type and time.
    __table_args__ = (
        UniqueConstraint("run_id", "seq", name="uq_rubot_events_run_seq"),
        Index("ix_rubot_events_type_created", "type", "created_at"),
    )


class ApprovalRow(Base):
    __tablename__ = "rubot_approvals"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("rubot_runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    assignee: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(32), default=PENDING)
    # "step" for an approval_step; "tool_call" for a tool call the agent wanted, bound to its exact arguments.
    kind: Mapped[str] = mapped_column(String(16), default="step", server_default="step")
    tool_input: Mapped[Any] = mapped_column(JSON, nullable=True)
    args_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    decided_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    decision_payload: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The principal that decided: {"id", "display_name", "roles", "via"} (``decided_by`` is its id).
    principal: Mapped[Any] = mapped_column(JSON, nullable=True)
    # What the approver is shown: the tool of a tool-call approval, a one-line summary, and the evidence
    # ({"state": ..., "changes": ..., "round": n} for a step; {"tool", "model_reason"} for a tool call), redacted.
    tool: Mapped[str | None] = mapped_column(String(64), nullable=True)
    summary: Mapped[str | None] = mapped_column(Text, nullable=True)
    evidence: Mapped[Any] = mapped_column(JSON, nullable=True)
    # SLA: when the reminder is due, and when it was sent (once per approval).
    remind_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    reminded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        # Earlier rounds of a revised approval are kept under a round-prefixed step ("r1:manager").
        UniqueConstraint("run_id", "step", name="uq_rubot_approvals_run_step"),
        Index(
            "ix_rubot_approvals_pending",
            "status",
            postgresql_where=(status == PENDING),
            sqlite_where=(status == PENDING),
        ),
    )


class EffectRow(Base):
    """The effects ledger: one row per completed operation. ``(run_id, op_key)`` is the exactly-once guard."""

    __tablename__ = "rubot_effects"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("rubot_runs.id", ondelete="CASCADE"))
    op_key: Mapped[str] = mapped_column(String(500))
    kind: Mapped[str] = mapped_column(String(32))
    # "done" once the result is recorded; "claimed" while a side-effecting tool call is in flight (the claim
    # is committed before the effect, so a crash cannot lead to a second execution).
    status: Mapped[str] = mapped_column(String(16), default=DONE, server_default=DONE)
    # While claimed: the holder renews this lease with a heartbeat; past it, the holder is presumed dead.
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    task_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        UniqueConstraint("run_id", "op_key", name="uq_rubot_effects_run_op"),
        Index(
            "ix_rubot_effects_claimed",
            "lease_expires_at",
            postgresql_where=(status == CLAIMED),
            sqlite_where=(status == CLAIMED),
        ),
    )


class BlobRow(Base):
    """Tool results too large to hand to a model; the model reads them by token with ``read_data``."""

    __tablename__ = "rubot_blobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("rubot_runs.id", ondelete="CASCADE"), index=True)
    op_key: Mapped[str] = mapped_column(String(500))
    content: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiTokenRow(Base):
    """Personal API tokens (``rubot tokens ...``): only the SHA-256 of the secret is stored."""

    __tablename__ = "rubot_api_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[str] = mapped_column(String(200), index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    roles: Mapped[Any] = mapped_column(JSON)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


OUTBOX_PENDING, OUTBOX_SENT, OUTBOX_FAILED = "pending", "sent", "failed"


class OutboxRow(Base):
    """A notification to send, written in the transaction that changed the approval (the outbox pattern).

    The ``rubot.send_notification`` task sends it and marks it ``sent``; the beat sweep re-sends rows left
    ``pending``. ``claimed_until`` keeps two senders from sending the same row at the same moment; a sender
    that dies after sending leaves it to be sent again (at least once). ``id`` is the notification's stable id.
    """

    __tablename__ = "rubot_outbox"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("rubot_runs.id", ondelete="CASCADE"), index=True)
    approval_id: Mapped[str] = mapped_column(String(40), index=True)
    event: Mapped[str] = mapped_column(String(32))  # requested | escalated | reminded | expired
    channel: Mapped[str] = mapped_column(String(64))
    recipient: Mapped[str | None] = mapped_column(String(500), nullable=True)
    # The recipient as an approver, for a signed link: {"id", "email", "roles"}.
    approver: Mapped[Any] = mapped_column(JSON, nullable=True)
    message: Mapped[Any] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=OUTBOX_PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (
        Index(
            "ix_rubot_outbox_pending",
            "created_at",
            postgresql_where=(status == OUTBOX_PENDING),
            sqlite_where=(status == OUTBOX_PENDING),
        ),
    )


class LinkUseRow(Base):
    """A signed approval link that was used to decide: inserted in the deciding transaction (single use)."""

    __tablename__ = "rubot_link_uses"

    link_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    approval_id: Mapped[str] = mapped_column(String(40))
    principal_id: Mapped[str] = mapped_column(String(200))
    used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SpendAlertRow(Base):
    """A daily spend alert raised for a workflow or an agent: the unique key makes it once per name and day,
    however many workers cross the threshold at the same moment (see :mod:`pipeline.engine.spend`)."""

    __tablename__ = "rubot_spend_alerts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(16))  # "workflow" or "agent"
    name: Mapped[str] = mapped_column(String(200))
    day: Mapped[str] = mapped_column(String(10))  # the UTC day, YYYY-MM-DD
    threshold_micros: Mapped[int] = mapped_column(BigInteger)
    spent_micros: Mapped[int] = mapped_column(BigInteger)
    run_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("scope", "name", "day", name="uq_rubot_spend_alerts_scope_name_day"),)
