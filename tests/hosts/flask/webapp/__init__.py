"""The app factory: Flask-Login users, a refund endpoint that launches with .delay(), Rubot's pages."""

from flask import Flask, abort, jsonify, redirect, request
from flask_login import LoginManager, UserMixin, login_user

import pipeline
from config import Config
from pipeline.contrib.flask import Rubot
from pipeline.errors import RunNotFound
from tasks import celery_init_app


class User(UserMixin):
    def __init__(self, id, name, roles):
        self.id, self.name, self.roles = id, name, roles


USERS = {"lena": (User("lena", "Lena Lead", ["support_lead"]), "lena-pass")}
rubot = Rubot(url_prefix="/ops/rubot")


def create_app():
    app = Flask(__name__)
    app.config.from_object(Config)
    celery_init_app(app)
    login = LoginManager(app)
    login.login_view = "login"
    login.user_loader(lambda user_id: USERS.get(user_id, (None,))[0])
    rubot.init_app(app)

    @app.route("/login", methods=["GET", "POST"], endpoint="login")
    def login_page():
        if request.method == "GET":
            return '<form method="post"><input name="username"><input name="password" type="password"></form>'
        user, password = USERS.get(request.form.get("username", ""), (None, None))
        if user is None or request.form.get("password") != password:
            abort(401)
        login_user(user)
        return redirect(request.args.get("next") or "/")

    @app.post("/refunds")
    def launch_refund():
        from tools.workflows import ReviewRefund

        handle = ReviewRefund.delay(**request.get_json()["input"])
        return jsonify({"run_id": handle.id})

    @app.get("/refunds/<run_id>")
    def refund_status(run_id):
        try:
            run = pipeline.get_run(run_id)  # read in this (web) process
        except RunNotFound:
            return jsonify({"error": "not_found"}), 404
        return jsonify(
            {"status": run.status, "output": run.output, "decided_by": [a.decided_by for a in run.approvals]}
        )

    return app
