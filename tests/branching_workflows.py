"""Workflows for the branching and tool-step authorization tests (tests/test_branching.py). Worker subprocesses
import this module (``RUBOT_WORKFLOW_MODULES``).

Tools append a line to the file named in the run input (``sink``) every time their body really runs, so tests
count executions outside the effects ledger.
"""

from __future__ import annotations

import time
from pathlib import Path

from marshmallow import fields

from pipeline import (
    Tool,
    ToolError,
    Workflow,
    agent_step,
    approval_step,
    choice,
    compute,
    from_input,
    jump_to,
    merge,
    parallel,
    skip_to,
    slice,
    step,
    tool_step,
    when,
)
from pipeline.llm.policy import Policy
from tests import agent_workflows as aw


def record(sink: str, line: str) -> None:
    with Path(sink).open("a") as handle:
        handle.write(line + "\n")


# --- authorization of tool steps ----------------------------------------------------------------------------


class Payout(Tool):
    """A side-effecting tool only finance users may use."""

    description = "Pay money out."
    side_effects = True
    input_schema = {"sink": fields.String(required=True), "amount": fields.Integer(required=True)}
    output_schema = {"paid": fields.Integer(required=True)}

    def permitted_for(self, user):
        return isinstance(user, dict) and "finance" in user.get("roles", [])

    def call(self, *, sink, amount):
        record(sink, f"{self.context.run_id} paid {amount}")
        return {"paid": amount}


class PayoutLimit(Policy):
    def authorize_tool(self, check):
        if check.tool == "payout" and check.input.get("amount", 0) > 1000:
            return "payouts above 1000 need the treasury desk"
        return True


class PayoutWorkflow(Workflow):
    input_schema = {"sink": fields.String(required=True), "amount": fields.Integer(required=True)}
    policy = PayoutLimit()
    pay = tool_step(Payout, input=lambda input, state, context: {"sink": input["sink"], "amount": input["amount"]})


# --- branching ----------------------------------------------------------------------------------------------


class Note(Tool):
    """Append ``label`` to the sink (one line per real execution) and echo it."""

    description = "Write a line to the sink."
    input_schema = {"sink": fields.String(required=True), "label": fields.String(required=True)}
    output_schema = {"label": fields.String(required=True)}

    def call(self, *, sink, label):
        record(sink, f"{self.context.run_id} {label}")
        return {"label": label}


def note(label: str, **options):
    return tool_step(Note, input=lambda input, state, context: {"sink": input["sink"], "label": label}, **options)


class SkippingWorkflow(Workflow):
    """``unless=`` with a callable, ``if_=`` with a method name, on a tool step and a @step."""

    input_schema = {
        "sink": fields.String(required=True),
        "rush": fields.Boolean(required=True),
        "notify": fields.Boolean(required=True),
    }
    intake = note("intake")
    fraud_check = note("fraud_check", unless=lambda input, state, context: input["rush"])
    notify = note("notify", if_="wants_notice")

    @step(if_="wants_notice")
    def notice_sent(self):
        return {"to": "customer"}

    summary = compute(lambda input, state, context: {"keys": sorted(state)})

    def wants_notice(self, input, state, context):
        return input["notify"]


class ConditionalApprovalWorkflow(Workflow):
    """An approval only for large amounts: a skipped approval dispatches the rest of the run itself."""

    input_schema = {"sink": fields.String(required=True), "amount": fields.Integer(required=True)}
    intake = note("intake")
    manager = approval_step(role="manager", if_=lambda input, state, context: input["amount"] > 1000)
    pay = note("pay")


class DraftLoopWorkflow(Workflow):
    """A loop closed by a ``choice``: draft again while the version is below ``good_at``, at most three times."""

    input_schema = {"sink": fields.String(required=True), "good_at": fields.Integer(required=True)}
    draft = compute(lambda input, state, context: {"version": state.get("draft", {}).get("version", 0) + 1})
    write = tool_step(
        Note,
        input=merge(slice("input", "sink"), lambda input, state, context: {"label": f"v{state['draft']['version']}"}),
    )
    route = choice(
        when(lambda input, state, context: state["draft"]["version"] < input["good_at"], "draft"), max_visits=3
    )
    publish = note("publish")


class AgentLoopWorkflow(Workflow):
    """An agent step inside a loop: asked again (a fresh conversation) while it refunds nothing, twice at most."""

    input_schema = {"order_id": fields.Integer(required=True), "message": fields.String(required=True)}
    desk = agent_step(aw.SupportAgent, save_as="answer")
    again = jump_to("desk", if_=lambda input, state, context: state["answer"]["refunded_cents"] == 0, max_visits=2)
    output = "answer"


