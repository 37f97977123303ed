"""Rubot: governed AI-agent workflows on Celery.

The model advises; the workflow decides. Declare tools, agents and workflows with the classes below, then
start runs with :func:`run` (waits) or :func:`enqueue` (returns at once). Inside a host application, call
:func:`install` on its Celery app and launch with ``MyWorkflow.delay(**input)``.
"""

from pipeline.api import enqueue, get_run, list_runs, migrate, run, wait
from pipeline.audit import ChainBreak, verify
from pipeline.auth.principal import Principal
from pipeline.definitions.agent import Agent
from pipeline.definitions.dsl import (
    agent_step,
    approval_step,
    choice,
    compute,
    jump_to,
    parallel,
    skip_to,
    step,
    tool_step,
    when,
)
from pipeline.definitions.inputs import from_context, from_input, from_state, merge, slice
from pipeline.definitions.operation import Operation
from pipeline.definitions.tool import Tool, ToolContext
from pipeline.definitions.workflow import Workflow
from pipeline.errors import (
    ApprovalAlreadyDecided,
    ApprovalForbidden,
    DefinitionError,
    InvalidRunInput,
    RubotError,
    RunError,
    RunFailed,
    ToolError,
    ValidationError,
)
from pipeline.handles import RunHandle
from pipeline.hosting import install
from pipeline.operations import trigger
from pipeline.redact import sensitive
from pipeline.replays import Departure, diff, replay
from pipeline.runs import Approval, Event, Run
from pipeline.schedules import every

__all__ = [
    "sensitive",
    "Agent",
    "Approval",
    "ApprovalAlreadyDecided",
    "ApprovalForbidden",
    "ChainBreak",
    "DefinitionError",
    "Departure",
    "Event",
    "InvalidRunInput",
    "Operation",
    "Principal",
    "RubotError",
    "Run",
    "RunError",
    "RunFailed",
    "RunHandle",
    "Tool",
    "ToolContext",
    "ToolError",
    "ValidationError",
    "Workflow",
    "agent_step",
    "approval_step",
    "diff",
    "choice",
    "compute",
    "enqueue",
    "every",
    "from_context",
    "from_input",
    "from_state",
    "get_run",
    "install",
    "jump_to",
    "list_runs",
    "merge",
    "migrate",
    "parallel",
    "replay",
    "run",
    "skip_to",
    "slice",
    "step",
    "tool_step",
    "trigger",
    "verify",
    "wait",
    "when",
]
