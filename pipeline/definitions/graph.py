"""A workflow's plan as Mermaid flowchart text: what the console's workflow page draws and ``rubot graph`` prints.

Read from the plan the workflow class built at creation (the DSL is data), so the picture is the plan the
compiler runs: steps in order, parallel groups side by side, approvals as decisions with their rejection and
revision edges. Node shapes: a tool step is a box, an agent step a hexagon, an approval a rhombus and a ``@step``
function a rounded box, a ``compute`` step a subroutine box and a ``choice`` (also ``jump_to``/``skip_to``) a
rhombus with an edge to each target (a loop back is dashed and says its ``max_visits``). A step with ``if_`` or
``unless`` says so in its label.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.definitions.dsl import AgentStep, ApprovalStep, ChoiceStep, ComputeStep, ParallelGroup, StepSpec, ToolStep

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def node_id(step: str) -> str:
    return "s_" + _UNSAFE.sub("_", step)


def _label(text: str) -> str:
    return '"' + text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;") + '"'


def _condition(condition: Any) -> str:
    return condition if isinstance(condition, str) else "a condition"


def _guard(spec: StepSpec) -> str:
    if spec.if_ is not None:
        return f" (if {_condition(spec.if_)})"
    if spec.unless is not None:
        return f" (unless {_condition(spec.unless)})"
    return ""


def _node(spec: StepSpec) -> str:
    name = str(spec.name)
    guard = _guard(spec)
    if isinstance(spec, ChoiceStep):
        kind = {"back": "jump_to", "forward": "skip_to"}.get(spec.direction, "choice")
        return f"{node_id(name)}{{{_label(f'{name} · {kind}{guard}')}}}"
    if isinstance(spec, ComputeStep):
        return f"{node_id(name)}[[{_label(f'{name} · compute{guard}')}]]"
    if isinstance(spec, ToolStep):
        tool = getattr(spec.tool, "name", spec.tool)
        return f"{node_id(name)}[{_label(f'{name} · tool {tool}{guard}')}]"
    if isinstance(spec, AgentStep):
        agent = getattr(spec.agent, "name", spec.agent)
        suffix = " (batch)" if spec.batch else ""
        return f"{node_id(name)}{{{{{_label(f'{name} · agent {agent}{suffix}{guard}')}}}}}"
    if isinstance(spec, ApprovalStep):
        who = spec.role or spec.assignee or "?"
        return f"{node_id(name)}{{{_label(f'{name} · approval by {who}{guard}')}}}"
    return f"{node_id(name)}({_label(f'{name} · step{guard}')})"


def _choice_edges(spec: ChoiceStep, order: list[str]) -> list[str]:
    """Edges from a choice to its targets: solid forward, dashed (with the bound) back to an earlier step."""
    here = order.index(str(spec.name))
    found = []
    targets = [(f"when {_condition(b.condition)}", b.target) for b in spec.branches]
    if spec.otherwise is not None:
        targets.append(
            ("otherwise" if spec.branches else "when it holds" if spec.if_ or spec.unless else "then", spec.otherwise)
        )
    for label, target in targets:
        if target in order and order.index(target) < here:
            found.append(f"  {node_id(str(spec.name))} -. {label}, max {spec.max_visits} visits .-> {node_id(target)}")
        else:
            found.append(f"  {node_id(str(spec.name))} -- {label} --> {node_id(target)}")
    return found


def mermaid(workflow: Any) -> str:
    """Mermaid ``flowchart TD`` text of ``workflow``'s plan (a Workflow subclass)."""
    lines = ["flowchart TD", f"  start([{_label(workflow.name if hasattr(workflow, 'name') else 'start')}])"]
    previous = ["start"]
    failed = False
    order = [str(unit.name) for unit in workflow.plan()]
    branches: list[str] = []
    for unit in workflow.plan():
        members = unit.steps if isinstance(unit, ParallelGroup) else (unit,)
        current = []
        for spec in members:
            lines.append("  " + _node(spec))
            current.append(node_id(str(spec.name)))
        if isinstance(unit, ParallelGroup):
            lines.append(f"  subgraph {node_id(str(unit.name or 'parallel'))}_group [{_label('in parallel')}]")
            lines += [f"    {n}" for n in current]
            lines.append("  end")
        for before in previous:
            for after in current:
                lines.append(f"  {before} --> {after}")
        for spec in members:
            if isinstance(spec, ChoiceStep):
                branches += _choice_edges(spec, order)  # after every node is declared with its shape
            if isinstance(spec, ApprovalStep):
                if spec.on_reject == "fail":
                    lines.append(f"  {node_id(str(spec.name))} -. rejected .-> failed")
                    failed = True
                if spec.on_changes_requested == "revise" and spec.revise_from:
                    lines.append(f"  {node_id(str(spec.name))} -. changes requested .-> {node_id(spec.revise_from)}")
        previous = current
    lines += branches
    lines.append(f"  done([{_label('completed')}])")
    lines += [f"  {before} --> done" for before in previous]
    if failed:
        lines.append(f"  failed([{_label('failed')}])")
    return "\n".join(lines) + "\n"
