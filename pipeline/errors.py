"""The whole Rubot exception tree.

Two branches, so callers can tell whose fault a problem is:

* :class:`DefinitionError` — developer misuse found while classes are created or an API is called wrongly
  (a malformed workflow, waiting inside a worker task). Fix the code.
* :class:`RunError` — something went wrong while a run was executing (bad input, a schema violation, a tool
  failure, a decision on an approval that is already decided). The run records it with a ``reason`` so the
  event trail explains the failure.

Every error carries a stable ``reason`` string (what ends up in ``run.error["reason"]``) and optional
``details`` (e.g. marshmallow field errors). They are plain ``Exception`` subclasses whose constructor
arguments survive pickling-free round trips through ``args``.
"""

from __future__ import annotations

from typing import Any


class RubotError(Exception):
    """Base of every error Rubot raises on purpose."""

    reason: str = "error"

    def __init__(self, message: str, *, details: Any = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if reason is not None:
            self.reason = reason

    def as_dict(self) -> dict[str, Any]:
        """The JSON form stored on a failed run."""
        data: dict[str, Any] = {"reason": self.reason, "type": type(self).__name__, "message": self.message}
        if self.details is not None:
            data["details"] = self.details
        return data


# --- developer misuse -------------------------------------------------------------------------------------


class DefinitionError(RubotError):
    """A Tool, Agent, Workflow or Operation class is malformed; raised at import time."""

    reason = "definition_error"


class ConfigurationError(DefinitionError):
    """Settings are missing or contradictory (unknown database URL scheme, workflow module not importable)."""

    reason = "configuration_error"


class UnpricedModel(ConfigurationError):
    """An agent's model has no entry in the price table. Rubot refuses to call it: its cost could not be recorded
    (budgets would be blind), so the run fails before any request is sent."""

    reason = "unpriced_model"


class WaitInsideTaskError(DefinitionError):
    """``pipeline.run``/``pipeline.wait`` was called inside a worker task, where waiting would deadlock."""

    reason = "wait_inside_task"


class UnknownWorkflowError(DefinitionError):
    """No workflow is registered under the requested name."""

    reason = "unknown_workflow"


class UnknownOperationError(DefinitionError):
    """No Operation (or entry point) is registered under the name given to ``pipeline.trigger``."""

    reason = "unknown_operation"


class DatabaseNotMigratedError(ConfigurationError):
    """The database has no Rubot tables or an older schema; run ``rubot migrate``."""

    reason = "database_not_migrated"


# --- runtime failures ---------------------------------------------------------------------------------------


class RunError(RubotError):
    """A failure while a run executes; recorded on the run as ``run.error``."""

    reason = "run_error"


class ValidationError(RunError):
    """Data did not match a marshmallow schema. ``details`` holds the field errors."""

    reason = "validation_error"


class InvalidRunInput(ValidationError):
    """The run's input did not match the workflow's ``input_schema``; no step ran."""

    reason = "invalid_input"


class InvalidToolInput(ValidationError):
    reason = "invalid_tool_input"


class InvalidToolOutput(ValidationError):
    reason = "invalid_tool_output"


class InvalidAgentInput(ValidationError):
    reason = "invalid_agent_input"


class InvalidAgentOutput(ValidationError):
    reason = "invalid_agent_output"


class StepInputError(RunError):
    """A step's ``input=`` callable raised, so the step body never started."""

    reason = "step_input_error"


class ConditionError(RunError):
    """An ``if_`` / ``unless`` condition or a ``choice`` branch raised, so nothing was decided."""

    reason = "condition_error"


class MaxVisitsExceeded(RunError):
    """A ``choice`` would send the run back once more than its ``max_visits`` allows: the loop ends here."""

    reason = "max_visits_exceeded"


class OutputError(RunError):
    """The workflow's ``output`` callable raised: the run fails instead of completing without its output."""

    reason = "output_error"


class StepFailed(RunError):
    """A step body raised an exception that is not a Rubot error."""

    reason = "step_failed"


class ToolError(RunError):
    """Raised by a tool to report a failure the workflow (or the model) should see."""

    reason = "tool_error"


class ToolDenied(RunError):
    """A ``tool_step``'s tool may not run for the run's user (``Tool.permitted_for`` or a policy hook said no).
    Nothing ran and nothing was claimed."""

    reason = "tool_denied"


class ToolTimeout(ToolError):
    """A tool did not return within its ``timeout``. Its work may still finish in the background: a tool with side
    effects is therefore never assumed not to have acted (the run goes to ``needs_reconciliation``)."""

    reason = "tool_timeout"


class ModelError(RunError):
    """The model provider could not produce an answer.

    ``retryable`` is False: the request itself was refused (bad request, bad key, a model call forbidden in
    tests), so sending it again would fail the same way.
    """

    reason = "model_error"
    retryable: bool = False
    #: True when the request may have reached the provider (and been billed) although no response came back:
    #: a read timeout or a connection lost after sending. The agent loop then records an estimated charge.
    maybe_billed: bool = False


class ModelUnavailable(ModelError):
    """The provider is busy or unreachable (429, 529, other 5xx, a timeout, a lost connection): try again later.

    The turn's task retries with backoff; ``retry_after`` (seconds, from the provider's ``retry-after`` header)
    is a lower bound for that backoff when present. ``status`` is the HTTP status, or None when no response came.
    """

    reason = "model_unavailable"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        details: Any = None,
        reason: str | None = None,
        maybe_billed: bool = False,
    ) -> None:
        super().__init__(message, details=details, reason=reason)
        self.status = status
        self.retry_after = retry_after
        self.maybe_billed = maybe_billed


