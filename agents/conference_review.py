"""``ReviewConferenceFit``: does a conference's agenda fit the topics the travel policy allows?

With a real model the agent reads the page and answers in its own words. Without one (the demo, tests) its
:meth:`ReviewConferenceFit.offline` rule answers instead: a topic matches when it appears on the page as a
word or phrase, and a short list of red-flag phrases (sold out, cancellation, non-refundable, sponsored
content, paid speaking slots) becomes risks. The rule is deliberately simple so a reviewer can check it.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from marshmallow import fields

from pipeline.definitions.agent import Agent

# "Strong" evidence: at least this share of the allowed topics appears on the page (and at least two do).
STRONG_RATIO = 0.75
STRONG_CONFIDENCE = 0.95

# (what the phrase suggests, pattern). Patterns run on the lower-cased title and text.
RED_FLAGS: tuple[tuple[str, str], ...] = (
    ("tickets may be unavailable", r"\bsold[\s-]?out\b"),
    ("the event may be cancelled", r"\bcancel(?:s|led|ed|lation|lations)?\b"),
    ("the event may be postponed", r"\bpostponed\b"),
    ("tickets cannot be refunded", r"\b(?:non[\s-]?refundable|no refunds?)\b"),
    ("the agenda includes paid promotion", r"\bsponsored (?:content|sessions?|talks?|keynotes?)\b"),
    (
        "speaking slots are sold to sponsors",
        r"\bpay[\s-]to[\s-](?:speak|pitch)\b"
        r"|\bspeaking slots?\b(?=[^.]{0,80}\b(?:package|sponsor|partner|paid))",
    ),
)


@functools.cache
def _topic_pattern(topic: str) -> re.Pattern[str]:
    """A word-boundary pattern for ``topic``: any run of spaces or hyphens between words, plural-tolerant."""
    words = topic.lower().split()
    last = words[-1]
    stems = [last[:-1], last] if last.endswith("s") and not last.endswith("ss") and len(last) > 3 else [last]
    ending = "(?:" + "|".join(re.escape(stem) for stem in stems) + ")(?:e?s)?"
    body = r"[\s\-]+".join([*(re.escape(word) for word in words[:-1]), ending])
    return re.compile(rf"(?<!\w){body}(?!\w)")


def _unique(topics: list[str]) -> list[str]:
    """Non-blank topics, stripped, first spelling kept when two differ only in case."""
    seen: dict[str, str] = {}
    for topic in topics:
        seen.setdefault(topic.strip().casefold(), topic.strip())
    seen.pop("", None)
    return list(seen.values())


def matched_topics(topics: list[str], text: str) -> list[str]:
    """The topics (in policy order, without duplicates) that appear in ``text``, case-insensitively."""
    haystack = text.lower()
    return [topic for topic in _unique(topics) if _topic_pattern(topic).search(haystack)]


def red_flags(text: str) -> list[str]:
    """One finding per red-flag kind present in ``text``, quoting the phrase found."""
    haystack = " ".join(text.lower().split())
    findings = []
    for meaning, pattern in RED_FLAGS:
        match = re.search(pattern, haystack)
        if match:
            findings.append(f'page mentions "{match.group(0)}": {meaning}')
    return findings


def review(*, conference_name: str, page_title: str, page_text: str, allowed_topics: list[str]) -> dict[str, Any]:
    """The offline rule, as a plain function: the answer ``ReviewConferenceFit`` gives without a model."""
    topics = _unique(allowed_topics)
    page = f"{page_title}\n{page_text}"
    found = matched_topics(topics, page)
    ratio = len(found) / len(topics) if topics else 0.0
    matches = len(found) >= 2 or (bool(found) and ratio >= 0.5)
    strong = len(found) >= 2 and ratio >= STRONG_RATIO
    confidence = STRONG_CONFIDENCE if strong else round(min(0.85, 0.3 + 0.6 * ratio), 2)

    risks: list[str] = []
    if not page.strip():
        risks.append("the page has no readable text (empty, or rendered only by JavaScript)")
    if not topics:
        risks.append("the travel policy lists no allowed topics")
    elif not found:
        risks.append("no allowed topics found on the page")
    elif ratio < 0.5:
        risks.append(f"only {len(found)} of {len(topics)} allowed topics appear on the page")
    risks += red_flags(page)

    name = conference_name.strip() or page_title.strip() or "the conference"
    topic_list = f" ({', '.join(found)})" if found else ""
    verdict = "fits" if matches else "does not fit"
    flags = f"{len(risks)} risk(s) noted" if risks else "no risks noted"
    summary = (
        f"Offline rule-based review, no language model: {name} {verdict} the travel policy; "
        f"{len(found)} of {len(topics)} allowed topics appear on the page{topic_list}; {flags}."
    )
    return {
        "content_matches_policy": matches,
        "confidence_score": round(confidence, 2),
        "matched_topics": found,
        "risks": risks,
        "summary": summary,
    }


class ReviewConferenceFit(Agent):
    """Judge whether a conference page's agenda matches the employee's allowed topics, and list risks."""

    instructions = (
        "Review the conference website content and determine whether the agenda aligns with the "
        "allowed company topics. Explain your reasoning briefly."
    )
    input_schema = {
        "conference_name": fields.String(required=True),
        "conference_url": fields.String(required=True),
        "page_title": fields.String(required=True),
        "page_text": fields.String(required=True),
        "allowed_topics": fields.List(fields.String(), required=True),
        # The §3 workflow passes the whole policy step result along; accept it rather than fail on unknowns.
        "employee_id": fields.String(),
        "estimated_cost_cents": fields.Integer(),
        "budget_limit_cents": fields.Integer(),
    }
    output_schema = {
        "content_matches_policy": fields.Boolean(required=True),
        "confidence_score": fields.Float(required=True),
        "matched_topics": fields.List(fields.String(), required=True),
        "risks": fields.List(fields.String(), required=True),
        "summary": fields.String(required=True),
    }

    def offline(self, input: dict[str, Any]) -> dict[str, Any]:
        """Deterministic answer for the offline model; see :func:`review`."""
        return review(
            conference_name=str(input.get("conference_name") or ""),
            page_title=str(input.get("page_title") or ""),
            page_text=str(input.get("page_text") or ""),
            allowed_topics=[str(t) for t in input.get("allowed_topics") or []],
        )
