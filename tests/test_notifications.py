"""Notifications and signed links: one e-mail (a real SMTP server) and one webhook per approval event, written in
the approval's transaction and sent by a Celery task; links that show on GET, decide once on POST with CSRF, and
refuse tampering, expiry and reuse; SLA reminders once; nothing lost when a send message is."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

import pipeline
from pipeline.engine import reminders
from pipeline.engine.expiry import expire_approvals
from pipeline.errors import DefinitionError
from pipeline.notify import sender
from pipeline.notify.base import SettingsDirectory
from pipeline.notify.email import SmtpNotifier
from pipeline.notify.links import SALT
from pipeline.notify.webhook import WebhookNotifier
from pipeline.store.tables import OutboxRow, utcnow
from pipeline.web import create_app
from tests import mailkit, webkit, workflows
from tests.conftest import eventually, sink_lines

LINK = re.compile(r"(http://127\.0\.0\.1:\d+/links/[A-Za-z0-9_.\-]+)")
DIRECTORY = {"manager": ["mia@example.com"], "director": ["dan@example.com"]}


@pytest.fixture
def mail():
    with mailkit.smtp_server() as (inbox, port):
        yield inbox, port


@pytest.fixture
def hooks():
    with mailkit.webhook_receiver() as received:
        yield received


@pytest.fixture
def web(stack):
    app = create_app(stack.runtime, secret_key=webkit.SECRET_KEY, authenticator=webkit.proxy_authenticator())
    with webkit.served(app) as url:
        yield url


@pytest.fixture
def notifying(stack, mail, hooks, web):
    """The stack's runtime (shared with its worker) notifying by e-mail and webhook, with links to ``web``."""
    inbox, port = mail
    received, hook_url = hooks
    stack.runtime.use_notifications(
        [SmtpNotifier("127.0.0.1", port, sender="rubot@example.com"), WebhookNotifier(hook_url)],
        directory=SettingsDirectory(DIRECTORY),
        base_url=web,
        secret_key=webkit.SECRET_KEY,
    )
    yield inbox, received, web
    stack.runtime.use_notifications([])


def outbox(stack, run_id):
    with stack.runtime.db.transaction() as s:
        return [
            (r.event, r.channel, r.recipient, r.status, r.attempts) for r in s.query(OutboxRow).filter_by(run_id=run_id)
        ]


def all_sent(stack, run_id, count):
    rows = outbox(stack, run_id)
    return len(rows) == count and all(status == "sent" for *_, status, _ in rows) and rows


def parked(workflow, sink):
    run = pipeline.run(workflow, input={"sink": str(sink)}, timeout=60)
    assert run.waiting_for_approval, run.error
    return run


def test_one_email_and_one_webhook_per_approval_with_a_signed_link_that_works_once(stack, sink, notifying):
    inbox, received, web = notifying
    # Given a run parks on a manager approval
    run = parked(workflows.ApprovalWorkflow, sink)

    # Then exactly one e-mail (to the manager) and one webhook call go out, both sent by the worker
    eventually(lambda: all_sent(stack, run.id, 2), what="both notifications sent")
    (mail,) = inbox.to("mia@example.com")
    assert len(inbox.messages) == 1 and len(received.calls) == 1
    rows = {channel: row for channel, row in [(c, (e, c, r)) for e, c, r, *_ in outbox(stack, run.id)]}
    assert set(rows) == {"email", "webhook"}
    assert mail["Subject"] == "[Rubot] An approval is waiting for you: Needs a manager."
    assert mail["Message-ID"].startswith("<ntf_") and mail["Message-ID"].endswith("@rubot>")
    body = mail.get_content()
    assert run.id in body and "role manager" in body
    (link,) = LINK.findall(body)
    headers, payload = received.calls[0]
    assert headers["Idempotency-Key"].startswith("ntf_")
    assert "An approval is waiting for you" in payload["text"] and payload["rubot"]["run_id"] == run.id
    assert "/links/" not in str(payload)  # a channel is not one approver: no personal link there

    with httpx.Client() as browser:
        # When the link is opened (twice, as a mail scanner and then the person would), nothing is decided
        for _ in range(2):
            page = browser.get(link)
            assert page.status_code == 200
        assert "mia@example.com" in page.text and "via link" in page.text
        assert pipeline.get_run(run.id).status == "waiting_for_approval"
        token = webkit.CSRF.search(page.text).group(1)

        # A POST without the page's CSRF token decides nothing either
        assert browser.post(f"{link}/approve", data={}).status_code == 400
        assert pipeline.get_run(run.id).status == "waiting_for_approval"

        # When the approver posts the form with its CSRF token, the run resumes as decided by the link's approver
        decided = browser.post(f"{link}/approve", data={"csrf_token": token, "comment": "ok by mail"})
        assert decided.status_code == 303
        done = pipeline.wait(run.id, timeout=30)
        assert done.status == "completed", done.error
        assert done.approvals[-1].principal == {
            "id": "mia@example.com",
            "display_name": "mia@example.com",
            "roles": ["manager"],
            "via": "link",
        }

        # Then the link works once: opening or posting it again is refused, and nothing changes
        again = browser.get(link)
        assert again.status_code == 410 and "already used" in again.text
        assert browser.post(f"{link}/reject", data={"csrf_token": token}).status_code == 410
    final = pipeline.get_run(run.id)
    assert [e.type for e in final.events].count("approval.approved") == 1
    assert sink_lines(sink) == [f"{run.id} prepare", f"{run.id} after"]
    assert len(inbox.messages) == 1 and len(received.calls) == 1  # deciding sends nothing more


