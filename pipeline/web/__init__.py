"""The ``web`` process: the approval resume endpoint, a small admin and a JSON API for programmatic approvers.

Serve it with ``gunicorn "pipeline.web:create_app()"``. State changes only happen on POST by an authenticated
principal: HTML forms carry a session-bound CSRF token, the JSON API needs a personal API token
(``Authorization: Bearer``).
"""

from pipeline.web.app import create_app

__all__ = ["create_app"]
