import json

from django.db import transaction
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt

import pipeline
from pipeline.contrib.django import delay_on_commit
from pipeline.errors import RunNotFound
from tools.workflows import ReviewRefund


@csrf_exempt
def launch_refund(request):
    body = json.loads(request.body)
    with transaction.atomic():
        handle = delay_on_commit(ReviewRefund, **body["input"])  # sent only if this transaction commits
        if body.get("rollback"):
            transaction.set_rollback(True)
    return JsonResponse({"run_id": handle.id})


def refund_status(request, run_id):
    try:
        run = pipeline.get_run(run_id)  # read in this (web) process
    except RunNotFound:
        return JsonResponse({"error": "not_found"}, status=404)
    return JsonResponse(
        {
            "status": run.status,
            "output": run.output,
            "decided_by": [a.decided_by for a in run.approvals],
            "error": run.error,
        }
    )