def test_tampered_expired_and_foreign_links_are_refused_with_a_clear_page(stack, sink, notifying, tmp_path):
    inbox, _, web = notifying
    run = parked(workflows.ApprovalWorkflow, sink)
    eventually(lambda: inbox.to("mia@example.com"), what="the e-mail")
    (link,) = LINK.findall(inbox.to("mia@example.com")[0].get_content())
    token = link.rsplit("/", 1)[1]

    with httpx.Client() as browser:
        # Tampered: one character of the signed token changed
        tampered = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
        answer = browser.get(f"{web}/links/{tampered}")
        assert answer.status_code == 403 and "not valid" in answer.text

        # Expired: the same claims signed four days ago (links live three days)
        class FourDaysAgo(TimestampSigner):
            def get_timestamp(self) -> int:
                return super().get_timestamp() - 4 * 24 * 3600

        old = URLSafeTimedSerializer(webkit.SECRET_KEY, salt=SALT, signer=FourDaysAgo).dumps(
            URLSafeTimedSerializer(webkit.SECRET_KEY, salt=SALT).loads(token)
        )
        expired = browser.get(f"{web}/links/{old}")
        assert expired.status_code == 403 and "expired" in expired.text
        page = browser.get(link)
        csrf = webkit.CSRF.search(page.text).group(1)
        assert browser.post(f"{web}/links/{old}/approve", data={"csrf_token": csrf}).status_code == 403
        assert browser.post(f"{web}/links/{tampered}/approve", data={"csrf_token": csrf}).status_code == 403

        # Signed with another key (another deployment's link): refused
        foreign = URLSafeTimedSerializer("another-key", salt=SALT).dumps(
            {"l": "x", "a": "apr_x", "r": run.id, "p": "m"}
        )
        assert browser.get(f"{web}/links/{foreign}").status_code == 403

    assert pipeline.get_run(run.id).status == "waiting_for_approval"

    # A link for an approval that is no longer pending (decided by someone else) decides nothing
    pipeline.get_run(run.id).reject(rejected_by="ops@example.com")
    with httpx.Client() as browser:
        stale = browser.get(link)
        assert stale.status_code == 409 and "no longer pending" in stale.text


