"""The conference-travel reference app: the workflows and operation of DESIGN.md §3, as written there (the
operation also routes a failed review: it returns that run instead of reading an output it does not have).

Tools live in :mod:`tools.travel_policy` and :mod:`tools.website`, the review agent in
:mod:`agents.conference_review`. Workers import this module (``RUBOT_WORKFLOW_MODULES``) to find the
workflows by name.
"""

from __future__ import annotations

from marshmallow import fields

import pipeline
from pipeline import Operation, Workflow, agent_step, approval_step, step, tool_step
from rubot_app.agents.conference_review import ReviewConferenceFit
from rubot_app.tools.travel_policy import LoadTravelPolicy
from rubot_app.tools.website import FetchConferenceWebsite

__all__ = [
    "ConferenceTravelApprovalOperation",
    "ConferenceTravelManualApprovalWorkflow",
    "ConferenceTravelReviewWorkflow",
    "FetchConferenceWebsite",
    "LoadTravelPolicy",
    "ReviewConferenceFit",
]


class ConferenceTravelReviewWorkflow(Workflow):
    input_schema = {
        "employee_id": fields.String(required=True),
        "conference_name": fields.String(required=True),
        "conference_url": fields.String(required=True),
        "estimated_cost_cents": fields.Integer(required=True, strict=True),
    }

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
        if review_run.status != "completed":  # e.g. no travel policy for the employee: nothing to approve
            return review_run
        if review_run.output["auto_approvable"]:
            return review_run
        return pipeline.run(
            ConferenceTravelManualApprovalWorkflow,
            input={"review": review_run.output},
            subject=subject,
            context=context,
        )
