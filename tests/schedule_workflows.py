"""Scheduled workflows of the tests. Only processes that are told to (``RUBOT_WORKFLOW_MODULES``) import this
module, so the other tests' beats do not launch them."""

from __future__ import annotations

import time

from celery.schedules import crontab
from marshmallow import fields

from pipeline import Workflow, every, step

OPEN_TICKETS = [101, 102, 103, 104, 105, 106]


class Heartbeat(Workflow):
    """Every two seconds: records which tick launched it."""

    schedule = every(2)

    @step
    def beat(self):
        return {"tick": self.run.context["schedule"]["tick"]}


class ReviewOpenTickets(Workflow):
    """Nightly, one run per open ticket, at most two at a time."""

    schedule = crontab(minute=0, hour=3)
    input_schema = {"ticket": fields.Integer(required=True)}
    max_running = 2

    @classmethod
    def batch(cls, tick):
        return [({"type": "ticket", "id": n}, {"ticket": n}) for n in OPEN_TICKETS]

    @step
    def review(self):
        time.sleep(0.2)  # long enough for the runs to overlap if the cap did not hold them back
        return {"ticket": self.run.input["ticket"], "reviewed": True}
