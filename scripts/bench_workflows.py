"""The Rubot side of ``rubot bench``: workflows whose steps do nothing, so the framework's own cost shows."""

from __future__ import annotations

from marshmallow import fields

from pipeline import Agent, Tool, Workflow, agent_step, approval_step, step, tool_step


class BenchOneStep(Workflow):
    """One no-op step: a run end to end."""

    @step
    def s0(self):
        return {"i": 0}


class BenchThreeSteps(Workflow):
    """Three no-op steps: throughput under many concurrent runs."""

    @step
    def s0(self):
        return {"i": 0}

    @step
    def s1(self):
        return {"i": 1}

    @step
    def s2(self):
        return {"i": 2}


class BenchTenSteps(Workflow):
    """Ten no-op steps: the cost of one step."""

    @step
    def s0(self):
        return {"i": 0}

    @step
    def s1(self):
        return {"i": 1}

    @step
    def s2(self):
        return {"i": 2}

    @step
    def s3(self):
        return {"i": 3}

    @step
    def s4(self):
        return {"i": 4}

    @step
    def s5(self):
        return {"i": 5}

    @step
    def s6(self):
        return {"i": 6}

    @step
    def s7(self):
        return {"i": 7}

    @step
    def s8(self):
        return {"i": 8}

    @step
    def s9(self):
        return {"i": 9}


class Touch(Tool):
    """A side effect that does nothing: what the claim before an effect costs."""

    description = "Touch nothing, as if it changed the world."
    side_effects = True
    idempotent = True
    input_schema = {}
    output_schema = {"ok": fields.Boolean(required=True)}

    def call(self):
        return {"ok": True}


def _touch():
    return tool_step(Touch, input=lambda input, state, context: {})


class BenchTenEffects(Workflow):
    """Ten side-effecting tool steps: a claim, then a record, per step."""

    e0, e1, e2, e3, e4 = _touch(), _touch(), _touch(), _touch(), _touch()
    e5, e6, e7, e8, e9 = _touch(), _touch(), _touch(), _touch(), _touch()


class BenchApproval(Workflow):
    """Parks on an approval, then one no-op step: what resuming costs."""

    gate = approval_step(role="bench", reason="benchmark")

    @step
    def after(self):
        return {"done": True}


class Echo(Tool):
    description = "Return the text it is given."
    input_schema = {"text": fields.String(required=True)}
    output_schema = {"text": fields.String(required=True)}

    def call(self, *, text):
        return {"text": text}


class BenchAgent(Agent):
    instructions = "Call echo as asked, then answer."
    input_schema = {"task": fields.String(required=True)}
    output_schema = {"answer": fields.String(required=True)}
    tools = (Echo,)
    model = "claude-haiku-4-5"
    max_turns = 50
    max_tokens = 10_000_000


class BenchAgentWorkflow(Workflow):
    ask = agent_step(BenchAgent, input=lambda input, state, context: {"task": "bench"})