def test_a_lost_send_message_is_swept_and_sent_once(stack, sink, notifying):
    inbox, received, _ = notifying
    # Given the messages that would send the notifications are lost (a crash right after the commit)
    stack.runtime.notifications.dispatch = None
    run = parked(workflows.ApprovalWorkflow, sink)
    assert [status for *_, status, _ in outbox(stack, run.id)] == ["pending", "pending"]
    assert inbox.messages == []

    # When beat's sweep task runs once the rows are older than the sweep's grace period, then runs again
    with stack.runtime.db.transaction() as s:
        for row in s.query(OutboxRow).filter_by(run_id=run.id):
            row.created_at = utcnow() - timedelta(minutes=1)
    stack.app.send_task(sender.SWEEP_TASK, queue=stack.settings.queue)
    eventually(lambda: all_sent(stack, run.id, 2), what="the swept notifications sent")
    stack.app.send_task(sender.SWEEP_TASK, queue=stack.settings.queue)
    dispatch = lambda outbox_id: stack.runtime.send(sender.SEND_TASK, outbox_id)  # noqa: E731
    assert sender.sweep(stack.runtime.db, dispatch, now=utcnow() + timedelta(minutes=5)) == []

    # Then each went out exactly once
    eventually(lambda: len(inbox.messages) == 1 and len(received.calls) == 1, what="one e-mail and one call")
    assert len(inbox.to("mia@example.com")) == 1 and len(received.calls) == 1


def test_a_failed_send_stays_in_the_outbox_and_is_sent_when_the_server_is_back(stack, sink, notifying, mail):
    inbox, received, web = notifying
    # Given an SMTP server that is not there yet
    down = mailkit.free_port()
    stack.runtime.use_notifications(
        [SmtpNotifier("127.0.0.1", down, sender="rubot@example.com", timeout=2)],
        directory=SettingsDirectory(DIRECTORY),
        base_url=web,
        secret_key=webkit.SECRET_KEY,
    )
    stack.runtime.notifications.dispatch = None  # the test sends by hand, to watch each attempt
    run = parked(workflows.ApprovalWorkflow, sink)
    with stack.runtime.db.transaction() as s:
        (outbox_id,) = [r.id for r in s.query(OutboxRow).filter_by(run_id=run.id)]

    with pytest.raises(pipeline.errors.NotificationFailed):
        sender.send(stack.runtime.db, stack.runtime.notifications, outbox_id)
    assert outbox(stack, run.id) == [("requested", "email", "mia@example.com", "pending", 1)]

    # When the server is back (here: the notifier points at the live one) the next attempt delivers it
    _, port = mail
    stack.runtime.notifications.notifiers["email"].port = port
    assert sender.send(stack.runtime.db, stack.runtime.notifications, outbox_id) == "sent"
    assert sender.send(stack.runtime.db, stack.runtime.notifications, outbox_id) == "done"
    assert len(inbox.to("mia@example.com")) == 1


def test_sla_reminds_once_then_the_deadline_escalates_and_notifies_the_new_role(stack, sink, notifying):
    inbox, received, _ = notifying
    run = parked(workflows.SlaWorkflow, sink)
    eventually(lambda: all_sent(stack, run.id, 2), what="the request notifications")

    # Before the SLA nothing; after it one reminder; a second sweep reminds nobody again
    assert reminders.send_reminders(stack.runtime, now=utcnow() + timedelta(minutes=20)) == []
    assert len(reminders.send_reminders(stack.runtime, now=utcnow() + timedelta(minutes=31))) == 1
    assert reminders.send_reminders(stack.runtime, now=utcnow() + timedelta(minutes=40)) == []
    eventually(lambda: all_sent(stack, run.id, 4), what="the reminder notifications")
    reminder = inbox.to("mia@example.com")[-1]
    assert reminder["Subject"].startswith("[Rubot] Reminder: an approval is still waiting")
    assert pipeline.get_run(run.id).pending_approval.reminded_at is not None
    assert [e.type for e in pipeline.get_run(run.id).events].count("approval.reminded") == 1

    # Then the deadline passes: the old role hears it expired, the director gets the escalated approval
    expire_approvals(stack.runtime, now=utcnow() + timedelta(hours=2))
    eventually(lambda: all_sent(stack, run.id, 8), what="the expiry and escalation notifications")
    assert [m["Subject"].split(":")[0] for m in inbox.to("mia@example.com")] == [
        "[Rubot] An approval is waiting for you",
        "[Rubot] Reminder",
        "[Rubot] An approval expired without a decision",
    ]
    (escalated,) = inbox.to("dan@example.com")
    assert escalated["Subject"].startswith("[Rubot] An approval was escalated to you")
    assert LINK.search(escalated.get_content())
    # Each event once on the webhook too (sent by separate tasks, so in any order)
    assert sorted(p["rubot"]["event"] for _, p in received.calls) == ["escalated", "expired", "reminded", "requested"]


