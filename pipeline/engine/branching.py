"""Branches decided at run time: skipped steps and ``choice`` steps.

Both are decided in the step's own task (``rubot.step``) from the run's input, state and context, and the decision
is recorded in the ledger in the transaction that acts on it, so a redelivered message, a resumed run or a
recovered one finds it there and never decides again:

* a step whose ``if_`` is falsy (or ``unless`` truthy) gets a ledger row saying it was skipped and a
  ``step.skipped`` event; the chain goes on (a skipped step that ends a segment — an approval, an agent step, a
  choice — dispatches the next segment itself, in the same transaction);
* a ``choice`` ends its segment (:mod:`pipeline.engine.compiler`): nothing after it was sent. Under the run's lock
  it checks that every earlier step is recorded (a stale message of an earlier visit decides nothing), records its
  decision — the steps it skips, or the loop it restarts (:mod:`pipeline.engine.visits`) — and compiles the next
  segment from the ledger (:func:`pipeline.engine.dispatch.plan_next`) in that same transaction. Only the steps the
  branch needs are dispatched. A loop that would run more than ``max_visits`` times fails the run with reason
  ``max_visits_exceeded`` instead.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pipeline.definitions.dsl import ChoiceStep, ParallelGroup, StepSpec
from pipeline.engine import bodies, dispatch, transitions, visits
from pipeline.engine.snapshots import RunView
from pipeline.engine.transitions import Outcome
from pipeline.errors import ConditionError, MaxVisitsExceeded, RubotError
from pipeline.store import queries
from pipeline.store.tables import QUEUED, RUNNING

if TYPE_CHECKING:
    from pipeline.definitions.workflow import Workflow
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.branching")


def _holds(workflow: type[Workflow], spec: StepSpec, attribute: str, condition: Any, view: RunView) -> bool:
    try:
        return bool(bodies.evaluate(workflow, condition, view))
    except RubotError:
        raise
    except Exception as exc:
        detail = f"missing key {exc}" if isinstance(exc, KeyError) else f"{type(exc).__name__}: {exc}"
        raise ConditionError(f"{attribute} of step {spec.name!r} raised before deciding: {detail}") from exc


def skip_reason(workflow: type[Workflow], spec: StepSpec, view: RunView) -> str | None:
    """``"if_"`` or ``"unless"`` when ``spec`` must be skipped now, else ``None``."""
    if spec.if_ is not None and not _holds(workflow, spec, "if_", spec.if_, view):
        return "if_"
    if spec.unless is not None and _holds(workflow, spec, "unless", spec.unless, view):
        return "unless"
    return None


def skip(
    runtime: Runtime, workflow: type[Workflow], run_id: str, spec: StepSpec, because: str, task_id: str | None
) -> Outcome:
    """Record ``spec`` as skipped; go on with the chain, or dispatch the next segment if ``spec`` ended one."""
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        if run.status not in (QUEUED, RUNNING):
            return Outcome.HALT
        if queries.get_effect(s, run_id, spec.name) is not None:
            queries.add_event(s, run_id, "step.duplicate_ignored", spec.name, task_id=task_id)
            return Outcome.CONTINUE
        transitions.skip_step(
            s,
            run,
            spec.name,
            spec.kind,
            key=spec.state_key,
            because=because,
            task_id=task_id,
        )
        if workflow.in_last_unit(spec.name):
            return dispatch.finish_after(s, runtime, run_id, workflow, spec.name)
        if not spec.ends_segment:
            return Outcome.CONTINUE
        send = dispatch.plan_next(s, runtime, run, workflow)
    send()
    return Outcome.HALT


def decide(workflow: type[Workflow], spec: ChoiceStep, view: RunView) -> str | None:
    """The step ``spec`` goes to: the first branch whose condition holds, else ``otherwise`` (``None``: next)."""
    for branch in spec.branches:
        if _holds(workflow, spec, f"when(..., {branch.target!r})", branch.condition, view):
            return branch.target
    return spec.otherwise


def choose(
    runtime: Runtime, workflow: type[Workflow], run_id: str, spec: ChoiceStep, view: RunView, task_id: str | None
) -> Outcome:
    """Decide ``spec``, record the decision and dispatch what the branch needs, in one transaction."""
    try:
        target = decide(workflow, spec, view)
    except RubotError as exc:
        return _fail(runtime, run_id, spec, exc.as_dict(), task_id)
    plan = workflow.plan()
    order = [u.name for u in plan]
    here = order.index(spec.name)
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        if run.status != RUNNING:
            return Outcome.HALT
        done = queries.completed_ops(s, run_id)
        if spec.name in done:
            queries.add_event(s, run_id, "step.duplicate_ignored", spec.name, task_id=task_id)
            return Outcome.HALT  # its decision already dispatched what follows
        earlier = _names(plan[:here])
        if any(name not in done for name in earlier):
            # A message of an earlier visit, delivered again after the loop restarted: the current visit decides.
            queries.add_event(s, run_id, "choice.stale", spec.name, task_id=task_id)
            return Outcome.HALT
        if target is None:
            transitions.decide_branch(s, run, spec.name, {"to": None, "direction": "next"}, task_id=task_id)
        elif order.index(target) > here:
            between = plan[here + 1 : order.index(target)]
            skipped = [(m.name, m.kind, m.state_key) for u in between for m in _members(u)]
            decision: dict[str, Any] = {"to": target, "direction": "forward", "skipped": [n for n, _, _ in skipped]}
            transitions.decide_branch(s, run, spec.name, decision, skipped=skipped, task_id=task_id)
        else:
            jumped = visits.jumps_done(done, spec.name)
            bound = spec.max_visits or 0
            if jumped + 1 >= bound:
                error = MaxVisitsExceeded(
                    f"{spec.name} would run the steps from {target!r} a {_nth(jumped + 2)} time; max_visits is {bound}",
                    details={"to": target, "max_visits": bound, "visits": jumped + 1},
                )
                transitions.fail_step(s, run, spec.name, spec.kind, error.as_dict(), task_id=task_id)
                return Outcome.HALT
            again = _names(plan[order.index(target) : here])
            decision = {"to": target, "direction": "back", "visit": jumped + 2, "max_visits": bound}
            transitions.loop_back(s, run, spec.name, decision, steps=again, task_id=task_id)
        send = dispatch.plan_next(s, runtime, run, workflow)
    send()
    return Outcome.HALT


def _members(unit: Any) -> tuple[StepSpec, ...]:
    return unit.steps if isinstance(unit, ParallelGroup) else (unit,)


def _names(units: list[Any]) -> list[str]:
    return [m.name for u in units for m in _members(u)]


def _nth(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _fail(runtime: Runtime, run_id: str, spec: StepSpec, error: dict[str, Any], task_id: str | None) -> Outcome:
    with runtime.db.transaction() as s:
        run = queries.lock_run(s, run_id)
        if run.status in (QUEUED, RUNNING):
            transitions.fail_step(s, run, spec.name, spec.kind, error, task_id=task_id)
    return Outcome.HALT
