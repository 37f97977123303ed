"""An Operation for the operation tests: review, then act on the verdict (or remedy a failed review).

Every leg appends one line to the file named by its input's ``sink`` (effects counted outside the ledger). The
routing can pause between legs for the kill tests: with ``pause`` naming a file that exists, it writes
``<pause>.reached`` and blocks (bounded) until the file is gone — the moment a test SIGKILLs the worker.
"""

from __future__ import annotations

import time
from pathlib import Path

import pipeline
from pipeline import Operation, Workflow, step


def _note(sink: str, line: str) -> None:
    with Path(sink).open("a") as handle:
        handle.write(line + "\n")


class ReviewLeg(Workflow):
    @step
    def review(self):
        _note(self.run.input["sink"], f"review {self.run.id}")
        if self.run.input.get("fail"):
            raise ValueError("the reviewer could not decide")
        return {"verdict": "go"}


class ActLeg(Workflow):
    @step
    def act(self):
        _note(self.run.input["sink"], f"act {self.run.id}")
        return {"acted_on": self.run.input["verdict"]}


class RemedyLeg(Workflow):
    @step
    def remedy(self):
        _note(self.run.input["sink"], f"remedy {self.run.id}")
        return {"remedied": self.run.input["why"]}


def pause_point(input: dict, where: str) -> None:
    """Block here while the pause file for ``where`` exists (the test kills the worker meanwhile)."""
    pause = input.get("pause")
    if not pause or input.get("pause_at") != where or not Path(pause).exists():
        return
    Path(f"{pause}.reached").touch()
    deadline = time.monotonic() + 120
    while Path(pause).exists() and time.monotonic() < deadline:
        time.sleep(0.05)


class ReviewThenAct(Operation):
    entry_points = ("review_then_act", "tests.review-then-act")

    @classmethod
    def launch(cls, input, subject=None, context=None):
        review = pipeline.run(ReviewLeg, input=input, subject=subject, context=context)
        if review.status == "failed":
            return pipeline.run(RemedyLeg, input={"sink": input["sink"], "why": review.error["reason"]})
        pause_point(input, "before_second")
        act = pipeline.enqueue(ActLeg, input={"sink": input["sink"], "verdict": review.output["verdict"]})
        pause_point(input, "after_second_launched")
        return pipeline.wait(act)


class ReturnsValue(Operation):
    """Routing that returns a plain value: the operation's run completes with it as its output."""

    @classmethod
    def launch(cls, input, subject=None, context=None):
        review = pipeline.run(ReviewLeg, input=input)
        return {"review_status": review.status, "children": 1}


class HeldLeg(Workflow):
    """A leg that stays running while the file named ``hold`` exists (bounded): its parent parks meanwhile."""

    @step
    def hold(self):
        hold = Path(self.run.input["hold"])
        Path(f"{hold}.reached").touch()
        deadline = time.monotonic() + 60
        while hold.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        _note(self.run.input["sink"], f"held {self.run.id}")
        return {"held": True}


class WaitsForHeld(Operation):
    @classmethod
    def launch(cls, input, subject=None, context=None):
        held = pipeline.run(HeldLeg, input=input)
        return pipeline.run(ActLeg, input={"sink": input["sink"], "verdict": held.status})
