"""The one place where a workflow's plan becomes a Celery canvas.

A run is dispatched in *segments*: the steps not yet in the effects ledger, in plan order, up to and
including the next step that ends a segment (an approval, an agent step whose turns are tasks of their
own, or a ``choice``, whose decision dispatches only the steps its branch needs; see
:mod:`pipeline.engine.branching`). Skipped steps and steps a choice went past are in the ledger too, and a loop's
earlier visits are kept under other keys (:mod:`pipeline.engine.visits`), so "not yet in the ledger" is always
what is left to run. Each step is an immutable ``rubot.step(run_id, name)`` signature; a parallel group becomes a chord
whose body is ``rubot.join``; the step (or join) that records the plan's last unit completes the run. Because
a segment is compiled from SQL every time, resuming after an approval, an agent step (or, later, a crash)
is the same operation as starting, and messages carry ids only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from celery import Celery, chain, chord, group
from celery.canvas import Signature

from pipeline.definitions.dsl import ParallelGroup, StepSpec

if TYPE_CHECKING:
    from pipeline.definitions.workflow import Workflow


STEP_TASK = "rubot.step"
JOIN_TASK = "rubot.join"
FINISH_TASK = "rubot.finish"
RESUME_TASK = "rubot.resume"
LAUNCH_TASK = "rubot.launch"
FORGET_TASK = "rubot.forget_results"
TURN_TASK = "rubot.agent_turn"
TOOL_TASK = "rubot.agent_tool"  # chord body of an agent turn's parallel tool calls
ON_FAILURE_TASK = "rubot.on_failure"  # Workflow.on_failure, once per failed run


def segment(
    app: Celery, workflow: type[Workflow], run_id: str, done: set[str], *, queue: str
) -> tuple[Signature | None, list[str]]:
    """The canvas of the next segment of ``run_id`` and the names of the steps it will run.

    ``None`` when every step is recorded. The last step of the plan completes the run itself (in the transaction
    that records it), so no segment ends with a separate finishing task.
    """
    links: list[Signature] = []
    names: list[str] = []

    def step_sig(spec: StepSpec, *, in_chord: bool = False) -> Signature:
        sig = app.signature(STEP_TASK, args=(run_id, spec.name), immutable=True, queue=queue)
        if in_chord:
            # Chord members must store a result so the join can count them; the join forgets them again.
            sig.set(ignore_result=False)
        names.append(spec.name)
        return sig

    for unit in workflow.plan():
        if isinstance(unit, ParallelGroup):
            pending = [s for s in unit.steps if s.name not in done]
            if len(pending) == 1:
                links.append(step_sig(pending[0]))
            elif pending:
                header = group([step_sig(s, in_chord=True) for s in pending])
                links.append(chord(header, app.signature(JOIN_TASK, args=(run_id, unit.name), queue=queue)))
            continue
        if unit.name in done:
            continue
        links.append(step_sig(unit))
        if unit.ends_segment:
            return _chain(links), names
    return (_chain(links) if links else None), names


def _chain(links: list[Signature]) -> Signature:
    return links[0] if len(links) == 1 else chain(*links)
