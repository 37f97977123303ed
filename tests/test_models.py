"""Model providers, the test seams, the network guard and pricing.

The Anthropic provider is exercised with the real ``anthropic`` SDK over HTTP against the local stand-in
server; nothing here leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import pickle
import re
import socket
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.errors import ConfigurationError, ModelError, ModelUnavailable
from pipeline.llm.pricing import ModelPrice, cost_micros, price_for, price_table
from pipeline.models import guard
from pipeline.models.anthropic import AnthropicModel
from pipeline.models.base import ModelRequest, ModelResponse, ToolCall, Usage
from pipeline.models.failures import parse_retry_after
from pipeline.testing import (
    MessagesStandIn,
    ScriptedModel,
    allow_network_models,
    error,
    forbid_network_models,
    network_models_forbidden,
    reply,
)
from rubot_app.config.settings import load

API_KEY = "sk-ant-test-0123456789abcdef"
TOOLS = [
    {
        "name": "lookup_order",
        "description": "Find an order.",
        "input_schema": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    },
    {
        "name": "final_answer",
        "description": "Give your final answer.",
        "input_schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
    },
]
MESSAGES = [
    {"role": "user", "content": '{"order_id": "o_1"}'},
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup_order", "input": {"order_id": "o_1"}}],
    },
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": '{"total": 12}'}]},
]


def make_request(**overrides: object) -> ModelRequest:
    fields: dict[str, object] = {
        "model": "claude-haiku-4-5",
        "system": "Review refunds carefully.",
        "messages": MESSAGES,
        "tools": TOOLS,
        "max_tokens": 512,
    }
    fields.update(overrides)
    return ModelRequest(**fields)  # type: ignore[arg-type]


@pytest.fixture
def stand_in() -> Iterator[MessagesStandIn]:
    with MessagesStandIn() as server:
        yield server


@pytest.fixture
def model(stand_in: MessagesStandIn) -> AnthropicModel:
    return AnthropicModel(API_KEY, base_url=stand_in.url)


# --- the real SDK against the stand-in ----------------------------------------------------------------------


def test_request_carries_tool_schemas_and_cache_breakpoints_only_on_system_and_last_tool(stand_in, model):
    # Given a scripted answer
    stand_in.add(reply("ok"))
    # When a turn with tools, a system prompt and a tool_use/tool_result history is sent
    model.create_message(make_request(tool_choice={"type": "tool", "name": "final_answer"}))
    # Then the stand-in saw exactly one Messages API call with the tool schemas and the breakpoints where stated
    [seen] = stand_in.requests
    assert (seen.method, seen.path) == ("POST", "/v1/messages")
    body = seen.body
    assert body["model"] == "claude-haiku-4-5" and body["max_tokens"] == 512
    assert body["system"] == [
        {"type": "text", "text": "Review refunds carefully.", "cache_control": {"type": "ephemeral"}}
    ]
    assert [t["name"] for t in body["tools"]] == ["lookup_order", "final_answer"]
    assert [t["input_schema"] for t in body["tools"]] == [t["input_schema"] for t in TOOLS]
    assert [t.get("cache_control") for t in body["tools"]] == [None, {"type": "ephemeral"}]
    assert body["tool_choice"] == {"type": "tool", "name": "final_answer"}
    # and the messages arrive exactly as given, without a cache breakpoint anywhere
    assert body["messages"] == MESSAGES
    assert "cache_control" not in json.dumps(body["messages"])
    # and the caller's tool definitions were not mutated
    assert all("cache_control" not in t for t in TOOLS)


def test_request_without_tool_choice_or_system_omits_them(stand_in, model):
    stand_in.add(reply("ok"))
    model.create_message(make_request(system="", tools=[]))
    body = stand_in.requests[0].body
    assert "tool_choice" not in body and "system" not in body and "tools" not in body


def test_response_maps_text_tool_calls_usage_and_ids(stand_in, model):
    # Given a turn answering with text and two tool uses and all four usage fields
    stand_in.add(
        reply(
            "Let me check.",
            tool_uses=[("lookup_order", {"order_id": "o_1"}), ("final_answer", {"ok": 1})],
            usage={
                "input_tokens": 1200,
                "output_tokens": 85,
                "cache_creation_input_tokens": 2048,
                "cache_read_input_tokens": 4096,
            },
        )
    )
    # When the turn is sent
    response = model.create_message(make_request())
    # Then every field is mapped
    assert response == ModelResponse(
        model="claude-haiku-4-5",
        text="Let me check.",
        stop_reason="tool_use",
        provider="anthropic",
        id="msg_stand_in_1",
        tool_calls=[
            ToolCall("toolu_stand_in_1", "lookup_order", {"order_id": "o_1"}),
            ToolCall("toolu_stand_in_2", "final_answer", {"ok": 1}),
        ],
        usage=Usage(input_tokens=1200, output_tokens=85, cache_write_tokens=2048, cache_read_tokens=4096),
    )
    assert ModelResponse.from_json(json.loads(json.dumps(response.to_json()))) == response


def test_rate_limit_is_retryable_with_retry_after(stand_in, model):
    stand_in.add(error(429, retry_after=7))
    with pytest.raises(ModelUnavailable) as caught:
        model.create_message(make_request())
    assert (caught.value.retryable, caught.value.status, caught.value.retry_after) == (True, 429, 7.0)
    assert "rate_limit_error" in str(caught.value)
    assert len(stand_in.requests) == 1  # max_retries=0: the SDK did not retry behind our back


@pytest.mark.parametrize("status", [529, 500, 503])
def test_overload_and_server_errors_are_retryable(stand_in, model, status):
    stand_in.add(error(status))
    with pytest.raises(ModelUnavailable) as caught:
        model.create_message(make_request())
    assert (caught.value.retryable, caught.value.status, caught.value.retry_after) == (True, status, None)
    assert len(stand_in.requests) == 1


@pytest.mark.parametrize("status", [400, 401, 404])
def test_client_errors_are_not_retryable_and_never_show_the_key(stand_in, model, status):
    # Given a server that echoes the key in its error message
    stand_in.add(error(status, message=f"bad request from key {API_KEY}"))
    # When the turn is sent
    with pytest.raises(ModelError) as caught:
        model.create_message(make_request())
    # Then it is a plain, non-retryable ModelError that names the status but not the key
    assert type(caught.value) is ModelError and caught.value.retryable is False
    assert str(status) in str(caught.value)
    assert API_KEY not in str(caught.value) and API_KEY not in repr(caught.value.details)
    assert caught.value.__cause__ is None and API_KEY not in repr(model)


def test_connection_refused_is_retryable():
    with MessagesStandIn() as closed:
        url = closed.url
    with pytest.raises(ModelUnavailable) as caught:
        AnthropicModel(API_KEY, base_url=url).create_message(make_request())
    assert caught.value.status is None and "could not connect" in str(caught.value)


def test_timeout_is_retryable():
    # Given a loopback listener that accepts connections and never answers
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        host, port = listener.getsockname()
        # When the client's (short) timeout passes
        with pytest.raises(ModelUnavailable) as caught:
            AnthropicModel(API_KEY, base_url=f"http://{host}:{port}", timeout=0.2).create_message(make_request())
    # Then it is a retryable failure without a status
    assert caught.value.status is None and "timed out" in str(caught.value)


def test_stand_in_answers_clearly_when_its_script_is_exhausted(stand_in, model):
    with pytest.raises(ModelUnavailable, match="script exhausted"):
        model.create_message(make_request())


def test_stand_in_callable_entries_see_the_request(stand_in, model):
    stand_in.add(lambda body: reply(f"{len(body['tools'])} tools"))
    assert model.create_message(make_request()).text == "2 tools"


def test_retry_after_parsing():
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after({}) is None


def test_model_unavailable_survives_pickling():
    original = ModelUnavailable("busy", status=529, retry_after=3.0)
    copy = pickle.loads(pickle.dumps(original))
    assert (copy.message, copy.status, copy.retry_after, copy.retryable) == ("busy", 529, 3.0, True)


# --- the network guard ----------------------------------------------------------------------------------------


def test_guard_refuses_a_non_loopback_url_before_connecting(monkeypatch):
    # Given a model pointed at a remote host, and a socket layer that records any attempt to reach it
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network use in a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    remote = AnthropicModel(API_KEY, base_url="http://example.invalid")
    # When real model calls are forbidden
    with forbid_network_models(), pytest.raises(ModelError) as caught:
        remote.create_message(make_request())
    # Then the call is refused with a plain ModelError before any name lookup or connection
    assert type(caught.value) is ModelError and str(caught.value).startswith("real model calls are disabled")
    assert attempts == []


def test_guard_allows_the_loopback_stand_in(stand_in, model):
    stand_in.add(reply("local"))
    with forbid_network_models():
        assert model.create_message(make_request()).text == "local"


def test_guard_switch_is_a_function_a_context_manager_and_honours_the_environment(monkeypatch):
    monkeypatch.setattr(guard, "_forbidden", None)
    monkeypatch.delenv(guard.ENV_VAR, raising=False)
    assert not network_models_forbidden()
    monkeypatch.setenv(guard.ENV_VAR, "1")
    assert network_models_forbidden()
    with allow_network_models():  # an explicit choice wins over the environment ...
        assert not network_models_forbidden()
    assert network_models_forbidden()  # ... and the previous state returns on exit
    monkeypatch.delenv(guard.ENV_VAR)
    forbid_network_models()  # plain call: stays on
    assert network_models_forbidden()
    assert guard.is_loopback_url("http://[::1]:9/") and guard.is_loopback_url("http://localhost:1")
    assert not guard.is_loopback_url("https://api.anthropic.com")


# --- pricing --------------------------------------------------------------------------------------------------

PRICES = load({}).prices


def test_cost_is_exact_micro_dollars_from_the_default_table():
    # Sonnet 4.5: 3 / 15 USD per MTok, cache write 3.75, cache read 0.30
    usage = Usage(input_tokens=1000, output_tokens=500, cache_write_tokens=2000, cache_read_tokens=10_000)
    assert cost_micros(usage, price_for("claude-sonnet-4-5", PRICES)) == 3000 + 7500 + 7500 + 3000
    # Opus 4.1: 15 / 75
    assert cost_micros(Usage(input_tokens=1234, output_tokens=56), price_for("claude-opus-4-1", PRICES)) == 22_710
    million = Usage(input_tokens=10**6, output_tokens=10**6)
    assert cost_micros(million, price_for("claude-haiku-4-5", PRICES)) == 6_000_000  # 1 + 5 dollars
    assert cost_micros(Usage(input_tokens=999, output_tokens=999), price_for("offline", PRICES)) == 0


@pytest.mark.parametrize(("cache_read_tokens", "micros"), [(4, 0), (5, 1), (15, 2), (25, 3)])
def test_fractional_cost_rounds_half_up(cache_read_tokens, micros):
    # Haiku 4.5 cache reads cost 0.1 micro-dollars per token: 0.5 -> 1 and 2.5 -> 3 (half up, not half even)
    assert cost_micros(Usage(cache_read_tokens=cache_read_tokens), price_for("claude-haiku-4-5", PRICES)) == micros


def test_cost_is_rounded_once_per_turn_not_per_token_kind():
    price = ModelPrice(input=Decimal("0.25"), output=Decimal("0.25"))
    # 0.5 + 0.5 = 1.0 -> 1 (rounding each part first would give 2)
    assert cost_micros(Usage(input_tokens=2, output_tokens=2), price) == 1


def test_explicit_cache_prices_override_the_multipliers():
    price = ModelPrice.from_entry({"input": 3, "output": 15, "cache_write": 6, "cache_read": "0.5"})
    assert cost_micros(Usage(cache_write_tokens=100, cache_read_tokens=100), price) == 650


def test_unknown_model_has_no_price_and_fails_closed():
    with pytest.raises(ConfigurationError, match="no price for model 'gpt-9'"):
        price_for("gpt-9", PRICES)
    assert price_for("claude-sonnet-4-5-20250929", PRICES) == PRICES["claude-sonnet-4-5"]
    with pytest.raises(ConfigurationError):
        price_table({"bad": {"input": -1, "output": 1}})
    with pytest.raises(ConfigurationError, match="needs 'input' and 'output'"):
        price_table({"bad": {"input": 1}})


def test_prices_file_from_the_environment_overrides_and_extends_the_defaults(tmp_path: Path):
    # Given a JSON price file (floats in it must stay exact)
    prices_file = tmp_path / "prices.json"
    prices_file.write_text(
        json.dumps(
            {"claude-sonnet-4-5": {"input": 2.5, "output": 12.5}, "in-house-model": {"input": "0.1", "output": 1}}
        )
    )
    # When settings are loaded with RUBOT_PRICES_FILE
    prices = load({"RUBOT_HOME": str(tmp_path), "RUBOT_PRICES_FILE": str(prices_file)}).prices
    # Then the file's entries replace or add models, and the rest of the defaults remain
    assert prices["claude-sonnet-4-5"] == ModelPrice(input=Decimal("2.5"), output=Decimal("12.5"))
    assert cost_micros(Usage(input_tokens=3, output_tokens=1), prices["in-house-model"]) == 1  # 0.3 + 1 = 1.3
    assert prices["claude-haiku-4-5"] == PRICES["claude-haiku-4-5"]


def test_bad_prices_file_is_a_clear_configuration_error(tmp_path: Path):
    broken = tmp_path / "prices.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        load({"RUBOT_HOME": str(tmp_path), "RUBOT_PRICES_FILE": str(broken)})
    with pytest.raises(ConfigurationError, match="cannot read price file"):
        load({"RUBOT_HOME": str(tmp_path), "RUBOT_PRICES_FILE": str(tmp_path / "missing.json")})


def test_cost_of_a_stand_in_turn_equals_the_price_table_applied_to_its_usage(stand_in, model):
    stand_in.add(
        reply(
            "ok",
            usage={
                "input_tokens": 321,
                "output_tokens": 45,
                "cache_creation_input_tokens": 1500,
                "cache_read_input_tokens": 3000,
            },
        )
    )
    response = model.create_message(make_request())
    # Haiku 4.5: 1 / 5 USD per MTok, cache write 1.25, cache read 0.1
    expected = Decimal(321) * 1 + Decimal(45) * 5 + Decimal(1500) * Decimal("1.25") + Decimal(3000) * Decimal("0.1")
    assert cost_micros(response.usage, price_for(response.model, PRICES)) == int(expected) == 2721


# --- ScriptedModel -------------------------------------------------------------------------------------------


def test_scripted_model_plays_responses_specs_and_functions_and_records_requests():
    # Given a script mixing a ModelResponse, a reply() spec, a dict spec and a function
    canned = ModelResponse(model="m", text="canned")
    model = ScriptedModel(
        [
            canned,
            reply(tool_uses=[("lookup_order", {"order_id": "o_1"})], usage={"input_tokens": 10, "output_tokens": 2}),
            {"text": "from a dict", "tool_calls": [{"name": "final_answer", "input": {"ok": True}}]},
            lambda request: reply(f"saw {len(request.messages)} messages"),
        ]
    )
    first, second, third, fourth = (model.create_message(make_request()) for _ in range(4))
    # Then each entry answers one turn, in order
    assert first is canned
    assert second.tool_calls == [ToolCall("toolu_scripted_1", "lookup_order", {"order_id": "o_1"})]
    assert (second.stop_reason, second.provider, second.model) == ("tool_use", "scripted", "claude-haiku-4-5")
    assert second.usage == Usage(input_tokens=10, output_tokens=2)
    assert (third.text, third.tool_calls[0].id, third.id) == ("from a dict", "toolu_scripted_2", "msg_scripted_3")
    assert (fourth.text, fourth.stop_reason) == ("saw 3 messages", "end_turn")
    assert len(model.requests) == 4 and model.requests[0] == make_request()


def test_scripted_model_raises_provider_errors_and_reports_exhaustion():
    model = ScriptedModel([error(429, retry_after=2), {"status": 400}], model="scripted")
    with pytest.raises(ModelUnavailable) as busy:
        model.create_message(make_request())
    assert (busy.value.status, busy.value.retry_after) == (429, 2.0)
    with pytest.raises(ModelError) as rejected:
        model.create_message(make_request())
    assert rejected.value.retryable is False
    with pytest.raises(ModelError, match="script exhausted: turn #3"):
        model.create_message(make_request())
    assert len(model.requests) == 3


# --- current models and their prices ----------------------------------------------------------------------------


def _sdk_models() -> list[str]:
    import typing

    from anthropic.types import ModelParam

    literal = next(arg for arg in typing.get_args(ModelParam) if typing.get_origin(arg) is typing.Literal)
    return list(typing.get_args(literal))


def _retired(model: str, today) -> bool:
    from datetime import datetime

    from anthropic._data import DEPRECATED_MODELS

    when = DEPRECATED_MODELS.get(model)
    if when is None:
        return False
    day = datetime.strptime(re.sub(r"(\d)(st|nd|rd|th)", r"\1", when), "%B %d, %Y").date()
    return day <= today


def test_the_default_model_is_one_the_sdk_lists_and_has_not_retired(tmp_path: Path):
    from datetime import date

    from pipeline.definitions.agent import DEFAULT_MODEL
    from pipeline.settings import Settings

    settings = load({"RUBOT_HOME": str(tmp_path)})
    assert settings.default_model == DEFAULT_MODEL == Settings("x", "y", "z").default_model
    assert DEFAULT_MODEL in _sdk_models()
    assert not _retired(DEFAULT_MODEL, date(2026, 11, 30))  # claude-sonnet-4-5's end of life, per the SDK's table


def test_every_current_model_the_sdk_lists_has_a_price_with_both_cache_write_rates():
    from datetime import date

    current = [m for m in _sdk_models() if not _retired(m, date(2026, 11, 23))]
    assert "claude-mythos-preview" not in current and "claude-sonnet-4-5" in current
    missing = [m for m in current if price_for_or_none(m) is None]
    assert missing == []
    for model in current:
        price = price_for(model, PRICES)
        assert price.cache_write is not None and price.cache_write_1h is not None and price.cache_read is not None


def price_for_or_none(model: str):
    from pipeline.llm.pricing import find_price

    return find_price(model, PRICES)


def test_one_hour_writes_long_prompts_and_batches_are_priced_at_their_own_rates():
    sonnet = price_for("claude-sonnet-4-6", PRICES)  # 3 in, 3.75 / 6 writes, 0.30 reads, 15 out
    usage = Usage(
        input_tokens=100, output_tokens=10, cache_write_tokens=1000, cache_read_tokens=2000, cache_write_1h_tokens=400
    )
    assert cost_micros(usage, sonnet) == 300 + 150 + 600 * Decimal("3.75") + 400 * 6 + 600  # 5,700
    assert cost_micros(usage, sonnet, batch=True) == 2850
    # Haiku 5.5 charges every token of a turn whose prompt is over 100,000 tokens at its long-prompt rates
    haiku = price_for("claude-haiku-5-5", PRICES)
    short, long = Usage(input_tokens=100_000, output_tokens=1000), Usage(input_tokens=100_001, output_tokens=1000)
    assert cost_micros(short, haiku) == 10_000 + 500
    assert cost_micros(long, haiku) == 50_001 + 2500  # 0.50 input, 2.50 output


def test_an_estimate_is_an_upper_bound_rounded_up():
    from pipeline.llm.pricing import ceiling_micros

    sonnet = price_for("claude-sonnet-4-6", PRICES)
    # every prompt token at the dearest write rate (6 for 1 h), plus the whole output allowance
    assert ceiling_micros(1000, 100, sonnet) == 6000 + 1500
    assert ceiling_micros(1, 0, price_for("claude-haiku-4-5", PRICES)) == 2  # 2 (1 h write): never rounded down
    assert ceiling_micros(3, 0, price_for("claude-haiku-5-5", PRICES), batch=True) == 1  # 0.3 -> 1


def test_a_long_prompt_tier_in_a_prices_file_is_validated(tmp_path: Path):
    prices_file = tmp_path / "prices.json"
    prices_file.write_text(json.dumps({"m": {"input": 1, "output": 2, "long_prompt": {"input": 3, "output": 4}}}))
    with pytest.raises(ConfigurationError, match="above_tokens"):
        load({"RUBOT_HOME": str(tmp_path), "RUBOT_PRICES_FILE": str(prices_file)})
    prices_file.write_text(
        json.dumps({"m": {"input": 1, "output": 2, "long_prompt": {"above_tokens": 10, "input": 3, "output": 4}}})
    )
    price = load({"RUBOT_HOME": str(tmp_path), "RUBOT_PRICES_FILE": str(prices_file)}).prices["m"]
    assert cost_micros(Usage(input_tokens=11), price) == 33


def test_bad_cache_and_batch_settings_are_clear_configuration_errors(tmp_path: Path):
    with pytest.raises(ConfigurationError, match="RUBOT_CACHE_TTL must be one of 5m, 1h"):
        load({"RUBOT_HOME": str(tmp_path), "RUBOT_CACHE_TTL": "2h"})
    with pytest.raises(ConfigurationError, match="RUBOT_BATCH_MAX_ATTEMPTS must be a positive int"):
        load({"RUBOT_HOME": str(tmp_path), "RUBOT_BATCH_MAX_ATTEMPTS": "0"})
    assert load({"RUBOT_HOME": str(tmp_path), "RUBOT_CACHE_TTL": "1h"}).cache_ttl == "1h"


def test_a_read_timeout_may_have_been_billed_a_refused_connection_was_not():
    with MessagesStandIn() as closed:
        url = closed.url
    with pytest.raises(ModelUnavailable) as refused:
        AnthropicModel(API_KEY, base_url=url).create_message(make_request())
    assert refused.value.maybe_billed is False
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        host, port = listener.getsockname()
        with pytest.raises(ModelUnavailable) as timed_out:
            AnthropicModel(API_KEY, base_url=f"http://{host}:{port}", timeout=0.2).create_message(make_request())
    assert timed_out.value.maybe_billed is True
