"""The conference-travel reference app's tools and agent: policy store, website fetcher, offline reviewer.

Nothing here reaches the internet: pages come from the seeded snapshots (in process or through a local
server on 127.0.0.1), and ``RUBOT_SITES=seeded`` is set wherever a wrong route could otherwise go online.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest

from pipeline.errors import ConfigurationError, InvalidAgentInput, InvalidToolInput, ToolError
from rubot_app.agents.conference_review import ReviewConferenceFit, matched_topics, review
from rubot_app.tools import html_text, sites, website
from rubot_app.tools.travel_policy import LoadTravelPolicy, TravelPolicyRepository
from rubot_app.tools.website import FetchConferenceWebsite

RAILS_WORLD = "https://rubyonrails.org/world"
SUMMIT = "https://chainboost-summit.example/agenda"
SUMMIT_NAME = "ChainBoost Web3 Growth Summit"
DATAOPS = "https://dataops-days.example/2025"


@pytest.fixture(autouse=True)
def seeded_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from the default routing, with the internet forbidden as a safety net."""
    monkeypatch.delenv("RUBOT_SITE_MIRROR", raising=False)
    monkeypatch.setenv("RUBOT_SITES", "seeded")


@pytest.fixture
def site_server() -> Iterator[sites.SiteServer]:
    with sites.serve_sites() as server:
        yield server


def fetch(url: str) -> dict[str, str]:
    return FetchConferenceWebsite().invoke({"conference_url": url})


def policy(employee_id: str, conference_name: str, url: str, cost: int = 132_500) -> dict:
    return LoadTravelPolicy().invoke(
        {
            "employee_id": employee_id,
            "conference_name": conference_name,
            "conference_url": url,
            "estimated_cost_cents": cost,
        }
    )


def offline_review(employee_id: str, conference_name: str, url: str) -> dict:
    # The same data flow as the §3 workflow: policy, then site, then the agent on both merged.
    merged = {**policy(employee_id, conference_name, url), **fetch(url)}
    agent_input = ReviewConferenceFit.validate_input(merged)
    return ReviewConferenceFit.validate_output(ReviewConferenceFit().offline(agent_input))


# --- travel policy --------------------------------------------------------------------------------


def test_policy_for_the_contract_employee_covers_rails_world() -> None:
    # Given the seeded store / When emp_42's policy for Rails World is fetched
    result = TravelPolicyRepository.fetch(employee_id="emp_42", conference_name="Rails World")
    # Then the budget covers the §3 estimate and the topics fit a Rails conference
    assert result["budget_limit_cents"] >= 150_000
    assert {"ruby", "rails", "web development", "databases"} <= set(result["allowed_topics"])


def test_policy_with_a_low_budget_exists_for_the_manual_path() -> None:
    # Given / When the apprentice's policy is fetched
    result = TravelPolicyRepository.fetch(employee_id="emp_7", conference_name="Rails World")
    # Then the budget is below the §3 estimate
    assert result["budget_limit_cents"] == 50_000 < 132_500


def test_conference_override_replaces_budget_and_adds_topics_case_insensitively() -> None:
    # Given emp_42 has an override for DataOps Days
    base = TravelPolicyRepository.fetch(employee_id="emp_42", conference_name="Rails World")
    # When the policy is fetched for that conference, spelled differently
    result = TravelPolicyRepository.fetch(employee_id="emp_42", conference_name="  dataops DAYS ")
    # Then the override's budget applies and its topic is appended after the employee's own
    assert result["budget_limit_cents"] == 100_000
    assert result["allowed_topics"] == [*base["allowed_topics"], "observability"]


def test_fetched_policies_are_copies() -> None:
    # Given a fetched policy that the caller mutates
    TravelPolicyRepository.fetch(employee_id="emp_7", conference_name="x")["allowed_topics"].append("golf")
    # When it is fetched again
    again = TravelPolicyRepository.fetch(employee_id="emp_7", conference_name="x")
    # Then the store is unchanged
    assert "golf" not in again["allowed_topics"]


def test_unknown_employee_is_a_tool_error_naming_the_employee() -> None:
    # Given an employee the store does not know / When fetched / Then a ToolError explains which one
    with pytest.raises(ToolError, match="emp_999") as caught:
        TravelPolicyRepository.fetch(employee_id="emp_999", conference_name="Rails World")
    assert caught.value.details == {"employee_id": "emp_999"}
    assert "emp_42" in TravelPolicyRepository.employee_ids()


