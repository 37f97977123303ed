"""Workflows launched by Celery beat, at most once per tick however many beats run.

A schedule is a ``celery.schedules.crontab`` or :class:`every` (a ``timedelta`` or a number of seconds is turned
into ``every``). It comes from a workflow (``schedule = crontab(hour=2, minute=0)``) or from the settings table
``RUBOT_SCHEDULES`` (name -> ``{"workflow", "schedule", "input", "subject", "context", "batch"}``; in the
environment, JSON with ``schedule`` as seconds or a five-field crontab string).

**Ticks and idempotency.** Both kinds are aligned to the clock: ``every(5)`` fires at Unix times divisible by 5
(UTC) and a crontab at its minutes, so every beat process agrees on when a tick is. When beat sends
``rubot.scheduled(name)``, a :class:`celery.beat.BeatLazyFunc` stamps the message with its tick — the latest
scheduled time at or before the moment of sending. The run id is derived from the schedule's name and that tick
(:func:`run_id_for`); it is the run's primary key, so a second beat (a duplicated deployment, a restart mid-tick)
sending the same tick finds the run already there, and the insert that loses the race is not an error.

Beat entries are added when beat starts (:mod:`pipeline.worker.signals`), with Celery's default scheduler: the
tick is stamped by the scheduler, so schedulers that store entries as JSON (django-celery-beat) are not supported.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from celery.beat import BeatLazyFunc
from celery.schedules import crontab, schedule

from pipeline.definitions import registry
from pipeline.errors import ConfigurationError, DefinitionError

if TYPE_CHECKING:
    from pipeline.runtime import Runtime

SCHEDULED_TASK = "rubot.scheduled"
ENTRY_PREFIX = "rubot-schedule:"


class every(schedule):  # noqa: N801 - reads like crontab(...)
    """Every ``seconds`` (a number or a ``timedelta``), on a grid anchored at the Unix epoch, so that every beat
    process fires at the same moments."""

    def __init__(self, seconds: float | timedelta, app: Any = None) -> None:
        value = seconds.total_seconds() if isinstance(seconds, timedelta) else seconds
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 1:
            raise DefinitionError(f"every() needs at least one second, got {seconds!r}")
        self.interval = float(value)
        super().__init__(run_every=timedelta(seconds=self.interval), app=app)

    def __repr__(self) -> str:
        return f"<every {self.interval:g}s>"

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.interval,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, every) and other.interval == self.interval

    def __hash__(self) -> int:
        return hash(("every", self.interval))

    def tick_at(self, moment: datetime) -> datetime:
        """The latest grid point at or before ``moment``."""
        stamp = math.floor(moment.timestamp() / self.interval) * self.interval
        return datetime.fromtimestamp(stamp, UTC)

    def is_due(self, last_run_at: datetime) -> Any:
        now = self.now()
        current = self.tick_at(now).timestamp()
        until_next = current + self.interval - now.timestamp()
        last = self.maybe_make_aware(last_run_at).timestamp()
        # Due once per grid interval: when the last send happened before the current grid point.
        return schedstate(last < current, max(0.01, until_next))

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        now = self.now()
        return timedelta(seconds=self.tick_at(now).timestamp() + self.interval - now.timestamp())


def schedstate(is_due: bool, next_in: float) -> Any:
    from celery.schedules import schedstate as state

    return state(is_due, next_in)


def as_schedule(value: Any, *, where: str) -> schedule:
    """A workflow's or a setting's schedule as a clock-aligned Celery schedule."""
    if isinstance(value, every | crontab):
        return value
    try:
        if isinstance(value, timedelta) or (isinstance(value, int | float) and not isinstance(value, bool)):
            return every(value)
        if isinstance(value, schedule) and type(value) is schedule:
            return every(value.run_every)
    except DefinitionError as exc:
        raise DefinitionError(f"{where}: {exc.message}") from None
    if isinstance(value, str) and len(value.split()) == 5:
        minute, hour, day_of_month, month_of_year, day_of_week = value.split()
        try:
            return crontab(minute, hour, day_of_week, day_of_month, month_of_year)
        except ValueError as exc:
            raise DefinitionError(f"{where}: bad crontab {value!r}: {exc}") from None
    raise DefinitionError(
        f"{where} must be a celery crontab, a timedelta, seconds, pipeline.every(...) or a crontab string "
        f"like '*/5 * * * *'; got {value!r}"
    )


def tick_of(sched: schedule, moment: datetime | None = None) -> datetime:
    """The latest time ``sched`` was due at or before ``moment`` (default: now), in UTC."""
    moment = moment or datetime.now(UTC)
    if isinstance(sched, every):
        return sched.tick_at(moment)
    if isinstance(sched, crontab):
        return _crontab_tick(sched, moment)
    raise DefinitionError(f"unsupported schedule {sched!r}")


def _crontab_tick(sched: crontab, moment: datetime) -> datetime:
    local = moment.astimezone(sched.tz or UTC).replace(second=0, microsecond=0)
    for _ in range(2 * 366 * 24 * 60):  # bounded walk back, a day or an hour at a time where nothing matches
        if (
            local.month not in sched.month_of_year
            or local.day not in sched.day_of_month
            or (local.isoweekday() % 7 not in sched.day_of_week)
        ):
            local = local.replace(hour=23, minute=59) - timedelta(days=1)
        elif local.hour not in sched.hour:
            local = local.replace(minute=59) - timedelta(hours=1)
        elif local.minute not in sched.minute:
            local -= timedelta(minutes=1)
        else:
            return local.astimezone(UTC)
    raise DefinitionError(f"{sched!r} never fires")


def stamp_tick(sched: schedule) -> str:
    """Called by beat (through ``BeatLazyFunc``) as it sends a tick's message: the tick, as ISO 8601."""
    return tick_of(sched).isoformat()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def run_id_for(name: str, tick: str) -> str:
    """The run of schedule ``name`` at ``tick``: the same for every beat that sends that tick."""
    return f"run_{_digest('schedule', name, tick)}"


