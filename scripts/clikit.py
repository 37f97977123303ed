"""What the commands of the ``rubot`` command line share: one-line errors with an exit status, the runtime they
act on, and JSON options."""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from pipeline.errors import ConfigurationError, DefinitionError, RubotError

SETUP_ERROR = 2
RUN_ERROR = 1
DEFAULT_CELERY_APP = "rubot_app.tasks.app"


class RubotGroup(click.Group):
    """A click group that turns Rubot and connection errors into one line on stderr and an exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RubotError as exc:
            fail(exc.message, SETUP_ERROR if isinstance(exc, DefinitionError) else RUN_ERROR)
        except Exception as exc:
            problem = connection_problem(exc)
            if problem is None:
                raise
            fail(problem, SETUP_ERROR)


def connection_problem(exc: Exception) -> str | None:
    """A one-line explanation when the database or the broker cannot be reached, else ``None``."""
    from kombu.exceptions import OperationalError as BrokerError
    from sqlalchemy.exc import OperationalError as DatabaseError

    if isinstance(exc, DatabaseError):
        first_line = next(iter(str(exc.orig).strip().splitlines()), type(exc.orig).__name__)
        return f"cannot use the database: {first_line}"
    if isinstance(exc, BrokerError):
        return f"cannot reach the broker: {exc}"
    return None


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"rubot: error: {message}", err=True)
    raise click.exceptions.Exit(code)


def echo_lines(lines: Sequence[str]) -> None:
    click.echo("\n".join(lines))


def cli_runtime(*, migrated: bool = True) -> Any:
    """The installed runtime; by default checked to be migrated, so a fresh database gets a clear error."""
    from pipeline import runtime

    try:
        rt = runtime.current()
    except ConfigurationError:
        module = celery_app_module()
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigurationError(f"cannot import the Rubot Celery app module {module!r}: {exc}") from exc
        rt = runtime.current()
    if migrated:
        # The schema check goes through Alembic, whose INFO chatter is noise on a read command.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        rt.db.check_migrated()
        # The workflow modules' schemas say which fields are sensitive: what is printed is redacted by them.
        from pipeline.definitions import registry

        registry.import_modules(rt.settings.workflow_modules)
    return rt


def payload(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc.msg} at position {exc.pos})") from None


def celery_app_module() -> str:
    return os.environ.get("RUBOT_CELERY_APP", DEFAULT_CELERY_APP)
