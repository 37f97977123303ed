"""Prompt caching: where breakpoints go, the stand-in's cache simulation, and what caching saves on a 12-turn run.

The runs go through the real ``anthropic`` SDK to the stand-in, which simulates Anthropic's prompt cache and keeps
a bill (:mod:`pipeline.testing.prompt_cache`), on a real worker over both stacks.
"""

from __future__ import annotations

import json

import pytest

import pipeline
from pipeline.errors import ModelError
from pipeline.models import tokens
from pipeline.models.anthropic import AnthropicModel
from pipeline.models.base import ModelRequest
from pipeline.models.caching import CachePolicy, shape
from pipeline.testing import MessagesStandIn, reply
from tests import cost_workflows as cw

BIG = "policy " * 3000  # ~21 KB of system text: above every model's minimum
TOOLS = [{"name": "lookup", "description": "Find it.", "input_schema": {"type": "object", "properties": {}}}]
BIG_TOOLS = [{**TOOLS[0], "description": "Find it. " * 1000}]  # ~9 KB: alone above a 1,024-token minimum


def conversation(turns: int, results_per_turn: int = 1) -> list[dict]:
    """A transcript like the agent loop's: the input, then per turn an assistant tool_use and the tool results."""
    messages = [{"role": "user", "content": '{"order_id": 7}'}]
    for t in range(turns):
        calls = [f"toolu_{t}_{i}" for i in range(results_per_turn)]
        messages.append(
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": c, "name": "lookup", "input": {}} for c in calls],
            }
        )
        messages.append(
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": c, "content": "x" * 400} for c in calls],
            }
        )
    return messages


def marked(shaped) -> list[str]:
    found = ["tools"] if any("cache_control" in t for t in shaped.tools) else []
    found += ["system"] if shaped.system and "cache_control" in shaped.system[-1] else []
    for m, message in enumerate(shaped.messages):
        found += [f"m{m}b{b}" for b, block in enumerate(message["content"]) if "cache_control" in block]
    return found


# --- placement -------------------------------------------------------------------------------------------------


def test_a_prefix_above_the_minimum_gets_tools_system_and_the_moving_conversation_breakpoint():
    policy = CachePolicy(min_tokens=1024)
    first = shape(BIG, BIG_TOOLS, conversation(0), policy)
    later = shape(BIG, BIG_TOOLS, conversation(3), policy)
    assert marked(first) == ["tools", "system", "m0b0"]
    assert marked(later) == ["tools", "system", "m6b0"]  # moved to the newest tool result
    assert later.breakpoints == ("tools", "system", "conversation")
    # short tools alone stay unmarked; with the system prompt after them the prefix is long enough
    assert marked(shape(BIG, TOOLS, conversation(0), policy)) == ["system", "m0b0"]


def test_a_prefix_below_the_minimum_spends_no_breakpoint_on_it_but_the_conversation_still_caches():
    # Given Haiku 4.5's 4,096-token minimum and a short system prompt
    policy = CachePolicy(min_tokens=4096)
    shaped = shape("Be brief.", TOOLS, conversation(2), policy)
    # Then only the end of the conversation carries a breakpoint (it caches once the conversation is long enough)
    assert marked(shaped) == ["m4b0"]
    # and the approximation that decided it is the planner's, not the bill's upper bound
    assert tokens.approximate({"type": "text", "text": "Be brief."}) < 4096


def test_a_turn_adding_more_blocks_than_the_lookback_window_also_marks_the_end_of_the_previous_request():
    # Given a turn with 15 parallel tool calls (30 new blocks: more than the 20-block lookback)
    policy = CachePolicy(min_tokens=1024)
    shaped = shape(BIG, BIG_TOOLS, conversation(2, results_per_turn=15), policy)
    # Then the previous request's last block is marked too, and the limit of four holds
    assert marked(shaped) == ["tools", "system", "m2b14", "m4b14"]
    assert shaped.breakpoints == ("tools", "system", "previous request", "conversation")