def test_sla_combinations_are_checked_when_classes_are_created():
    from pipeline import Tool, Workflow, approval_step

    with pytest.raises(DefinitionError, match="sla .* must be shorter than expires_in"):

        class Late(Workflow):
            manager = approval_step(role="manager", sla=timedelta(hours=2), expires_in=timedelta(hours=1))

    with pytest.raises(DefinitionError, match="sla must be a datetime.timedelta"):

        class NotADuration(Workflow):
            manager = approval_step(role="manager", sla=30)

    with pytest.raises(DefinitionError, match="approval_sla must be shorter"):

        class SlowTool(Tool):
            approval_sla = timedelta(hours=3)
            approval_expires_in = timedelta(hours=1)

            def call(self):
                return {}


def test_notification_settings_come_from_the_environment(tmp_path):
    from pipeline.errors import ConfigurationError
    from pipeline.notify.configure import notifiers_from
    from rubot_app.config.settings import load

    env = {
        "RUBOT_HOME": str(tmp_path),
        "RUBOT_SMTP_HOST": "mail.internal",
        "RUBOT_SMTP_PORT": "2525",
        "RUBOT_SMTP_FROM": "rubot@example.com",
        "RUBOT_SMTP_PASSWORD": "smtp-secret",
        "RUBOT_NOTIFY_WEBHOOK_URL": "https://hooks.example.com/T000/B000/xyz",
        "RUBOT_APPROVERS": '{"engineering_manager": ["mia@example.com", "max@example.com"]}',
        "RUBOT_WEB_BASE_URL": "https://rubot.example.com",
        "RUBOT_WEB_SECRET_KEY": "k",
    }
    settings = load(env)
    email, webhook = notifiers_from(settings)
    assert (email.host, email.port, email.sender) == ("mail.internal", 2525, "rubot@example.com")
    assert webhook.url.endswith("/xyz")
    assert settings.approvers == {"engineering_manager": ("mia@example.com", "max@example.com")}
    assert "smtp-secret" not in repr(settings) and "smtp-secret" not in repr(email) and "xyz" not in repr(webhook)
    people = SettingsDirectory(settings.approvers).approvers("engineering_manager", "ann@example.com")
    assert [(p.id, p.roles) for p in people] == [
        ("max@example.com", ("engineering_manager",)),
        ("mia@example.com", ("engineering_manager",)),
        ("ann@example.com", ()),
    ]
    with pytest.raises(ConfigurationError, match="RUBOT_APPROVERS is not valid JSON"):
        load({**env, "RUBOT_APPROVERS": "{nope"})
    with pytest.raises(ConfigurationError, match="must map roles to lists"):
        load({**env, "RUBOT_APPROVERS": '{"m": "mia@example.com"}'})


def test_the_notification_tasks_and_beat_entries_are_registered_by_name(stack):
    from pipeline.worker.conf import build

    schedule = build(stack.settings)["beat_schedule"]
    assert schedule["rubot-sweep-notifications"]["task"] == sender.SWEEP_TASK
    assert schedule["rubot-remind-approvals"]["task"] == reminders.SWEEP_TASK
    for name in (sender.SEND_TASK, sender.SWEEP_TASK, reminders.SWEEP_TASK):
        assert name in stack.app.tasks


def test_the_reminder_task_reminds_through_the_broker(stack, sink, notifying):
    inbox, _, _ = notifying
    run = parked(workflows.SlaWorkflow, sink)
    with stack.runtime.db.transaction() as s:  # as if the 30 minutes had passed
        from pipeline.store.tables import ApprovalRow

        s.get(ApprovalRow, run.pending_approval.id).remind_at = utcnow() - timedelta(seconds=1)

    stack.app.send_task(reminders.SWEEP_TASK, queue=stack.settings.queue)

    eventually(lambda: pipeline.get_run(run.id).pending_approval.reminded_at, what="the reminder")
    eventually(lambda: any("Reminder" in m["Subject"] for m in inbox.to("mia@example.com")), what="the e-mail")