class ForwardChoiceWorkflow(Workflow):
    """A ``choice`` that skips forward by the run's input, and a ``skip_to`` guarded by ``if_``."""

    input_schema = {"sink": fields.String(required=True), "amount": fields.Integer(required=True)}
    triage = choice(when("is_small", "auto_approve"))
    review = note("review")
    to_done = skip_to("done", if_=lambda input, state, context: input["amount"] > 10_000)
    auto_approve = note("auto_approve")
    done = note("done")

    def is_small(self, input, state, context):
        return input["amount"] < 100


class ParallelBranchWorkflow(Workflow):
    """A choice that may go past a parallel group, whose second member has a condition of its own."""

    input_schema = {"sink": fields.String(required=True), "skip": fields.Boolean(required=True)}
    route = choice(when(lambda input, state, context: input["skip"], "after"))
    both = parallel(a=note("a"), b=note("b", unless=lambda input, state, context: True))
    after = note("after")


class EndsInParallelWorkflow(Workflow):
    """Ends with a parallel group: the join completes the run, not the first member to record."""

    input_schema = {"sink": fields.String(required=True)}
    first = note("first")
    both = parallel(a=note("a"), b=note("b"), c=note("c", unless=lambda input, state, context: True))


class OutputKeyWorkflow(Workflow):
    input_schema = {"n": fields.Integer(required=True)}
    double = compute(lambda input, state, context: {"n": input["n"] * 2}, save_as="doubled")
    tail = compute(lambda input, state, context: "ignored")
    output = "doubled"


class OutputKeysWorkflow(Workflow):
    input_schema = {"n": fields.Integer(required=True)}
    double = compute(lambda input, state, context: input["n"] * 2)
    triple = compute(from_input("n"), save_as="same")
    tail = compute(lambda input, state, context: "ignored")
    output = ["double", "same"]


class OutputCallableWorkflow(Workflow):
    input_schema = {"n": fields.Integer(required=True)}
    double = compute(lambda input, state, context: {"n": input["n"] * 2})
    output = lambda input, state, context: {"sum": state["double"]["n"] + input["n"]}  # noqa: E731


class BrokenConditionWorkflow(Workflow):
    input_schema = {"sink": fields.String(required=True)}
    first = note("first")
    second = note("second", if_=lambda input, state, context: state["no_such_step"]["ready"])


class BrokenOutputWorkflow(Workflow):
    input_schema = {"sink": fields.String(required=True)}
    first = note("first")
    output = lambda input, state, context: state["first"]["no_such_key"]  # noqa: E731


class FailingWorkflow(Workflow):
    """Fails in its second step; ``on_failure`` writes one line to the sink."""

    input_schema = {"sink": fields.String(required=True)}
    first = note("first")
    broken = compute(lambda input, state, context: state["no_such_step"]["value"])
    never = note("never")

    def on_failure(self, error):
        record(self.run.input["sink"], f"{self.run.id} on_failure {error['reason']} {error.get('step')}")


class Gated(Tool):
    """Writes "<label> started", then waits until the ``gate`` file exists (a worker can be killed meanwhile)."""

    description = "Wait for a gate, then write a line to the sink."
    input_schema = {
        "sink": fields.String(required=True),
        "gate": fields.String(required=True),
        "label": fields.String(required=True),
    }
    output_schema = {"label": fields.String(required=True)}

    def call(self, *, sink, gate, label):
        record(sink, f"{self.context.run_id} {label} started")
        deadline = time.monotonic() + 120
        while not Path(gate).exists():
            if time.monotonic() > deadline:
                raise ToolError("the gate never opened")
            time.sleep(0.05)
        record(sink, f"{self.context.run_id} {label}")
        return {"label": label}


def route_file_says(value: str):
    # Reads the outside world on purpose: if the branch were decided again after a crash, it would go elsewhere.
    return lambda input, state, context: Path(input["route_file"]).read_text().strip() == value


class KilledAfterChoiceWorkflow(Workflow):
    input_schema = {
        "sink": fields.String(required=True),
        "gate": fields.String(required=True),
        "route_file": fields.String(required=True),
    }
    prepare = note("prepare")
    route = choice(when(route_file_says("express"), "express"))
    standard = note("standard")
    express = tool_step(Gated, input=merge(slice("input", "sink", "gate"), {"label": "express"}))
    done = note("done")