class BatchFailed(RunError):
    """A turn sent through the Message Batches API errored, expired or was cancelled more often than allowed."""

    reason = "batch_failed"


class NotSerializable(RunError):
    """A value meant for the database (input, state, a step result) is not JSON-serializable."""

    reason = "not_serializable"


class RunNotFound(RunError):
    reason = "run_not_found"


class RoutingChanged(RunError):
    """An Operation's routing, executed again from its ledger, launched another workflow than the one recorded at
    the same point: routing must decide only from its input and the runs it launched (no clock, no randomness)."""

    reason = "routing_changed"


class RunIdInUse(RunError):
    """A run id given to ``enqueue``/``rubot.launch`` already names a run of another workflow."""

    reason = "run_id_in_use"


class InvalidForkPoint(RunError):
    """``pipeline.replay(run, from_step=...)`` names no step of the run's workflow, or a turn the run never had."""

    reason = "invalid_fork_point"


class InvalidRunState(RunError):
    """The requested transition is not possible from the run's current status."""

    reason = "invalid_state"


class ApprovalError(RunError):
    reason = "approval_error"


class NoPendingApproval(ApprovalError):
    reason = "no_pending_approval"


class ApprovalAlreadyDecided(ApprovalError):
    """The approval was decided before; a decision is recorded once."""

    reason = "approval_already_decided"


class RunFailed(RunError):
    """``RunHandle.get()`` found the run failed, cancelled or set aside; ``details`` is the run's ``error``."""

    reason = "run_failed"


class ApprovalForbidden(ApprovalError):
    """The principal may not decide this approval (it lacks the role and is not the assignee, or a policy said
    no). The refusal is recorded as an ``approval.refused`` event; nothing else changes."""

    reason = "approval_forbidden"


class RevisionsExhausted(ApprovalError):
    """Changes were requested on an approval whose step already used up its ``max_revisions``."""

    reason = "max_revisions_exceeded"


class NotificationFailed(RubotError):
    """A notifier could not deliver a notification; the outbox keeps it and it is sent again."""

    reason = "notification_failed"


class WaitTimeout(RunError):
    """``pipeline.wait`` gave up before the run reached a resting status."""

    reason = "wait_timeout"
