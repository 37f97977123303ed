"""Malformed workflow, tool and agent classes fail when the class is created, with a message naming the problem."""

from __future__ import annotations

from datetime import timedelta

import pytest
from marshmallow import Schema, fields

from pipeline import Agent, Tool, Workflow, agent_step, approval_step, parallel, step, tool_step
from pipeline.engine.compiler import segment
from pipeline.errors import DefinitionError
from tests.workflows import ApprovalWorkflow, ParallelWorkflow, Record


class NotATool:
    pass


def test_tool_step_with_a_class_that_is_not_a_tool_fails_at_class_creation():
    with pytest.raises(DefinitionError, match=r"Bad\.lookup: tool_step: expected a Tool subclass"):

        class Bad(Workflow):
            lookup = tool_step(NotATool)


def test_tool_step_with_an_unknown_tool_name_fails_and_lists_known_tools():
    with pytest.raises(DefinitionError, match=r"unknown tool 'no_such_tool' \(known tools: .*record"):

        class Bad(Workflow):
            lookup = tool_step("no_such_tool")


def test_a_tool_name_resolves_to_the_registered_tool():
    class ByName(Workflow):
        lookup = tool_step("record")

    assert ByName._steps["lookup"].tool is Record


def test_duplicate_step_names_in_the_class_body_fail():
    with pytest.raises(DefinitionError, match=r"Bad: step 'lookup' is defined twice"):

        class Bad(Workflow):
            lookup = tool_step(Record)
            lookup = tool_step(Record)  # noqa: PIE794


def test_a_parallel_member_reusing_a_step_name_fails():
    with pytest.raises(DefinitionError, match=r"step name 'first' is used twice"):

        class Bad(Workflow):
            first = tool_step(Record)
            both = parallel(first=tool_step(Record), other=tool_step(Record))


def test_approval_step_without_a_role_fails():
    with pytest.raises(DefinitionError, match=r"Bad\.gate: approval_step needs a role"):

        class Bad(Workflow):
            gate = approval_step(reason="no role given")


def test_approval_step_with_a_non_positive_expiry_fails():
    with pytest.raises(DefinitionError, match="expires_in must be positive"):

        class Bad(Workflow):
            gate = approval_step(role="manager", expires_in=timedelta(0))


def test_approval_step_cannot_run_in_parallel():
    with pytest.raises(DefinitionError, match="an approval step cannot run in parallel"):

        class Bad(Workflow):
            both = parallel(a=tool_step(Record), gate=approval_step(role="manager"))


@pytest.mark.parametrize("mapping", [lambda input: input, lambda input, state: input, lambda a, b, c, d: a])
def test_input_callable_of_the_wrong_arity_fails(mapping):
    with pytest.raises(DefinitionError, match=r"input= must accept three arguments \(input, state, context\)"):

        class Bad(Workflow):
            lookup = tool_step(Record, input=mapping)


def test_input_callables_with_defaults_or_varargs_are_accepted():
    class Flexible(Workflow):
        a = tool_step(Record, input=lambda input, state, context=None: input)
        b = tool_step(Record, input=lambda *args: args[0])

    assert [s.name for s in Flexible.steps()] == ["a", "b"]


def test_a_step_method_must_take_only_self():
    with pytest.raises(DefinitionError, match="a @step must be a method taking only self"):

        class Bad(Workflow):
            @step
            def finalize(self, extra):
                return extra


def test_agent_step_needs_an_agent_class():
    with pytest.raises(DefinitionError, match="agent_step expects an Agent subclass"):

        class Bad(Workflow):
            review = agent_step(Record)


def test_output_must_name_a_step():
    with pytest.raises(DefinitionError, match="output names 'missing'"):

        class Bad(Workflow):
            output = "missing"
            a = tool_step(Record)


def test_a_workflow_without_steps_fails():
    with pytest.raises(DefinitionError, match="declares no steps"):

        class Empty(Workflow):
            pass


def test_tool_schemas_must_be_marshmallow_fields_or_a_schema():
    with pytest.raises(DefinitionError, match=r"Broken\.input_schema: values must be marshmallow fields"):

        class Broken(Tool):
            input_schema = {"a": str}

            def call(self, **input):
                return input


