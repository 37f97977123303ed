"""The console's Batches pages: scheduled batches and how far their runs got (GET only)."""

from __future__ import annotations

from flask import Blueprint, render_template

from pipeline import batches
from pipeline.errors import RubotError
from pipeline.web import principals, reads, views
from pipeline.web.security import secure_headers

bp = Blueprint("rubot_batches", __name__, template_folder="templates")
bp.after_request(secure_headers)
bp.before_request(principals.require_principal)
bp.register_error_handler(RubotError, views.rubot_error_page)


@bp.get("/batches")
def batch_list() -> str:
    return render_template("rubot_batches.html", batches=batches.list_batches(reads.runtime(), limit=100))


@bp.get("/batches/<batch_id>")
def batch_detail(batch_id: str) -> str:
    rt = reads.runtime()
    return render_template(
        "rubot_batch.html", batch=batches.progress(rt, batch_id), runs=batches.runs_of(rt, batch_id, limit=500)
    )
