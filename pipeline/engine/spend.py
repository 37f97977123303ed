"""Daily spend alerts: a lifecycle hook that raises one alert per workflow or agent and UTC day.

Switched on by settings: ``RUBOT_SPEND_ALERT_USD`` (a threshold for every workflow and every agent) and/or
``RUBOT_SPEND_ALERTS`` (thresholds for named workflows or agents). Without either the hook returns at once.

After each recorded (or estimated) model turn that cost something, the hook sums what the turn's workflow and its
agent were charged since midnight UTC (``model.turn`` and ``model.turn_estimated`` events) and, once a sum
reaches its threshold:

1. inserts a ``rubot_spend_alerts`` row keyed ``(scope, name, day)`` with "on conflict do nothing", so however many
   workers cross the threshold at once, exactly one insert wins — the alert is raised once, by SQL, not by a
   process-local flag (the flag only saves the query once this process knows);
2. in the same transaction writes a ``spend.alert`` event on the run whose turn crossed it;
3. after the commit, logs a warning (logger ``rubot.spend``) and, if the process initialised Sentry, sends a
   Sentry message.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from functools import partial
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from pipeline.engine.hooks import Hooks, ModelTurnInfo
from pipeline.store import queries
from pipeline.store.aftercommit import on_commit
from pipeline.store.tables import EventRow, RunRow, SpendAlertRow, utcnow

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

log = logging.getLogger("rubot.spend")

COST_EVENTS = ("model.turn", "model.turn_estimated")


class SpendAlerts(Hooks):
    """Raise ``spend.alert`` once per workflow or agent and day when its spend reaches its threshold."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._raised: set[tuple[str, str, date]] = set()

    def model_turn_recorded(self, info: ModelTurnInfo) -> None:
        self._check(info)

    def model_turn_estimated(self, info: ModelTurnInfo) -> None:
        self._check(info)

    def threshold_micros(self, name: str) -> int | None:
        settings = self.runtime.settings
        usd = settings.spend_alerts.get(name, settings.spend_alert_usd)
        return None if usd is None else round(usd * 1_000_000)

    def _check(self, info: ModelTurnInfo) -> None:
        settings = self.runtime.settings
        if not info.cost_micros or (settings.spend_alert_usd is None and not settings.spend_alerts):
            return
        now = utcnow()
        for scope, name in (("workflow", info.workflow), ("agent", info.agent)):
            threshold = self.threshold_micros(name)
            if threshold is None or not name or (scope, name, now.date()) in self._raised:
                continue
            with self.runtime.db.transaction() as s:
                spent = spent_today(s, scope, name, now=now)
                if spent < threshold:
                    continue
                self._raised.add((scope, name, now.date()))
                if raise_once(s, scope=scope, name=name, day=now.date(), threshold=threshold, spent=spent, info=info):
                    on_commit(s, partial(_announce, scope, name, spent, threshold, info.run_id))


def spent_today(s: Session, scope: str, name: str, *, now: datetime | None = None) -> int:
    """Micro-dollars charged to workflow or agent ``name`` since midnight UTC."""
    midnight = (now or utcnow()).astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    cost = func.coalesce(EventRow.data["cost_micros"].as_integer(), 0)
    query = select(func.sum(cost)).where(EventRow.type.in_(COST_EVENTS), EventRow.created_at >= midnight)
    if scope == "workflow":
        query = query.join(RunRow, RunRow.id == EventRow.run_id).where(RunRow.workflow == name)
    else:
        query = query.where(EventRow.data["agent"].as_string() == name)
    return int(s.execute(query).scalar() or 0)


def raise_once(
    s: Session, *, scope: str, name: str, day: date, threshold: int, spent: int, info: ModelTurnInfo
) -> bool:
    """Insert the alert row unless one exists for ``(scope, name, day)``; True when this call raised it."""
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    row = {
        "scope": scope,
        "name": name,
        "day": day.isoformat(),
        "threshold_micros": threshold,
        "spent_micros": spent,
        "run_id": info.run_id,
        "created_at": utcnow(),
    }
    statement = (
        insert(SpendAlertRow)
        .values(**row)
        .on_conflict_do_nothing(index_elements=["scope", "name", "day"])
        .returning(SpendAlertRow.id)
    )
    if s.execute(statement).scalar_one_or_none() is None:  # another process raised it first
        return False
    queries.add_event(
        s,
        info.run_id,
        "spend.alert",
        info.step,
        scope=scope,
        name=name,
        day=day.isoformat(),
        threshold_usd=threshold / 1_000_000,
        spent_usd=spent / 1_000_000,
    )
    return True


def _announce(scope: str, name: str, spent: int, threshold: int, run_id: str) -> None:
    message = (
        f"Rubot spend alert: {scope} {name} spent ${spent / 1_000_000:.4f} today (UTC), over its daily threshold "
        f"of ${threshold / 1_000_000:.4f} (run {run_id})"
    )
    log.warning(message, extra={"run_id": run_id, "spend_scope": scope, "spend_name": name})
    try:
        import sentry_sdk
    except ImportError:  # pragma: no cover - sentry-sdk is a dependency
        return
    if sentry_sdk.is_initialized():
        with sentry_sdk.new_scope() as scope_:
            scope_.set_tag("rubot.spend_scope", scope)
            scope_.set_tag("rubot.spend_name", name)
            scope_.set_tag("run_id", run_id)
            sentry_sdk.capture_message(message, level="warning")