def test_user_input_and_tool_results_never_get_into_the_shared_prefix_and_the_callers_lists_stay_untouched():
    messages = conversation(1)
    tools = [dict(t) for t in TOOLS]
    shaped = shape(BIG, tools, messages, CachePolicy(min_tokens=1024, ttl="1h"))
    # the shared prefix (tools + system) holds only the developer's text
    prefix = json.dumps([shaped.tools, shaped.system])
    assert "order_id" not in prefix and "x" * 400 not in prefix
    assert shaped.system == [{"type": "text", "text": BIG, "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    assert messages == conversation(1) and tools == TOOLS  # nothing was written into the caller's data


def test_prefix_mode_is_the_old_placement_and_off_sends_none():
    prefix = shape("Be brief.", TOOLS, conversation(2), CachePolicy(mode="prefix", min_tokens=4096))
    assert marked(prefix) == ["tools", "system"]
    assert prefix.messages == conversation(2)
    assert marked(shape(BIG, TOOLS, conversation(2), CachePolicy(mode="off"))) == []


# --- the stand-in's cache simulation, through the real SDK ------------------------------------------------------


@pytest.fixture
def stand_in(stack_prices):
    with MessagesStandIn(prices=stack_prices, cache_minimums={"claude-sonnet-4-6": 2048}) as server:
        yield server


@pytest.fixture
def stack_prices():
    from rubot_app.config.settings import load

    return load({}).prices


def request(messages, *, ttl="5m", mode="conversation"):
    return ModelRequest(
        model="claude-sonnet-4-6",
        system=BIG,
        messages=messages,
        tools=TOOLS,
        max_tokens=64,
        cache=CachePolicy(mode=mode, ttl=ttl, min_tokens=2048),
    )


def test_the_second_turn_reads_what_the_first_wrote_and_the_bill_prices_every_kind(stand_in):
    model = AnthropicModel("test-key", base_url=stand_in.url)
    stand_in.add(reply("a"), reply("b"))
    first = model.create_message(request(conversation(0)))
    second = model.create_message(request(conversation(1)))
    total_first = stand_in.cache.prompt_tokens(stand_in.message_requests[0].body)
    # Turn 1 writes everything up to its last breakpoint; turn 2 reads exactly that back
    assert first.usage.cache_read_tokens == 0 and first.usage.cache_write_tokens == total_first
    assert second.usage.cache_read_tokens == total_first
    assert second.usage.cache_write_tokens > 0  # the new assistant turn and tool result
    # The token-counting endpoint agrees with what the bill charged
    assert model.count_tokens(request(conversation(1))) == (
        second.usage.input_tokens + second.usage.cache_write_tokens + second.usage.cache_read_tokens
    )
    assert [c.cost_micros for c in stand_in.charges] == [c.cost_micros for c in stand_in.charges if c.cost_micros]


def test_five_minute_entries_expire_one_hour_entries_do_not_and_one_hour_writes_are_reported_apart(stand_in):
    model = AnthropicModel("test-key", base_url=stand_in.url)
    stand_in.add(*[reply("ok")] * 4)
    # A 1-hour write is reported as such (and priced at 2x input); it is still there twenty minutes later
    long = model.create_message(request(conversation(0), ttl="1h"))
    assert long.usage.cache_write_1h_tokens == long.usage.cache_write_tokens > 0
    stand_in.advance(20 * 60)
    assert model.create_message(request(conversation(0), ttl="1h")).usage.cache_read_tokens > 0
    # A 5-minute write is gone twenty minutes later
    stand_in.cache.clear()
    short = model.create_message(request(conversation(0)))
    assert short.usage.cache_write_1h_tokens == 0 and short.usage.cache_write_tokens > 0
    stand_in.advance(20 * 60)
    assert model.create_message(request(conversation(0))).usage.cache_read_tokens == 0
    # The bill priced the 1-hour write at its own rate: 2x input vs 1.25x
    assert stand_in.charges[0].cost_micros > stand_in.charges[2].cost_micros


def mark_last(messages: list[dict]) -> list[dict]:
    """The messages with one hand-placed breakpoint, on the last block."""
    messages = json.loads(json.dumps(messages))
    last = messages[-1]
    if isinstance(last["content"], str):
        last["content"] = [{"type": "text", "text": last["content"]}]
    last["content"][-1]["cache_control"] = {"type": "ephemeral"}
    return messages


@pytest.mark.parametrize(("turns_later", "hit"), [(10, True), (11, False)])
def test_a_lookup_reaches_back_twenty_blocks_and_no_further(stand_in, turns_later, hit):
    model = AnthropicModel("test-key", base_url=stand_in.url)
    stand_in.add(reply("a"), reply("b"))
    # Given the conversation cached at its first block
    model.create_message(request(mark_last(conversation(0)), mode="off"))
    cached = stand_in.charges[-1].usage.cache_write_tokens
    # When a later request's only breakpoint is 20 (or 22) blocks further on
    later = model.create_message(request(mark_last(conversation(turns_later)), mode="off"))
    # Then the entry is found within 20 blocks and missed beyond
    assert later.usage.cache_read_tokens == (cached if hit else 0)


def test_the_simulation_refuses_more_than_four_breakpoints_like_the_api(stand_in):
    model = AnthropicModel("test-key", base_url=stand_in.url)
    stand_in.add(reply("never"))
    messages = conversation(3)
    for message in messages:
        for block in message["content"] if isinstance(message["content"], list) else []:
            block["cache_control"] = {"type": "ephemeral"}
    with pytest.raises(ModelError, match="A maximum of 4 blocks with cache_control"):
        model.create_message(request(messages, mode="off"))


# --- what caching saves: the 12-turn run ---------------------------------------------------------------------------


def run_desk(stack, model_key: str, mode: str, ttl: str = "5m"):
    """The 12-turn support run through the real SDK; returns (run, stand-in)."""
    stand_in = MessagesStandIn(cw.script(), prices=stack.settings.prices, cache_minimums=stack.settings.cache_minimums)
    previous, stack.runtime.model = stack.runtime.model, AnthropicModel("test-key", base_url=stand_in.url)
    try:
        run = pipeline.run(cw.WORKFLOWS[(model_key, mode, ttl)], input=cw.INPUT, timeout=120)
    finally:
        stack.runtime.model = previous
        stand_in.close()
    assert run.status == "completed", run.error
    assert len(stand_in.message_requests) == cw.TURNS
    assert len([e for e in run.effects if e.kind == "tool_call"]) == cw.TURNS - 1
    return run, stand_in


@pytest.mark.parametrize(("model_key", "at_least"), [("sonnet", 0.70), ("haiku", 0.60)])
def test_conversation_caching_cuts_the_bill_of_a_twelve_turn_run(stack, model_key, at_least):
    # Given the same 12-turn run (11 tool calls) without caching and with Rubot's placement
    uncached, uncached_bill = run_desk(stack, model_key, "off")
    cached, cached_bill = run_desk(stack, model_key, "conversation")

    # Then the billed cost is at least 70% (Sonnet) / 60% (Haiku) lower
    saving = 1 - cached_bill.billed_micros / uncached_bill.billed_micros
    assert saving >= at_least, f"{model_key}: saved {saving:.1%}"
    # and the cost Rubot recorded is exactly what the stand-in billed, token kinds included
    assert cached.cost_micros == cached_bill.billed_micros and uncached.cost_micros == uncached_bill.billed_micros
    assert cached.tokens.cache_read_tokens == sum(c.usage.cache_read_tokens for c in cached_bill.charges)
    assert cached.estimated_cost_micros == 0


def test_on_haiku_the_old_placement_saves_nothing_and_the_first_turns_are_under_the_minimum(stack):
    # The old placement marks tools + system, ~2,900 tokens: under Haiku 4.5's 4,096 they never cache
    uncached, uncached_bill = run_desk(stack, "haiku", "off")
    before, before_bill = run_desk(stack, "haiku", "prefix")
    assert before_bill.billed_micros == uncached_bill.billed_micros
    assert all(c.usage.cache_write_tokens == 0 for c in before_bill.charges)
    # With the conversation breakpoint the first turns are still too short, then it caches
    now, now_bill = run_desk(stack, "haiku", "conversation")
    writes = [c.usage.cache_write_tokens for c in now_bill.charges]
    assert writes[0] == 0 and any(writes)


@pytest.mark.parametrize(("ttl", "survives"), [("5m", False), ("1h", True)])
def test_a_one_hour_ttl_keeps_the_conversation_cached_across_an_approval_pause(stack, ttl, survives):
    # Given an agent whose refund waits twenty minutes for a team lead
    stand_in = MessagesStandIn(
        cw.approval_script(), prices=stack.settings.prices, cache_minimums=stack.settings.cache_minimums
    )
    previous, stack.runtime.model = stack.runtime.model, AnthropicModel("test-key", base_url=stand_in.url)
    try:
        run = pipeline.run(cw.APPROVAL_WORKFLOWS[ttl], input=cw.INPUT, timeout=60)
        assert run.waiting_for_approval, run.error
        stand_in.advance(20 * 60)
        run.approve(approved_by="lead@example.com")
        run = pipeline.wait(run, timeout=60)
    finally:
        stack.runtime.model = previous
        stand_in.close()

    # Then the turn after the pause reads the conversation from the cache only with the 1-hour TTL
    assert run.status == "completed", run.error
    first, second, after_pause = (charge.usage for charge in stand_in.charges)
    assert (after_pause.cache_read_tokens > 0) is survives
    if survives:
        assert after_pause.cache_read_tokens == second.prompt_tokens  # everything before the pause
    # 1-hour writes are reported and priced at their own rate (2x input instead of 1.25x)
    assert (first.cache_write_1h_tokens == first.cache_write_tokens > 0) is survives
    assert run.cost_micros == stand_in.billed_micros
