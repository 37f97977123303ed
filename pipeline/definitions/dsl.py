"""The workflow DSL as data: step builders return frozen step descriptions.

Nothing here runs anything. ``tool_step(LoadTravelPolicy, input=...)`` in a class body is just a
:class:`ToolStep` record; :mod:`pipeline.definitions.workflow` names, checks and orders the records when the class is
created, and :mod:`pipeline.engine.compiler` turns them into Celery signatures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal

InputFn = Callable[[dict, dict, dict], Any]
#: ``if_=`` / ``unless=`` / a ``when`` branch / ``compute``: a callable ``(input, state, context)`` or the name of a
#: workflow method ``def name(self, input, state, context)``.
Condition = Callable[[dict, dict, dict], Any] | str
Outcome = Literal["fail", "continue"]
ChangesOutcome = Literal["fail", "continue", "revise"]
OnExpire = Literal["reject", "escalate"]


@dataclass(frozen=True)
class StepSpec:
    """Base of all step descriptions. ``name`` is filled from the class attribute when not given."""

    name: str = field(default="", kw_only=True)
    #: Run the step only when ``if_`` is truthy / ``unless`` is falsy; otherwise it is skipped (recorded as such).
    if_: Condition | None = field(default=None, kw_only=True)
    unless: Condition | None = field(default=None, kw_only=True)
    #: The state key the step's result is stored under (default: the step's name).
    save_as: str | None = field(default=None, kw_only=True)

    kind = "step"
    # True for steps that end a dispatch segment: what follows is dispatched again from SQL once the step is
    # recorded (after a person decided an approval, or after an agent's last model turn).
    ends_segment = False

    def __set_name__(self, owner: type, attribute: str) -> None:
        # Class-body assignment names the step; the workflow metaclass reads names from here.
        if not self.name:
            object.__setattr__(self, "name", attribute)

    def named(self, name: str) -> StepSpec:
        return self if self.name else replace(self, name=name)

    @property
    def state_key(self) -> str:
        """Where the step's result goes in ``run.state``: ``save_as``, else the step's name."""
        return self.save_as or self.name

    @property
    def conditional(self) -> bool:
        return self.if_ is not None or self.unless is not None


@dataclass(frozen=True)
class ToolStep(StepSpec):
    tool: Any
    input: InputFn | None = None
    kind = "tool"


@dataclass(frozen=True)
class AgentStep(StepSpec):
    agent: Any
    input: InputFn | None = None
    # Send this step's model turns through the Message Batches API (half price; the run parks until they end).
    batch: bool = False
    kind = "agent"
    ends_segment = True


@dataclass(frozen=True)
class FunctionStep(StepSpec):
    func: Callable[..., Any]
    kind = "function"

    def __call__(self, workflow: Any) -> Any:
        return self.func(workflow)


@dataclass(frozen=True)
class ApprovalStep(StepSpec):
    role: str | None
    reason: str = ""
    assignee: str | None = None
    expires_in: timedelta | None = None
    on_reject: Outcome = "fail"
    on_changes_requested: ChangesOutcome = "fail"
    # What the expiry sweep does once ``expires_in`` has passed without a decision (see pipeline.engine.expiry).
    # Left unset it means "reject"; the workflow check fills it in whenever ``expires_in`` is given.
    on_expire: OnExpire | None = None
    escalate_to: str | None = None
    escalate_expires_in: timedelta | None = None
    # Who is shown what (pipeline.engine.evidence) and who may decide beyond the role (pipeline.auth.authorize).
    summary: str | Callable[..., Any] | None = None
    approvers: Callable[..., Any] | None = None
    # When a reminder goes out if nobody decided yet (before expires_in, when both are set).
    sla: timedelta | None = None
    # on_changes_requested="revise": run again from this earlier step, at most max_revisions times.
    revise_from: str | None = None
    max_revisions: int | None = None
    kind = "approval"
    ends_segment = True


@dataclass(frozen=True)
class RouteStep(StepSpec):
    """The one step of an Operation's run: its routing code, executed by the engine in a worker.

    Built by :class:`pipeline.definitions.operation.Operation` (never written in a workflow body). The routing
    launches and awaits child runs; while it waits the run parks (``waiting_for_child``), so the step ends its
    segment and records itself when the routing returns (see :mod:`pipeline.operations`).
    """

    operation: Any
    input: InputFn | None = None  # the step gets the run's input, like any step without input=
    kind = "operation"
    ends_segment = True


@dataclass(frozen=True)
class ComputeStep(StepSpec):
    """Inline shaping: ``fn(input, state, context)`` (or a workflow method of that shape) becomes the step's result."""

    fn: Condition
    kind = "compute"


