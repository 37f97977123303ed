"""``celery -A make_celery worker``: the Celery app of the Flask app (Flask's recipe)."""

from webapp import create_app

flask_app = create_app()
celery_app = flask_app.extensions["celery"]