def batch_id_for(name: str, tick: str) -> str:
    return f"batch_{_digest('batch', name, tick)}"


@dataclass(frozen=True)
class Scheduled:
    """One schedule: which workflow, when, and what each tick launches."""

    name: str
    workflow: str
    schedule: schedule
    input: Any = None
    subject: Any = None
    context: Any = None
    #: ``"module:function"`` (settings) listing a batch's items; a workflow's own ``batch`` classmethod otherwise.
    batch: str | None = None


def from_settings(table: Mapping[str, Any]) -> dict[str, Scheduled]:
    """The ``RUBOT_SCHEDULES`` table, checked (a bad entry is a configuration error naming it)."""
    found = {}
    for name, entry in table.items():
        where = f"RUBOT_SCHEDULES[{name!r}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("workflow"), str):
            raise ConfigurationError(f"{where} must be an object with a 'workflow' name and a 'schedule'")
        unknown = set(entry) - {"workflow", "schedule", "input", "subject", "context", "batch"}
        if unknown:
            raise ConfigurationError(f"{where} has unknown keys {sorted(unknown)}")
        if entry.get("batch") is not None and ":" not in str(entry["batch"]):
            raise ConfigurationError(f"{where}['batch'] must be 'module:function'")
        found[str(name)] = Scheduled(
            name=str(name),
            workflow=entry["workflow"],
            schedule=as_schedule(entry.get("schedule"), where=f"{where}['schedule']"),
            input=entry.get("input"),
            subject=entry.get("subject"),
            context=entry.get("context"),
            batch=entry.get("batch"),
        )
    return found


def all_schedules(runtime: Runtime) -> dict[str, Scheduled]:
    """Every schedule of the deployment: scheduled workflows (imported from its workflow modules) and the
    settings table, which wins on a name both define."""
    registry.import_modules(runtime.settings.workflow_modules)
    found: dict[str, Scheduled] = {}
    for name in registry.workflows.names():
        cls = registry.workflows.get(name)
        sched = getattr(cls, "schedule", None)
        if sched is not None:
            found[name] = Scheduled(name=name, workflow=name, schedule=sched, input=cls.schedule_input)  # type: ignore[union-attr]
    found.update(from_settings(runtime.settings.schedules))
    return found


def find(runtime: Runtime, name: str) -> Scheduled:
    schedules = all_schedules(runtime)
    if name not in schedules:
        raise ConfigurationError(f"no schedule named {name!r} (known: {', '.join(sorted(schedules)) or 'none'})")
    return schedules[name]


def beat_entries(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Rubot's ``beat_schedule`` entries: the sweeps and one entry per schedule, each stamping its tick."""
    from pipeline.worker.conf import sweeps

    settings = runtime.settings
    entries = sweeps(settings)
    for name, item in all_schedules(runtime).items():
        entries[f"{ENTRY_PREFIX}{name}"] = {
            "task": SCHEDULED_TASK,
            "schedule": item.schedule,
            "args": (name,),
            "kwargs": {"tick": BeatLazyFunc(stamp_tick, item.schedule)},
            "options": {"queue": settings.queue, "serializer": "json"},
        }
    return entries
