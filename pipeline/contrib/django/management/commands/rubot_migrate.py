"""``python manage.py rubot_migrate``: create or upgrade Rubot's tables (Alembic) in its configured database."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create or upgrade Rubot's tables (rubot_*) in the database Rubot is configured with."

    def handle(self, *args: Any, **options: Any) -> None:
        import pipeline

        revision = pipeline.migrate()
        self.stdout.write(f"Rubot tables are at revision {revision} (head).")
