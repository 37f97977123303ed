# --- appended by the test: Postgres, Celery over Redis, Rubot ---
import os  # noqa: E402

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["HOST_DB_NAME"],
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": "5432",
    }
}
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS += ["pipeline.contrib.django", "tasks"]  # noqa: F821
TEMPLATES[0]["DIRS"] = [BASE_DIR / "templates"]  # noqa: F821
LOGIN_URL = "/accounts/login/"

CELERY_BROKER_URL = os.environ["HOST_BROKER_URL"]
CELERY_RESULT_BACKEND = os.environ["HOST_BROKER_URL"]
CELERY_BROKER_TRANSPORT_OPTIONS = {"global_keyprefix": os.environ["HOST_KEY_PREFIX"]}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"global_keyprefix": os.environ["HOST_KEY_PREFIX"]}
CELERY_IMPORTS = ["tasks"]

RUBOT_WORKFLOW_MODULES = ["tools.workflows"]
RUBOT_QUEUE = os.environ["HOST_RUBOT_QUEUE"]
# No RUBOT_DATABASE_URL: Rubot's tables go into DATABASES["default"].
