"""The Flask app's configuration, from the environment."""

import os


class Config:
    SECRET_KEY = os.environ["HOST_SECRET_KEY"]
    CELERY = {
        "broker_url": os.environ["HOST_BROKER_URL"],
        "result_backend": os.environ["HOST_BROKER_URL"],
        "broker_transport_options": {"global_keyprefix": os.environ["HOST_KEY_PREFIX"]},
        "result_backend_transport_options": {"global_keyprefix": os.environ["HOST_KEY_PREFIX"]},
        "task_ignore_result": True,
    }
    RUBOT_DATABASE_URL = os.environ["HOST_RUBOT_DATABASE_URL"]
    RUBOT_QUEUE = os.environ["HOST_RUBOT_QUEUE"]
    RUBOT_WORKFLOW_MODULES = ["tools.workflows"]