def test_a_tool_must_implement_call():
    with pytest.raises(DefinitionError, match="must implement call"):

        class Lazy(Tool):
            description = "nothing"


def test_an_agent_needs_instructions_and_an_output_schema():
    with pytest.raises(DefinitionError, match="instructions must be a non-empty string"):

        class Mute(Agent):
            output_schema = {"a": fields.String()}

    with pytest.raises(DefinitionError, match="output_schema is required"):

        class Shapeless(Agent):
            instructions = "Say something."


def test_schema_classes_are_accepted_and_converted_to_json_schema_by_apispec():
    class Point(Schema):
        x = fields.Integer(required=True, metadata={"description": "horizontal"})
        tags = fields.List(fields.String())

    class Plot(Tool):
        description = "plot a point"
        input_schema = Point

        def call(self, **input):
            return input

    assert Plot.json_schema() == {
        "type": "object",
        "properties": {
            "x": {"type": "integer", "description": "horizontal"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["x"],
        "additionalProperties": False,
    }


def test_subclasses_inherit_steps_and_may_override_one_in_place():
    class Child(ApprovalWorkflow):
        manager = approval_step(role="director")

    assert [s.name for s in Child.steps()] == ["prepare", "manager", "after"]
    assert Child._steps["manager"].role == "director"


def test_the_compiler_ends_a_segment_at_the_approval_and_turns_parallel_groups_into_a_chord(stack_free_app):
    canvas, names = segment(stack_free_app, ApprovalWorkflow, "run_x", set(), queue="q")
    assert names == ["prepare", "manager"]
    assert [t.task for t in canvas.tasks] == ["rubot.step", "rubot.step"]

    # The last step completes the run itself: no finishing task follows it
    canvas, names = segment(stack_free_app, ApprovalWorkflow, "run_x", {"prepare", "manager"}, queue="q")
    assert names == ["after"]
    assert canvas.task == "rubot.step" and canvas.args == ("run_x", "after")

    # Nothing left to run: no canvas at all
    canvas, names = segment(stack_free_app, ApprovalWorkflow, "run_x", {"prepare", "manager", "after"}, queue="q")
    assert (canvas, names) == (None, [])

    canvas, names = segment(stack_free_app, ParallelWorkflow, "run_x", {"start"}, queue="q")
    assert names == ["left", "right", "combine"]
    chord_part = canvas.tasks[0]
    assert type(chord_part).__name__ == "_chord"
    assert [t.task for t in chord_part.tasks] == ["rubot.step", "rubot.step"]
    assert all(t.options.get("ignore_result") is False for t in chord_part.tasks)
    # Celery folds the rest of the chain into the chord body: join first, then the remaining steps.
    assert [t.task for t in chord_part.body.tasks] == ["rubot.join", "rubot.step"]
    # Messages carry ids only.
    assert chord_part.tasks[0].args == ("run_x", "left")


@pytest.fixture
def stack_free_app():
    from celery import Celery

    return Celery("compile-only", set_as_current=False)


def test_bad_caching_settings_on_an_agent_fail_at_class_creation():
    base = {"instructions": "x", "output_schema": {"ok": fields.Boolean(required=True)}}
    with pytest.raises(DefinitionError, match=r"BadCache\.prompt_caching must be one of"):
        type("BadCache", (Agent,), {**base, "prompt_caching": "always"})
    with pytest.raises(DefinitionError, match=r"BadTtl\.cache_ttl must be one of \('5m', '1h'\) or None"):
        type("BadTtl", (Agent,), {**base, "cache_ttl": "2h"})


def test_agent_step_batch_must_be_a_boolean():
    class Batchy(Agent):
        instructions = "x"
        output_schema = {"ok": fields.Boolean(required=True)}

    with pytest.raises(DefinitionError, match=r"Bad\.review: agent_step\(batch=\.\.\.\) must be True or False"):

        class Bad(Workflow):
            review = agent_step(Batchy, batch="yes")
