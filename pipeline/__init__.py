"""Rubot: governed AI-agent workflows on Celery.

The model advises; the workflow decides. Declare tools, agents and workflows with the classes below, then
start runs with :func:`run` (waits) or :func:`enqueue` (returns at once).
"""

from pipeline.api import enqueue, get_run, list_runs, run, wait
from pipeline.auth.principal import Principal
from pipeline.definitions.agent import Agent
from pipeline.definitions.dsl import agent_step, approval_step, parallel, step, tool_step
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
    ToolError,
    ValidationError,
)
from pipeline.runs import Approval, Event, Run

__all__ = [
    "Agent",
    "Approval",
    "ApprovalAlreadyDecided",
    "ApprovalForbidden",
    "DefinitionError",
    "Event",
    "InvalidRunInput",
    "Operation",
    "Principal",
    "RubotError",
    "Run",
    "RunError",
    "Tool",
    "ToolContext",
    "ToolError",
    "ValidationError",
    "Workflow",
    "agent_step",
    "approval_step",
    "enqueue",
    "get_run",
    "list_runs",
    "parallel",
    "run",
    "step",
    "tool_step",
    "wait",
]
