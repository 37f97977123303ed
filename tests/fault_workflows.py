"""Workflows for the fault tests. Their tools write to an external sink: a file named by ``RUBOT_TEST_SINK`` that
plays the downstream system, keyed by the idempotency key Rubot hands every call (as a payment API would be)."""

from __future__ import annotations

import fcntl
import os
import random
import time
from pathlib import Path

from marshmallow import fields

from pipeline import Tool, Workflow, parallel, step, tool_step


def deliver(key: str, run_id: str, op: str) -> None:
    """One attempt at the downstream effect; the downstream keeps one effect per key."""
    with Path(os.environ["RUBOT_TEST_SINK"]).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.write(f"{key} {run_id} {op}\n")


class Charge(Tool):
    description = "Charge the customer through an API that honours idempotency keys."
    side_effects = True
    idempotent = True
    input_schema = {"amount": fields.Integer(required=True)}
    output_schema = {"charged": fields.Integer(required=True)}

    def call(self, *, amount):
        time.sleep(random.uniform(0, 0.15))  # widen the window in which a kill lands mid-effect
        deliver(self.context.idempotency_key, self.context.run_id, self.context.op_key)
        time.sleep(random.uniform(0, 0.1))
        return {"charged": amount}


class FaultWorkflow(Workflow):
    input_schema = {"amount": fields.Integer(required=True)}
    charge = tool_step(Charge, input=lambda input, state, context: {"amount": input["amount"]})

    @step
    def compute(self):
        time.sleep(random.uniform(0, 0.1))
        return {"total": self.run.state["charge"]["charged"] * 2}

    notify = tool_step(Charge, input=lambda input, state, context: {"amount": state["compute"]["total"]})


class Reserve(Tool):
    """Reserve stock in a system that knows no idempotency keys: a second call reserves twice, so Rubot must never
    repeat it blindly (an interrupted call goes to a person, who checks the sink and reconciles)."""

    description = "Reserve stock."
    side_effects = True
    input_schema = {"amount": fields.Integer(required=True)}
    output_schema = {"reserved": fields.Integer(required=True)}

    def call(self, *, amount):
        time.sleep(random.uniform(0, 0.15))
        # The key is the same for every attempt at this operation, so a second reservation shows as a repeated line.
        deliver(f"reserve-{self.context.run_id}", self.context.run_id, self.context.op_key)
        time.sleep(random.uniform(0, 0.1))
        return {"reserved": amount}


class ParallelFaultWorkflow(Workflow):
    """Two side effects side by side (one idempotent, one not), then a step that needs both, then another effect."""

    input_schema = {"amount": fields.Integer(required=True)}
    effects = parallel(
        charge=tool_step(Charge, input=lambda input, state, context: {"amount": input["amount"]}),
        reserve=tool_step(Reserve, input=lambda input, state, context: {"amount": input["amount"]}),
    )

    @step
    def compute(self):
        return {"total": self.run.state["charge"]["charged"] + self.run.state["reserve"]["reserved"]}

    notify = tool_step(Charge, input=lambda input, state, context: {"amount": state["compute"]["total"]})


class Poison(Tool):
    description = "Kills the worker process that runs it, every time."
    input_schema = {}

    def call(self):
        os.kill(os.getpid(), 9)


class PoisonWorkflow(Workflow):
    die = tool_step(Poison)


class SlowReport(Tool):
    description = "Build a report slowly (longer than the broker's visibility timeout, in the fault tests)."
    input_schema = {"seconds": fields.Float(required=True)}
    output_schema = {"slept": fields.Float(required=True)}

    def call(self, *, seconds):
        deliver(f"start-{self.context.run_id}", self.context.run_id, "slow-start")
        time.sleep(seconds)
        deliver(f"end-{self.context.run_id}", self.context.run_id, "slow-end")
        return {"slept": seconds}


class SlowWorkflow(Workflow):
    input_schema = {"seconds": fields.Float(required=True)}
    slow = tool_step(SlowReport)
