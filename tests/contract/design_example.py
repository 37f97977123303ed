"""DESIGN.md §3, run as written (only import lines added), against whatever RUBOT_* settings the environment
gives. ``tests/test_processes.py`` runs it with Redis + Postgres and a separate ``celery worker`` process.

Usage: python design_example.py EMPLOYEE_ID  → prints one JSON line per observation.
"""

import json
import os
import sys

from marshmallow import fields

import pipeline
import rubot_app.tasks.app  # noqa: F401 - builds this deployment's Celery app from RUBOT_* and installs its runtime
from pipeline import Agent, Operation, Tool, Workflow, agent_step, approval_step, step, tool_step
from rubot_app.tools.travel_policy import TravelPolicyRepository
from rubot_app.tools.website import FetchConferenceWebsite


class LoadTravelPolicy(Tool):
    description = "Load company travel policy and budget rules."
    input_schema = {
        "employee_id": fields.String(required=True),
        "conference_name": fields.String(required=True),
        "conference_url": fields.String(required=True),
        "estimated_cost_cents": fields.Integer(required=True),
    }
    output_schema = {
        **input_schema,
        "budget_limit_cents": fields.Integer(required=True),
        "allowed_topics": fields.List(fields.String(), required=True),
    }

    def call(self, *, employee_id, conference_name, conference_url, estimated_cost_cents):
        policy = TravelPolicyRepository.fetch(employee_id=employee_id, conference_name=conference_name)
        return {
            "employee_id": employee_id,
            "conference_name": conference_name,
            "conference_url": conference_url,
            "estimated_cost_cents": estimated_cost_cents,
            "budget_limit_cents": policy["budget_limit_cents"],
            "allowed_topics": policy["allowed_topics"],
        }


class ReviewConferenceFit(Agent):
    instructions = (
        "Review the conference website content and determine whether the agenda aligns with the "
        "allowed company topics. Explain your reasoning briefly."
    )
    input_schema = {
        "conference_name": fields.String(required=True),
        "conference_url": fields.String(required=True),
        "page_title": fields.String(required=True),
        "page_text": fields.String(required=True),
        "allowed_topics": fields.List(fields.String(), required=True),
    }
    output_schema = {
        "content_matches_policy": fields.Boolean(required=True),
        "confidence_score": fields.Float(required=True),
        "matched_topics": fields.List(fields.String(), required=True),
        "risks": fields.List(fields.String(), required=True),
        "summary": fields.String(required=True),
    }


class ConferenceTravelReviewWorkflow(Workflow):
    policy = tool_step(
        LoadTravelPolicy,
        input=lambda input, state, context: {
            k: input[k] for k in ("employee_id", "conference_name", "conference_url", "estimated_cost_cents")
        },
    )
    conference_site = tool_step(
        FetchConferenceWebsite,
        input=lambda input, state, context: {"conference_url": state["policy"]["conference_url"]},
    )
    conference_review = agent_step(
        ReviewConferenceFit, input=lambda input, state, context: {**state["policy"], **state["conference_site"]}
    )

    @step
    def finalize(self):
        policy, review = self.run.state["policy"], self.run.state["conference_review"]
        within_budget = policy["estimated_cost_cents"] <= policy["budget_limit_cents"]
        auto = (
            within_budget
            and review["content_matches_policy"]
            and review["confidence_score"] >= 0.90
            and not review["risks"]
        )
        self.run.state["finalize"] = {
            "employee_id": policy["employee_id"],
            "within_budget": within_budget,
            "auto_approvable": auto,
            "recommended": auto,
            "risks": review["risks"],
            "confidence_score": review["confidence_score"],
        }


class ConferenceTravelManualApprovalWorkflow(Workflow):
    @step
    def hydrate_review(self):
        self.run.state["finalize"] = self.run.input["review"]

    manager_review = approval_step(role="engineering_manager", reason="Conference travel requires human approval.")

    @step
    def finalize(self):
        self.run.state["finalize"] = {
            **self.run.state["finalize"],
            "auto_approvable": False,
            "approval": self.run.approvals[-1].decision_payload,
        }


class ConferenceTravelApprovalOperation(Operation):
    @classmethod
    def launch(cls, input, subject=None, context=None):
        review_run = pipeline.run(ConferenceTravelReviewWorkflow, input=input, subject=subject, context=context)
        if review_run.output["auto_approvable"]:
            return review_run
        return pipeline.run(
            ConferenceTravelManualApprovalWorkflow,
            input={"review": review_run.output},
            subject=subject,
            context=context,
        )


def observe(**data):
    print(json.dumps(data), flush=True)


def queue_length():
    import redis

    key = os.environ.get("RUBOT_REDIS_KEY_PREFIX", "") + os.environ.get("RUBOT_QUEUE", "rubot")
    return redis.Redis.from_url(os.environ["RUBOT_BROKER_URL"]).llen(key)


run = ConferenceTravelApprovalOperation.launch(
    input={
        "employee_id": sys.argv[1],
        "conference_name": "Rails World",
        "conference_url": "https://rubyonrails.org/world",
        "estimated_cost_cents": 132_500,
    }
)
observe(event="launched", workflow=run.workflow, status=run.status, queue_length=queue_length())
if run.waiting_for_approval:
    run.approve(approved_by="manager@example.com")  # records the decision and re-enqueues the run
    run = pipeline.wait(run)  # or pipeline.get_run(run.id) later
print(run.status, run.output)
observe(event="final", workflow=run.workflow, status=run.status, output=run.output)
