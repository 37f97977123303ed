"""Workflows for the engine tests (redelivery, time limits, caps). Worker subprocesses import this module.

Tools append a line to the file named in their input (``sink``) each time their body really runs, so the tests
count executions outside the ledger.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from marshmallow import fields

from pipeline import Agent, Tool, Workflow, agent_step, parallel, step, tool_step
from tests.workflows import GATES, Record, record


def _record(label: str):
    return tool_step(Record, input=lambda input, state, context: {"sink": input["sink"], "label": label})


class GatedParallelWorkflow(Workflow):
    """A gate first (the test prepares the ledger meanwhile), then two members side by side, then a join."""

    input_schema = {"sink": fields.String(required=True), "gate": fields.String(required=True)}

    @step
    def gate(self):
        GATES[self.run.input["gate"]].wait(30)

    checks = parallel(left=_record("left"), right=_record("right"))

    @step
    def combine(self):
        return {"both": sorted(k for k in ("left", "right") if k in self.run.state)}


def _held(self):
    GATES[self.run.input["gate"]].wait(30)
    return {"held": True}


class EndsInSlowParallelWorkflow(Workflow):
    """Its last unit is a parallel group whose members finish far apart (the slow one waits for the test)."""

    input_schema = {"sink": fields.String(required=True), "gate": fields.String(required=True)}
    last = parallel(quick=_record("quick"), slow=step(_held))


class Dawdle(Tool):
    """Takes as long as it is told to, with no side effects; limited to one second."""

    description = "Wait, then answer."
    timeout = 1.0
    input_schema = {"sink": fields.String(required=True), "seconds": fields.Float(required=True)}
    output_schema = {"waited": fields.Float(required=True)}

    def call(self, *, sink, seconds):
        record(sink, f"{self.context.run_id} dawdle-start")
        time.sleep(seconds)
        record(sink, f"{self.context.run_id} dawdle-end")
        return {"waited": seconds}


class SlowTransfer(Dawdle):
    """Moves money slowly: a side effect that may still happen after its time is up."""

    description = "Transfer money, slowly."
    side_effects = True


class DawdleWorkflow(Workflow):
    input_schema = {"sink": fields.String(required=True), "seconds": fields.Float(required=True)}
    wait = tool_step(Dawdle)


class SlowTransferWorkflow(Workflow):
    input_schema = {"sink": fields.String(required=True), "seconds": fields.Float(required=True)}
    transfer = tool_step(SlowTransfer)

    @step
    def receipt(self):
        return {"waited": self.run.state["transfer"]["waited"]}


class GenerousCaps(Workflow):
    """Asks for looser caps than the deployment's: they must not loosen anything."""

    max_running_per_user = 100
    max_running = 100
    input_schema = {"sink": fields.String(required=True), "gate": fields.String(required=True)}

    @step
    def hold(self):
        record(self.run.input["sink"], f"{self.run.id} holding")
        GATES[self.run.input["gate"]].wait(30)


class Reserve(Tool):
    """Reserves stock in a system without idempotency keys: never to be repeated blindly."""

    description = "Reserve stock."
    side_effects = True
    input_schema = {"sink": fields.String(required=True), "sku": fields.String(required=True)}
    output_schema = {"reservation": fields.String(required=True)}

    def call(self, *, sink, sku):
        record(sink, f"{self.context.run_id} reserve {sku}")
        gate = os.environ.get("RUBOT_TEST_RESERVE_GATE")
        if gate:  # the kill test holds the reservation here until the worker is killed
            deadline = time.monotonic() + 30
            while not Path(gate).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return {"reservation": f"res-{sku}"}


class ReserveWorkflow(Workflow):
    input_schema = {"sink": fields.String(required=True), "sku": fields.String(required=True)}
    reserve = tool_step(Reserve)

    @step
    def confirm(self):
        return {"reservation": self.run.state["reserve"]["reservation"]}


# The re-sent turn test: turn 1's tool call waits here until the test has re-sent turn 1.
LATCHES: dict[str, threading.Event] = {}


class Latch(Tool):
    description = "Wait until the test opens the latch."
    input_schema = {"name": fields.String(required=True)}
    output_schema = {"opened": fields.Boolean(required=True)}

    def call(self, *, name):
        return {"opened": LATCHES[name].wait(30)}


class LatchAgent(Agent):
    instructions = "Open the latch, then answer."
    input_schema = {"name": fields.String(required=True)}
    output_schema = {"done": fields.Boolean(required=True)}
    tools = (Latch,)
    model = "scripted"


class LatchWorkflow(Workflow):
    input_schema = {"name": fields.String(required=True)}
    ask = agent_step(LatchAgent)
