"""Workflows used by the tests. Worker subprocesses import this module (``RUBOT_WORKFLOW_MODULES``).

Tools here append a line to the file named in the run input (``sink``) every time their body really runs,
so tests count executions outside the effects ledger.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

from marshmallow import fields

import pipeline
from pipeline import Tool, Workflow, approval_step, parallel, step, tool_step
from pipeline.auth import four_eyes

# Parallel members meet here: if the chord ran them one after the other, the barrier would time out.
BARRIER = threading.Barrier(2, timeout=20)
# Cancel test: the first step blocks until the test releases it.
GATES: dict[str, threading.Event] = {}


def record(sink: str, line: str) -> None:
    with Path(sink).open("a") as handle:
        handle.write(line + "\n")


class Record(Tool):
    description = "Append a line to the sink file and echo the label."
    input_schema = {
        "sink": fields.String(required=True),
        "label": fields.String(required=True),
        "run_id": fields.String(load_default=""),
    }
    output_schema = {"label": fields.String(required=True)}

    def call(self, *, sink, label, run_id):
        record(sink, f"{self.context.run_id if self.context else run_id} {label}")
        return {"label": label}


def _record(label: str):
    return tool_step(Record, input=lambda input, state, context: {"sink": input["sink"], "label": label})


class LinearWorkflow(Workflow):
    input_schema = {"sink": fields.String(required=True), "n": fields.Integer(required=True)}
    first = _record("first")
    second = _record("second")

    @step
    def total(self):
        return {"n": self.run.input["n"] * 2, "seen": sorted(self.run.state)}


class ParallelWorkflow(Workflow):
    input_schema = {"sink": fields.String(required=True)}
    start = _record("start")
    checks = parallel(
        left=tool_step(Record, input=lambda input, state, context: _meet(input, "left")),
        right=tool_step(Record, input=lambda input, state, context: _meet(input, "right")),
    )

    @step
    def combine(self):
        return [self.run.state["left"]["label"], self.run.state["right"]["label"]]


def _meet(input: dict, label: str) -> dict:
    BARRIER.wait()
    return {"sink": input["sink"], "label": label}


class ApprovalWorkflow(Workflow):
    input_schema = {"sink": fields.String(required=True)}
    prepare = _record("prepare")
    manager = approval_step(role="manager", reason="Needs a manager.")
    after = _record("after")


class ContinueOnRejectWorkflow(Workflow):
    input_schema = {"sink": fields.String(required=True)}
    manager = approval_step(role="manager", on_reject="continue")

    @step
    def outcome(self):
        return {"decision": self.run.state["manager"]["decision"], "by": self.run.approvals[-1].decided_by}


class GatedWorkflow(Workflow):
    input_schema = {"sink": fields.String(required=True), "gate": fields.String(required=True)}

    @step
    def blocked(self):
        record(self.run.input["sink"], f"{self.run.id} blocked")
        GATES[self.run.input["gate"]].wait(30)

    after = _record("after")


class BadInputMappingWorkflow(Workflow):
    first = tool_step(Record, input=lambda input, state, context: {"sink": input["sink"], "label": input["nope"]})


class WaitInsideWorkflow(Workflow):
    @step
    def waits(self):
        pipeline.wait(self.run.id, timeout=1)


class SlowWorkflow(Workflow):
    input_schema = {"sink": fields.String(required=True), "seconds": fields.Float(required=True)}

    @step
    def slow(self):
        time.sleep(self.run.input["seconds"])  # stands in for a long tool call
        record(self.run.input["sink"], f"{self.run.id} slow")

    manager = approval_step(role="manager")
    after = _record("after")


class OnePerSubjectWorkflow(ApprovalWorkflow):
    one_active_per_subject = True


def not_the_launcher(check):
    """Four eyes, as a step-level hook with its own wording."""
    if check.principal.id == check.launched_by:
        return "you launched this run"
    return True


class AssignedWorkflow(Workflow):
    """A manager's approval assigned to one person, who need not hold the role."""

    input_schema = {"sink": fields.String(required=True)}
    manager = approval_step(role="manager", assignee="mia@example.com")
    after = _record("after")


class FourEyesWorkflow(Workflow):
    """Whoever launched the run may not approve it (the Workflow-level hook)."""

    approvers = four_eyes
    input_schema = {"sink": fields.String(required=True)}
    manager = approval_step(role="manager")
    after = _record("after")


class StepHookWorkflow(Workflow):
    input_schema = {"sink": fields.String(required=True)}
    manager = approval_step(role="manager", approvers=not_the_launcher)
    after = _record("after")


class SummarizedWorkflow(Workflow):
    """An approval whose page shows a summary and the state the next step acts on (with a secret to redact)."""

    input_schema = {"sink": fields.String(required=True), "amount_cents": fields.Integer(required=True)}

    @step
    def draft(self):
        return {"amount_cents": self.run.input["amount_cents"], "vendor": "ACME", "password": "hunter2-CANARY"}

    manager = approval_step(
        role="manager",
        reason="Purchases over 1000 cents need a manager.",
        summary="Buy from {state[draft][vendor]} for {input[amount_cents]} cents",
    )
    after = _record("after")


class SlaWorkflow(Workflow):
    """A reminder after 30 minutes, escalation to a director after an hour."""

    input_schema = {"sink": fields.String(required=True)}
    manager = approval_step(
        role="manager",
        reason="Needs a manager.",
        sla=timedelta(minutes=30),
        expires_in=timedelta(hours=1),
        on_expire="escalate",
        escalate_to="director",
    )
    after = _record("after")


class RevisingWorkflow(Workflow):
    """Request changes sends the run back to ``draft``, which reads the reviewer's comment; two revisions at most."""

    input_schema = {"sink": fields.String(required=True)}

    @step
    def draft(self):
        previous = self.run.state.get("draft") or {}
        comment = (self.run.state.get("review") or {}).get("comment")
        version = previous.get("version", 0) + 1
        record(self.run.input["sink"], f"{self.run.id} draft v{version} comment={comment}")
        return {"version": version, "amount_cents": 5000 - 1000 * (version - 1), "addressed": comment}

    review = approval_step(
        role="manager",
        reason="Check the draft.",
        summary="Draft v{state[draft][version]}: {state[draft][amount_cents]} cents",
        on_changes_requested="revise",
        revise_from="draft",
        max_revisions=2,
    )
    after = _record("after")