def test_load_travel_policy_echoes_the_request_with_the_policy() -> None:
    # Given the §3 request / When the tool is invoked through its schemas
    result = policy("emp_42", "Rails World", RAILS_WORLD)
    # Then the request is echoed and the policy added
    assert result["employee_id"] == "emp_42" and result["conference_url"] == RAILS_WORLD
    assert result["estimated_cost_cents"] == 132_500 <= result["budget_limit_cents"]
    assert "rails" in result["allowed_topics"]


def test_load_travel_policy_rejects_bad_input_and_unknown_employees() -> None:
    # Given input missing the cost / When invoked / Then the schema rejects it before the store is read
    with pytest.raises(InvalidToolInput) as caught:
        LoadTravelPolicy().invoke(
            {"employee_id": "emp_42", "conference_name": "Rails World", "conference_url": RAILS_WORLD}
        )
    assert "estimated_cost_cents" in caught.value.details
    # And an unknown employee surfaces the store's ToolError
    with pytest.raises(ToolError):
        policy("emp_999", "Rails World", RAILS_WORLD)


# --- website fetching -----------------------------------------------------------------------------


def test_seeded_rails_world_is_fetched_in_process_without_scripts_or_styles() -> None:
    # Given no mirror and a URL with a seeded snapshot
    assert website.route(RAILS_WORLD).source == "seeded"
    # When the page is fetched
    result = fetch(RAILS_WORLD)
    # Then the title and agenda text come back, and non-visible markup does not
    assert result["conference_url"] == RAILS_WORLD
    assert result["page_title"] == "Rails World 2025 · Agenda | Ruby on Rails"
    assert "Hotwire in practice" in result["page_text"] and "Kamal" in result["page_text"]
    for hidden in ("dataLayer", "--rails-red", "Rails logo", "{{title}}", "Enable JavaScript", "cancel"):
        assert hidden not in result["page_text"]


def test_seeded_lookup_ignores_host_case_and_trailing_slash() -> None:
    # Given / When the same page is asked for with a differently written URL / Then it is still seeded
    assert fetch("https://RubyOnRails.org/world/")["page_title"].startswith("Rails World")


