"""Replay and fork: a new run reuses a run's recorded model responses and tool results up to the fork point
(no model request, no repeated side effect), runs live from there, and its diff names where it departed."""

from __future__ import annotations

import html
from contextlib import contextmanager

import pytest
from click.testing import CliRunner

import pipeline
from pipeline.errors import InvalidForkPoint
from pipeline.models.anthropic import AnthropicModel
from pipeline.testing import MessagesStandIn, reply
from pipeline.web.app import create_app
from rubot_app.scripts import cli
from tests import replay_workflows as rw
from tests import workflows
from tests.conftest import sink_lines

USAGE = {"input_tokens": 200, "output_tokens": 30}


def tool(name: str, **args) -> object:
    return reply(tool_uses=[(name, args)], usage=USAGE)


def answer(finding: str) -> object:
    return reply(tool_uses=[("final_answer", {"finding": finding})], usage=USAGE)


# Five turns of tool calls (two of them side effects), then the answer on the sixth.
SOURCE_SCRIPT = [
    tool("search", topic="a"),
    tool("notify", message="turn 2"),
    tool("notify", message="turn 3"),
    tool("search", topic="b"),
    tool("notify", message="turn 5"),
    answer("original"),
]
SOURCE_EFFECTS = ["notify turn 2", "notify turn 3", "notify turn 5"]


@contextmanager
def model_at(stack, script):
    """The stack's model is the real anthropic SDK talking HTTP to a stand-in playing ``script``."""
    with MessagesStandIn(script) as stand_in:
        previous, stack.runtime.model = stack.runtime.model, AnthropicModel("test-key", base_url=stand_in.url)
        try:
            yield stand_in
        finally:
            stack.runtime.model = previous


@pytest.fixture
def source(stack, sink, monkeypatch):
    monkeypatch.setenv("RUBOT_TEST_SINK", str(sink))
    with model_at(stack, SOURCE_SCRIPT) as stand_in:
        run = pipeline.run(rw.ResearchWorkflow, input={"topic": " fusion "}, timeout=90)
    assert run.status == "completed", run.error
    assert len(stand_in.message_requests) == 6
    assert sink_lines(sink) == SOURCE_EFFECTS
    return run


def test_a_six_turn_agent_run_replayed_from_turn_4_asks_the_model_nothing_for_turns_1_to_3(stack, sink, source):
    # Given a completed six-turn agent run (five turns of tool calls, two of them side effects, then an answer)
    # When it is replayed from turn 4 and the model answers differently from turn 4 on
    fork_script = [tool("search", topic="d"), tool("notify", message="fork turn 5"), answer("forked")]
    with model_at(stack, fork_script) as stand_in:
        replay = pipeline.wait(pipeline.replay(source, from_step="research/turn-4"), timeout=90)

    # Then the new run is linked to its source and completes live from turn 4
    assert replay.status == "completed", replay.error
    assert replay.replay_of == source.id
    assert replay.output == {"finding": "forked", "topic": "fusion"}
    # and the model was asked for turns 4, 5 and 6 only: the first request already carries turns 1-3 as recorded
    requests = stand_in.message_requests
    assert len(requests) == 3
    first = requests[0].body["messages"]
    assert len(first) == 1 + 3 * 2  # the input, then three recorded turns with their tool results
    assert [b["name"] for m in first if m["role"] == "assistant" for b in m["content"] if b["type"] == "tool_use"] == [
        "search",
        "notify",
        "notify",
    ]
    # and the side effects of the reused turns 2 and 3 did not happen again; only the live turn 5's did
    assert sink_lines(sink) == [*SOURCE_EFFECTS, "notify fork turn 5"]
    # and the trail says what was reused, and the reused turns cost the new run nothing
    reused = [e.data["op_key"] for e in replay.events if e.type == "replay.reused"]
    assert "brief" in reused and "research/input" in reused
    assert [k for k in reused if k.startswith("research/turn-") and "/tool-" not in k] == [
        f"research/turn-{n}" for n in (1, 2, 3)
    ]
    assert replay.tokens.input_tokens == 3 * USAGE["input_tokens"]

    # Then the diff names the first turn that differs
    departure = pipeline.diff(source, replay)
    assert (departure.op_key, departure.step, departure.turn) == ("research/turn-4", "research", 4)
    assert departure.a["tool_calls"] == [{"name": "search", "input": {"topic": "b"}}]
    assert departure.b["tool_calls"] == [{"name": "search", "input": {"topic": "d"}}]
    result = CliRunner().invoke(cli.main, ["diff", source.id, replay.id])
    assert result.exit_code == 0, result.output
    assert "First departure: research/turn-4 (turn 4 of step research) differs" in result.output
    # and so does the replay's page in the console
    page = create_app(stack.runtime, secret_key="k").test_client().get(f"/runs/{replay.id}")
    shown = html.unescape(page.get_data(as_text=True))
    assert page.status_code == 200 and "Departure from the source" in shown
    assert "research/turn-4 (turn 4 of step research) differs" in shown and '"topic": "d"' in shown
    # and both event trails verify
    assert pipeline.verify(source) == [] and pipeline.verify(replay) == []


