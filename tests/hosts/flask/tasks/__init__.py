"""The app's Celery app (Flask's celery_init_app recipe) with Rubot installed on it, and its own tasks."""

from celery import Celery, Task, shared_task

import pipeline


def celery_init_app(app):
    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app
    pipeline.install(celery_app, config=app.config)  # RUBOT_* names from app.config
    return celery_app


@shared_task(name="host.ping")
def ping():
    return "pong"