@dataclass(frozen=True)
class When:
    """One branch of a :func:`choice`: go to step ``target`` when ``condition`` is truthy."""

    condition: Condition
    target: str


@dataclass(frozen=True)
class ChoiceStep(StepSpec):
    """A branch decided at run time: the first ``when`` whose condition holds names the step to go to, else
    ``otherwise`` (``None``: the next step). A target earlier in the plan is a loop, bounded by ``max_visits``.

    It ends a dispatch segment: nothing after it is sent until it decided, and its decision is recorded (with the
    steps it skipped, or the loop it restarted) in the transaction that dispatches what follows.
    """

    branches: tuple[When, ...] = ()
    otherwise: str | None = None
    #: How many times the steps of a loop (from the earlier target to this step) may run; required for loops.
    max_visits: int | None = None
    #: ``"back"`` for :func:`jump_to`, ``"forward"`` for :func:`skip_to`, ``"any"`` for :func:`choice`.
    direction: Literal["any", "back", "forward"] = "any"
    kind = "choice"
    ends_segment = True

    def targets(self) -> list[str]:
        named = [b.target for b in self.branches]
        return named + ([self.otherwise] if self.otherwise is not None else [])


@dataclass(frozen=True)
class ParallelGroup:
    """Steps that run side by side (a Celery chord); the next step starts when all of them finished."""

    steps: tuple[StepSpec, ...]
    name: str = ""
    kind = "parallel"

    def __set_name__(self, owner: type, attribute: str) -> None:
        if not self.name:
            object.__setattr__(self, "name", attribute)


def tool_step(
    tool: Any,
    *,
    input: InputFn | None = None,
    name: str | None = None,
    if_: Condition | None = None,
    unless: Condition | None = None,
    save_as: str | None = None,
) -> ToolStep:
    """Call ``tool`` (a Tool subclass or a registered tool name) with ``input(input, state, context)``.

    ``if_`` / ``unless`` (every step kind takes them): run the step only when the condition holds / does not.
    ``save_as``: store the result in ``state[save_as]`` instead of ``state[<step name>]``.
    """
    return ToolStep(tool=tool, input=input, name=name or "", if_=if_, unless=unless, save_as=save_as)


def agent_step(
    agent: Any,
    *,
    input: InputFn | None = None,
    batch: bool = False,
    name: str | None = None,
    if_: Condition | None = None,
    unless: Condition | None = None,
    save_as: str | None = None,
) -> AgentStep:
    """Ask ``agent`` for a structured answer to ``input(input, state, context)``.

    ``batch=True`` sends the step's model turns through the Message Batches API at half price: after each turn is
    submitted the run parks (no worker, no message) until beat's ``rubot.collect_batches`` finds the batch ended,
    records the turn and resumes the run. For work that can wait (most batches end within an hour, all within 24).
    """
    return AgentStep(agent=agent, input=input, batch=batch, name=name or "", if_=if_, unless=unless, save_as=save_as)


def step(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    if_: Condition | None = None,
    unless: Condition | None = None,
    save_as: str | None = None,
) -> Any:
    """Decorate a workflow method ``def name(self)`` that reads and writes ``self.run.state``.

    The return value, when not ``None``, becomes ``state[name]`` (``state[save_as]`` with ``save_as``).
    """
    if func is None:
        return lambda f: FunctionStep(func=f, name=name or "", if_=if_, unless=unless, save_as=save_as)
    if isinstance(func, str):
        raise TypeError("use @step(name=...) to rename a step")
    return FunctionStep(func=func, name=name or "", if_=if_, unless=unless, save_as=save_as)


def compute(
    fn: Condition,
    *,
    name: str | None = None,
    if_: Condition | None = None,
    unless: Condition | None = None,
    save_as: str | None = None,
) -> ComputeStep:
    """A step whose result is ``fn(input, state, context)`` (or the workflow method named ``fn``): inline shaping
    between steps, e.g. ``totals = compute(lambda input, state, context: {"sum": sum(state["lines"])})``."""
    return ComputeStep(fn=fn, name=name or "", if_=if_, unless=unless, save_as=save_as)


def when(condition: Condition, target: str) -> When:
    """A branch of :func:`choice`: go to step ``target`` when ``condition(input, state, context)`` is truthy."""
    return When(condition=condition, target=target)