def test_mirror_fetches_over_real_http(site_server: sites.SiteServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a local mirror whose copy of Rails World differs from the seeded snapshot
    site_server.add_page("/rubyonrails.org/world", "<title>Mirrored copy</title><p>served over a socket</p>")
    monkeypatch.setenv("RUBOT_SITE_MIRROR", site_server.url + "/")
    # When both a changed and an unchanged page are fetched
    mirrored = fetch(RAILS_WORLD)
    summit = fetch(SUMMIT)
    # Then both came from the mirror, at {mirror}/{host}{path}
    assert website.route(RAILS_WORLD).url == f"{site_server.url}/rubyonrails.org/world"
    assert mirrored["page_title"] == "Mirrored copy" and mirrored["page_text"] == "served over a socket"
    assert summit["page_title"] == "ChainBoost Web3 Growth Summit 2025 | Agenda"


def test_localhost_pages_bypass_the_mirror(site_server: sites.SiteServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an ad-hoc page on the local server and a mirror setting that would not answer
    html = (
        "<html><head><title>DevConf (local)</title></head><body><h1>DevConf</h1><p>Ruby &amp; Rails</p></body></html>"
    )
    url = site_server.add_page("/local/devconf", html)
    monkeypatch.setenv("RUBOT_SITE_MIRROR", "http://127.0.0.1:9")
    # When the local URL is fetched
    result = fetch(url)
    # Then it was fetched directly
    assert website.route(url).source == "local"
    assert result == {"conference_url": url, "page_title": "DevConf (local)", "page_text": "DevConf\nRuby & Rails"}


def test_missing_page_is_a_tool_error_with_the_status(site_server: sites.SiteServer) -> None:
    # Given a path the local server does not serve / When fetched / Then a ToolError reports the 404
    with pytest.raises(ToolError, match="HTTP 404") as caught:
        fetch(f"{site_server.url}/local/nothing-here")
    assert caught.value.details["status_code"] == 404


def test_unknown_site_through_the_mirror_is_a_404(
    site_server: sites.SiteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a mirror / When a site it has no copy of is fetched / Then the mirror's 404 becomes a ToolError
    monkeypatch.setenv("RUBOT_SITE_MIRROR", site_server.url)
    with pytest.raises(ToolError, match="404"):
        fetch("https://unknown-conference.example/")


def test_non_html_content_is_a_tool_error(site_server: sites.SiteServer) -> None:
    # Given a JSON document / When fetched / Then the tool refuses it by content type
    url = site_server.add_page("/local/agenda.json", '{"talks": []}', content_type="application/json")
    with pytest.raises(ToolError, match="not an HTML page"):
        fetch(url)


def test_oversized_pages_are_refused(site_server: sites.SiteServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a body limit smaller than the page
    monkeypatch.setattr(website, "MAX_BODY_BYTES", 64)
    url = site_server.add_page("/local/big", "<p>" + "word " * 100 + "</p>")
    # When fetched with a declared Content-Length / Then it is refused before reading
    with pytest.raises(ToolError, match="too large"):
        fetch(url)
    # And a streamed body without Content-Length is refused once it passes the limit
    streamed = httpx.Response(200, content=iter([b"x" * 40, b"y" * 40]))
    with pytest.raises(ToolError, match="too large"):
        website._read_capped(streamed, "http://127.0.0.1/big", {})


def test_unreachable_host_is_a_tool_error() -> None:
    # Given a local port nobody listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # When fetched / Then the connection failure is a ToolError, not an httpx exception
    with pytest.raises(ToolError, match="could not fetch") as caught:
        fetch(f"http://127.0.0.1:{port}/conf")
    assert caught.value.details["source"] == "local"


@pytest.mark.parametrize("bad", ["ftp://rubyonrails.org/world", "rubyonrails.org/world", "not a url", ""])
def test_invalid_urls_are_rejected_by_the_input_schema(bad: str) -> None:
    # Given / When a non-http(s) URL is passed / Then input validation fails before any fetch
    with pytest.raises(InvalidToolInput) as caught:
        fetch(bad)
    assert "conference_url" in caught.value.details


def test_seeded_mode_never_reaches_the_internet() -> None:
    # Given RUBOT_SITES=seeded (the autouse fixture) / When an unseeded URL is fetched / Then it is refused
    with pytest.raises(ToolError, match="RUBOT_SITES=seeded"):
        fetch("https://unknown-conference.example/agenda")


def test_routing_rules_follow_the_environment() -> None:
    # Given / When / Then: live wins over everything but localhost; a mirror wins over snapshots
    mirror = {"RUBOT_SITE_MIRROR": "http://127.0.0.1:1"}
    assert website.route(RAILS_WORLD, {"RUBOT_SITES": "live"}) == website.Route("live", RAILS_WORLD)
    assert website.route(RAILS_WORLD, {"RUBOT_SITES": "live", **mirror}).source == "live"
    assert website.route(f"{SUMMIT}?day=1", mirror).url == "http://127.0.0.1:1/chainboost-summit.example/agenda?day=1"
    assert website.route("https://unknown-conference.example/", {}).source == "internet"
    assert website.route("http://localhost:8000/x", {"RUBOT_SITES": "live"}).source == "local"
    with pytest.raises(ConfigurationError, match="RUBOT_SITES"):
        website.route(RAILS_WORLD, {"RUBOT_SITES": "sometimes"})
    with pytest.raises(ConfigurationError, match="RUBOT_SITE_MIRROR"):
        website.route(RAILS_WORLD, {"RUBOT_SITE_MIRROR": "127.0.0.1:8000"})


def test_every_seeded_snapshot_has_a_title_and_text() -> None:
    # Given the shipped snapshots / When each is served by the WSGI app / Then it reads as a page
    assert {"rubyonrails.org/world", "chainboost-summit.example/agenda"} <= set(sites.seeded_snapshots())
    for key in sites.seeded_snapshots():
        page = sites.site_app.page(f"/{key}")
        assert page is not None and page.status == 200
        title, text = html_text.extract(page.body.decode("utf-8"))
        assert title and len(text) > 200


# --- HTML extraction ------------------------------------------------------------------------------


def test_extract_handles_empty_and_text_only_input() -> None:
    # Given / When / Then
    assert html_text.extract("") == ("", "")
    assert html_text.extract("just   text\n\n here") == ("", "just text here")


def test_extract_uses_the_document_title_not_an_svg_title() -> None:
    # Given an SVG title before the document title, and an unclosed <head>
    html = (
        "<html><head><title>  Real\n title </title><meta charset=utf-8>"
        "<body><svg><title>Logo</title></svg><p>Hello</p></body></html>"
    )
    # When / Then the head ends at <body>, the SVG title is ignored, whitespace collapses
    assert html_text.extract(html) == ("Real title", "Hello")


def test_extract_skips_invisible_markup_even_when_nested_or_unclosed() -> None:
    # Given scripts, styles, templates and an unclosed noscript
    html = (
        "<p>A</p><script>var x = '<p>no</p>';</script><style>p{}</style>"
        "<template><p>tpl</p><template>inner</template></template><p>B &amp; C</p><noscript>gone"
    )
    # When / Then only visible text survives, entities decoded, one block per line
    assert html_text.extract(html) == ("", "A\nB & C")


def test_extract_separates_blocks_but_not_inline_elements() -> None:
    # Given list items and inline markup / When / Then items are lines, inline text joins with spaces
    assert (
        html_text.extract("<ul><li>Ruby</li><li>Rails</li></ul><p>a <b>bold</b>\n word</p>")[1]
        == "Ruby\nRails\na bold word"
    )


def test_extract_caps_text_at_a_word_boundary() -> None:
    # Given text longer than the cap / When extracted with a small cap
    _, text = html_text.extract("<p>" + "agenda " * 50 + "</p>", max_chars=100)
    # Then it is at most the cap and does not end mid-word
    assert len(text) <= 100 and text.endswith("agenda")
    # And the default cap applies to huge pages
    assert len(html_text.extract("<p>" + "x" * 30_000 + "</p>")[1]) == html_text.MAX_TEXT_CHARS


# --- the reviewing agent --------------------------------------------------------------------------


def test_rails_world_fits_emp_42_strongly_and_would_auto_approve() -> None:
    # Given emp_42, Rails World and the §3 estimate / When reviewed offline
    result = offline_review("emp_42", "Rails World", RAILS_WORLD)
    # Then the content matches with high confidence and no risks, so §3's finalize auto-approves
    assert result["content_matches_policy"] is True
    assert result["confidence_score"] >= 0.90
    assert result["risks"] == []
    assert {"ruby", "rails", "hotwire", "databases", "web development"} <= set(result["matched_topics"])
    assert "offline" in result["summary"].lower() and "\n" not in result["summary"]


def test_crypto_summit_does_not_fit_and_lists_its_red_flags() -> None:
    # Given emp_42 and the marketing summit / When reviewed offline
    result = offline_review("emp_42", SUMMIT_NAME, SUMMIT)
    # Then nothing matches and the risks explain why
    assert result["content_matches_policy"] is False and result["matched_topics"] == []
    assert result["confidence_score"] < 0.90
    risks = " | ".join(result["risks"])
    for finding in ("no allowed topics", "sold out", "non-refundable", "cancelled", "sponsored content"):
        assert finding in risks


def test_matching_topics_do_not_hide_red_flags() -> None:
    # Given a marketer whose topics the summit covers / When reviewed / Then it matches but still has risks
    result = offline_review("emp_23", SUMMIT_NAME, SUMMIT)
    assert result["content_matches_policy"] is True and result["risks"]


def test_partial_fit_matches_with_low_confidence() -> None:
    # Given a data conference: partly relevant to a Rails engineer, fully to a data engineer
    rails_engineer = offline_review("emp_42", "DataOps Days", DATAOPS)
    data_engineer = offline_review("emp_17", "DataOps Days", DATAOPS)
    # When / Then the Rails engineer's match is too weak to auto-approve; the data engineer's is strong
    assert rails_engineer["content_matches_policy"] is True and rails_engineer["confidence_score"] < 0.90
    assert data_engineer["confidence_score"] == 0.95 and data_engineer["risks"] == []


def test_empty_page_is_a_risk_and_answers_validate() -> None:
    # Given an empty page / When reviewed / Then the answer says so and still matches the output schema
    answer = ReviewConferenceFit().offline(
        {"conference_name": "Ghost Conf", "page_title": "", "page_text": "", "allowed_topics": ["ruby"]}
    )
    assert ReviewConferenceFit.validate_output(answer) == answer
    assert answer["content_matches_policy"] is False and 0.0 <= answer["confidence_score"] <= 1.0
    assert any("no readable text" in risk for risk in answer["risks"])


def test_topic_matching_is_word_based_and_plural_tolerant() -> None:
    # Given / When / Then: "databases" matches "database", "rails" does not match inside "guardrails"
    text = "A Database talk, a web-development track, and guardrails for LLMs"
    topics = ["databases", "web development", "rails", "Databases"]
    assert matched_topics(topics, text) == ["databases", "web development"]


def test_offline_review_is_deterministic() -> None:
    # Given the same input twice / When reviewed / Then the answers are identical
    kwargs = {"conference_name": "X", "page_title": "Ruby", "page_text": "Rails", "allowed_topics": ["ruby", "rails"]}
    assert review(**kwargs) == review(**kwargs)


def test_agent_input_accepts_the_workflow_payload_and_rejects_missing_fields() -> None:
    # Given the §3 payload without page_text / When validated / Then the missing field is reported
    payload = {**policy("emp_42", "Rails World", RAILS_WORLD), **fetch(RAILS_WORLD)}
    assert ReviewConferenceFit.validate_input(payload)["employee_id"] == "emp_42"
    payload.pop("page_text")
    with pytest.raises(InvalidAgentInput) as caught:
        ReviewConferenceFit.validate_input(payload)
    assert "page_text" in caught.value.details
