"""The project's workflow: a refund a support lead approves."""

from marshmallow import fields

from pipeline import Workflow, approval_step, step


class ReviewRefund(Workflow):
    input_schema = {"ticket": fields.Integer(required=True), "amount_cents": fields.Integer(required=True)}
    lead = approval_step(role="support_lead", reason="Refunds need a support lead.")

    @step
    def done(self):
        approval = self.run.approvals[-1]
        return {"ticket": self.run.input["ticket"], "approved_by": approval.decided_by}
