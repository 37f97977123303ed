"""Rubot inside a Django project.

* ``INSTALLED_APPS += ["pipeline.contrib.django"]`` (app label ``rubot``): adds the ``rubot_migrate``
  management command.
* Settings: the ``RUBOT_*`` names of the README in ``settings.py`` (``RUBOT_WORKFLOW_MODULES``, ``RUBOT_QUEUE``,
  ``RUBOT_DATABASE_URL`` — default: the ``default`` database — ...), read by ``pipeline.install(app)`` in your
  ``config/celery.py``.
* URLs: ``path("rubot/", include("pipeline.contrib.django.urls"))`` serves the approval and console pages to
  logged-in users (others go to ``LOGIN_URL``); the Django user, with its groups as roles, is the principal
  that decisions are recorded for (:mod:`pipeline.contrib.django.views`).
* ``launch_on_commit(MyWorkflow, input={...})``: launch once the current transaction commits
  (:mod:`pipeline.contrib.django.launch`).
"""

from pipeline.contrib.django.launch import delay_on_commit, launch_on_commit

__all__ = ["delay_on_commit", "launch_on_commit"]
