"""What an approver is shown, computed when the approval is requested and stored on it (redacted).

* An approval step: the workflow's reason, an optional one-line ``summary`` (a ``str.format`` template over
  ``input``, ``state`` and ``context``, or a callable taking those three), the run's state — what the next steps
  act on — and, from the second round of a revise loop on, what changed since the last round and the comment that
  sent it back.
* A model's tool call: the tool, its arguments and their hash (columns of the approval), the model's stated
  reason (the text of the turn that made the call) and the tool's ``approval_summary`` (a template over the
  arguments, or a callable taking them as keywords). The transcript up to the call is read from the ledger when
  the approval is shown (:func:`pipeline.llm.requests.transcript`), not copied.

Values under secret-looking keys are redacted before anything is formatted or stored. A summary template that
fails (a missing key) does not fail the run: the approver sees why the summary is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pipeline.redact import redact

log = logging.getLogger("rubot.approvals")

Summary = str | Callable[..., Any] | None


def summarize(template: Summary, values: dict[str, Any], *, positional: bool = False) -> str | None:
    """``template.format(**values)``, or ``template(**values)`` (``template(*values.values())`` when
    ``positional``) for a callable; the values are redacted first. Never raises."""
    if template is None:
        return None
    values = redact(values)
    try:
        if callable(template):
            text = template(*values.values()) if positional else template(**values)
        else:
            text = template.format(**values)
    except Exception as exc:  # a broken template must not fail the run; the approver sees why
        log.warning("approval summary failed: %s: %s", type(exc).__name__, exc)
        return f"(the summary could not be made: {type(exc).__name__}: {exc})"
    return None if text is None else str(redact(str(text)))


def step_evidence(state: dict[str, Any], *, round: int, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The evidence of an approval step: the state, and for a later round the changes since the last one."""
    snapshot = redact(state or {}, for_approvers=True)  # shown to approvers: as far as each field allows
    evidence: dict[str, Any] = {"state": snapshot, "round": round}
    if previous is not None:
        evidence["changes"] = changes(previous.get("state") or {}, snapshot)
        evidence["previous_comment"] = previous.get("comment")
    return evidence


def tool_evidence(model_reason: str | None) -> dict[str, Any]:
    return {"model_reason": redact(model_reason or "")}


def changes(before: Any, after: Any, path: str = "") -> list[dict[str, Any]]:
    """What differs between two JSON values, as ``{"path", "change", "before", "after"}`` entries.

    Dictionaries are compared key by key (paths like ``draft.amount_cents``); anything else is compared whole.
    """
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[dict[str, Any]] = []
        for key in sorted(set(before) | set(after), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in before:
                found.append({"path": where, "change": "added", "before": None, "after": after[key]})
            elif key not in after:
                found.append({"path": where, "change": "removed", "before": before[key], "after": None})
            else:
                found.extend(changes(before[key], after[key], where))
        return found
    if before == after:
        return []
    return [{"path": path or "(all)", "change": "changed", "before": before, "after": after}]
