"""initial tables: runs, events, approvals, effects

Revision ID: 0001
Revises: 
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rubot_runs',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('workflow', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('input', sa.JSON(), nullable=True),
    sa.Column('context', sa.JSON(), nullable=True),
    sa.Column('subject', sa.JSON(), nullable=True),
    sa.Column('state', sa.JSON(), nullable=False),
    sa.Column('output', sa.JSON(), nullable=True),
    sa.Column('error', sa.JSON(), nullable=True),
    sa.Column('dispatch_seq', sa.Integer(), nullable=False),
    sa.Column('input_tokens', sa.BigInteger(), nullable=False),
    sa.Column('output_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cache_write_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cache_read_tokens', sa.BigInteger(), nullable=False),
    sa.Column('cost_micros', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('rubot_runs', schema=None) as batch_op:
        batch_op.create_index('ix_rubot_runs_active', ['workflow', 'status'], unique=False, postgresql_where=sa.text("status IN ('queued', 'running', 'waiting_for_approval')"), sqlite_where=sa.text("status IN ('queued', 'running', 'waiting_for_approval')"))
        batch_op.create_index('ix_rubot_runs_status_created', ['status', 'created_at'], unique=False)

    op.create_table('rubot_approvals',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('step', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('assignee', sa.String(length=200), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decided_by', sa.String(length=200), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('decision_payload', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['rubot_runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', 'step', name='uq_rubot_approvals_run_step')
    )
    with op.batch_alter_table('rubot_approvals', schema=None) as batch_op:
        batch_op.create_index('ix_rubot_approvals_pending', ['status'], unique=False, postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))
        batch_op.create_index(batch_op.f('ix_rubot_approvals_run_id'), ['run_id'], unique=False)

    op.create_table('rubot_effects',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('op_key', sa.String(length=500), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('task_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['rubot_runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', 'op_key', name='uq_rubot_effects_run_op')
    )
    op.create_table('rubot_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('step', sa.String(length=200), nullable=True),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['rubot_runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('rubot_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rubot_events_run_id'), ['run_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('rubot_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rubot_events_run_id'))

    op.drop_table('rubot_events')
    op.drop_table('rubot_effects')
    with op.batch_alter_table('rubot_approvals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rubot_approvals_run_id'))
        batch_op.drop_index('ix_rubot_approvals_pending', postgresql_where=sa.text("status = 'pending'"), sqlite_where=sa.text("status = 'pending'"))

    op.drop_table('rubot_approvals')
    with op.batch_alter_table('rubot_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_rubot_runs_status_created')
        batch_op.drop_index('ix_rubot_runs_active', postgresql_where=sa.text("status IN ('queued', 'running', 'waiting_for_approval')"), sqlite_where=sa.text("status IN ('queued', 'running', 'waiting_for_approval')"))

    op.drop_table('rubot_runs')