def choice(
    *branches: When,
    otherwise: str | None = None,
    max_visits: int | None = None,
    name: str | None = None,
    if_: Condition | None = None,
    unless: Condition | None = None,
) -> ChoiceStep:
    """Decide where the run goes next: the first ``when(condition, "step")`` that holds, else ``otherwise``
    (``None``: the next step). A later target skips the steps in between (each recorded as skipped); an earlier
    target runs the steps from there again, at most ``max_visits`` times in all (required for such a loop; one
    more jump back fails the run with reason ``max_visits_exceeded``)."""
    return ChoiceStep(
        branches=tuple(branches), otherwise=otherwise, max_visits=max_visits, name=name or "", if_=if_, unless=unless
    )


def jump_to(
    target: str,
    *,
    max_visits: int | None = None,
    if_: Condition | None = None,
    unless: Condition | None = None,
    name: str | None = None,
) -> ChoiceStep:
    """Go back to the earlier step ``target`` (when ``if_``/``unless`` allow; otherwise go on): a loop, run at most
    ``max_visits`` times in all."""
    return ChoiceStep(
        otherwise=target, max_visits=max_visits, direction="back", name=name or "", if_=if_, unless=unless
    )


def skip_to(
    target: str, *, if_: Condition | None = None, unless: Condition | None = None, name: str | None = None
) -> ChoiceStep:
    """Go forward to the later step ``target`` (when ``if_``/``unless`` allow), skipping the steps in between."""
    return ChoiceStep(otherwise=target, direction="forward", name=name or "", if_=if_, unless=unless)


def approval_step(
    *,
    role: str | None = None,
    reason: str = "",
    assignee: str | None = None,
    expires_in: timedelta | None = None,
    on_reject: Outcome = "fail",
    on_changes_requested: ChangesOutcome = "fail",
    on_expire: OnExpire | None = None,
    escalate_to: str | None = None,
    escalate_expires_in: timedelta | None = None,
    summary: str | Callable[..., Any] | None = None,
    approvers: Callable[..., Any] | None = None,
    sla: timedelta | None = None,
    revise_from: str | None = None,
    max_revisions: int | None = None,
    name: str | None = None,
    if_: Condition | None = None,
    unless: Condition | None = None,
) -> ApprovalStep:
    """Park the run until a person with ``role`` approves, rejects or requests changes.

    ``on_reject="continue"`` (or ``on_changes_requested="continue"``) lets later steps handle the decision
    (it is in ``state[name]["decision"]``); the default ends the run as failed with reason ``rejected`` /
    ``changes_requested``.

    ``expires_in`` is the approval's SLA. When it passes without a decision, the beat sweep
    (``rubot.expire_approvals``) resolves it by ``on_expire``: ``"reject"`` (the default) rejects it as
    ``rubot:expiry`` and the run fails with reason ``approval_expired`` (or continues, with
    ``on_reject="continue"``); ``"escalate"`` hands the same approval to ``escalate_to`` with a new deadline of
    ``escalate_expires_in`` (default: ``expires_in`` again). An escalated approval that expires is rejected.

    ``sla`` sends the approvers a reminder when it passes without a decision (once; before ``expires_in``).

    ``summary`` is a one-line description for approvers: a ``str.format`` template over ``input``, ``state`` and
    ``context`` (``"Refund {input[amount_cents]} cents"``) or a callable ``(input, state, context) -> str``.
    ``approvers`` narrows who may decide beyond the role (a callable taking a
    :class:`pipeline.auth.authorize.ApproverCheck`, returning True or a reason to refuse).

    ``on_changes_requested="revise"`` with ``revise_from="draft"`` and ``max_revisions=n`` sends the run back to
    the earlier step ``draft`` when changes are requested: the steps from there run again (the reviewer's comment
    is in ``state[name]["comment"]``) and the approval is asked again, showing what changed. Changes requested
    once more after ``n`` revisions fail the run with reason ``max_revisions_exceeded``.
    """
    return ApprovalStep(
        role=role,
        reason=reason,
        assignee=assignee,
        expires_in=expires_in,
        on_reject=on_reject,
        on_changes_requested=on_changes_requested,
        on_expire=on_expire,
        escalate_to=escalate_to,
        escalate_expires_in=escalate_expires_in,
        summary=summary,
        approvers=approvers,
        sla=sla,
        revise_from=revise_from,
        max_revisions=max_revisions,
        name=name or "",
        if_=if_,
        unless=unless,
    )


def parallel(*steps: StepSpec, **named_steps: StepSpec) -> ParallelGroup:
    """Run the given steps in parallel: ``checks = parallel(policy=tool_step(...), site=tool_step(...))``."""
    members = list(steps) + [s.named(n) if isinstance(s, StepSpec) else s for n, s in named_steps.items()]
    return ParallelGroup(steps=tuple(members))
