"""A workflow's plan as Mermaid flowchart text: what the console's workflow page draws and ``rubot graph`` prints.

Read from the plan the workflow class built at creation (the DSL is data), so the picture is the plan the
compiler runs: steps in order, parallel groups side by side, approvals as decisions with their rejection and
revision edges. Node shapes: a tool step is a box, an agent step a hexagon, an approval a rhombus and a ``@step``
function a rounded box.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.definitions.dsl import AgentStep, ApprovalStep, ParallelGroup, StepSpec, ToolStep

_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def node_id(step: str) -> str:
    return "s_" + _UNSAFE.sub("_", step)


def _label(text: str) -> str:
    return '"' + text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;") + '"'


def _node(spec: StepSpec) -> str:
    name = str(spec.name)
    if isinstance(spec, ToolStep):
        tool = getattr(spec.tool, "name", spec.tool)
        return f"{node_id(name)}[{_label(f'{name} · tool {tool}')}]"
    if isinstance(spec, AgentStep):
        agent = getattr(spec.agent, "name", spec.agent)
        suffix = " (batch)" if spec.batch else ""
        return f"{node_id(name)}{{{{{_label(f'{name} · agent {agent}{suffix}')}}}}}"
    if isinstance(spec, ApprovalStep):
        who = spec.role or spec.assignee or "?"
        return f"{node_id(name)}{{{_label(f'{name} · approval by {who}')}}}"
    return f"{node_id(name)}({_label(f'{name} · step')})"


def mermaid(workflow: Any) -> str:
    """Mermaid ``flowchart TD`` text of ``workflow``'s plan (a Workflow subclass)."""
    lines = ["flowchart TD", f"  start([{_label(workflow.name if hasattr(workflow, 'name') else 'start')}])"]
    previous = ["start"]
    failed = False
    for unit in workflow._plan:
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
            if isinstance(spec, ApprovalStep):
                if spec.on_reject == "fail":
                    lines.append(f"  {node_id(str(spec.name))} -. rejected .-> failed")
                    failed = True
                if spec.on_changes_requested == "revise" and spec.revise_from:
                    lines.append(f"  {node_id(str(spec.name))} -. changes requested .-> {node_id(spec.revise_from)}")
        previous = current
    lines.append(f"  done([{_label('completed')}])")
    lines += [f"  {before} --> done" for before in previous]
    if failed:
        lines.append(f"  failed([{_label('failed')}])")
    return "\n".join(lines) + "\n"