def test_a_full_replay_calls_nothing_and_a_step_fork_reruns_only_that_step_onwards(stack, sink, source):
    # When the run is replayed with no fork point
    with model_at(stack, []) as stand_in:
        full = pipeline.wait(pipeline.replay(source.id), timeout=90)
    # Then it ends as the source did without a single model request or side effect, and no departure
    assert full.status == "completed" and full.output == source.output
    assert stand_in.message_requests == []
    assert sink_lines(sink) == SOURCE_EFFECTS
    assert pipeline.diff(source, full) is None

    # When it is forked at the agent step itself (through the command line, with the diff)
    with model_at(stack, [answer("at once")]) as stand_in:
        result = CliRunner().invoke(cli.main, ["replay", source.id, "--from", "research", "--diff"])
    # Then the agent runs live from turn 1 while the step before it is reused
    assert result.exit_code == 0, result.output
    assert "Run is now completed." in result.output
    assert "First departure: research/turn-1 (turn 1 of step research) differs" in result.output
    assert len(stand_in.message_requests) == 1
    assert sink_lines(sink) == SOURCE_EFFECTS


def test_a_fork_point_the_run_does_not_have_is_a_clear_error_and_starts_nothing(stack, source):
    before = len(pipeline.list_runs(limit=1000))
    for wrong in ("nowhere", "brief/turn-1", "research/turn-9", "research/turn-0"):
        with pytest.raises(InvalidForkPoint):
            pipeline.replay(source, from_step=wrong)
    result = CliRunner().invoke(cli.main, ["replay", source.id, "--from", "research/turn-9"])
    assert result.exit_code == 1
    assert result.stderr.startswith("rubot: error: the source run has no recorded turn 9 of 'research'")
    assert "Traceback" not in result.output
    assert len(pipeline.list_runs(limit=1000)) == before


def test_a_fork_after_an_approval_reuses_the_decision_and_runs_only_the_steps_after_it(stack, sink):
    # Given a run that was approved by a person and completed
    run = pipeline.run(workflows.ApprovalWorkflow, input={"sink": str(sink)}, timeout=60)
    run.approve("manager@example.com", {"ok": True})
    source = pipeline.wait(run, timeout=60)
    assert source.status == "completed"

    # When it is forked at the step after the approval
    replay = pipeline.wait(pipeline.replay(source, from_step="after"), timeout=60)

    # Then the new run completes without asking anyone: the recorded decision is reused, with who made it
    assert replay.status == "completed", replay.error
    assert [(a.step, a.status, a.decided_by, a.decision_payload) for a in replay.approvals] == [
        ("manager", "approved", "manager@example.com", {"ok": True})
    ]
    assert replay.state["manager"] == source.state["manager"]
    # and only the step after the fork point ran again
    assert [line.split(" ", 1)[1] for line in sink_lines(sink) if line.startswith(replay.id)] == ["after"]
    assert pipeline.diff(source, replay) is None
