"""The Django app spinach.contrib.spinachd, in a real Django project on the MemoryBroker.

Django settings can be configured once per process: every Django test lives in
this module, which configures them once, with the apps of ``django_project/``.
"""

from __future__ import annotations

import sys
import threading
import types
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from spinach import Engine, MemoryBroker, signals
from spinach.clock import ManualClock
from spinach.job import Job

PROJECT_DIR = Path(__file__).parent / "django_project"
NAMESPACE = "spinachd-tests"


@pytest.fixture(scope="module", autouse=True)
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Configure Django once, with a SQLite file (shared by worker threads) and migrate it."""
    import django
    from django.core.management import call_command
    from django.db import connections

    if not settings.configured:
        sys.path.insert(0, str(PROJECT_DIR))
        db = tmp_path_factory.mktemp("django") / "db.sqlite3"
        settings.configure(
            SECRET_KEY="spinach-tests",
            USE_TZ=True,
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(db)}},
            DEFAULT_AUTO_FIELD="django.db.models.AutoField",
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "django.contrib.sessions",
                "spinach.contrib.spinachd",
                "spinachd_testapp",
                "spinachd_notasks",
            ],
            SPINACH_BROKER=MemoryBroker(ManualClock()),
            SPINACH_NAMESPACE=NAMESPACE,
            SPINACH_CLEAR_SESSIONS_PERIODICITY=timedelta(hours=1),
            SPINACH_ACTUAL_EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend",
            EMAIL_BACKEND="spinach.contrib.spinachd.mail.BackgroundEmailBackend",
        )
        django.setup()
        call_command("migrate", verbosity=0)
    elif "spinach.contrib.spinachd" not in settings.INSTALLED_APPS:
        pytest.skip("Django settings were configured elsewhere, without spinach.contrib.spinachd")
    yield
    connections.close_all()


@pytest.fixture
def broker() -> MemoryBroker:
    broker = settings.SPINACH_BROKER
    assert isinstance(broker, MemoryBroker)
    return broker


@pytest.fixture
def engine(broker: MemoryBroker) -> Iterator[Engine]:
    """The project's engine, with an empty broker, an empty outbox and no notes."""
    from django.core import mail
    from spinachd_testapp import tasks as testapp_tasks
    from spinachd_testapp.models import Note

    from spinach.contrib.spinachd import get_engine

    broker.flush()
    mail.outbox = []
    Note.objects.all().delete()
    testapp_tasks.used_connections.clear()
    engine = get_engine()
    yield engine
    engine.stop_workers()
    broker.flush()


class TestEngine:
    def test_engine_is_built_from_the_settings(self, engine: Engine) -> None:
        """The engine has the SPINACH_NAMESPACE and is also spinachd.spin, as in 0.0.25."""
        from spinach.contrib import spinachd

        assert engine.namespace == NAMESPACE
        assert spinachd.spin is engine

    def test_get_engine_before_setup_says_what_to_do(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without django.setup(), get_engine() says to install the app and set Django up."""
        from spinach.contrib.spinachd import engine as engine_module

        monkeypatch.setattr(engine_module, "_engine", None)
        with pytest.raises(ImproperlyConfigured, match=r"INSTALLED_APPS.*django\.setup"):
            engine_module.get_engine()

    def test_app_tasks_are_discovered_and_touch_the_database(self, engine: Engine) -> None:
        """An app's tasks registry is attached: its jobs run and write to the database."""
        from spinachd_testapp.models import Note
        from spinachd_testapp.tasks import tasks

        tasks.schedule("testapp:add_note", "from a registry")
        engine.schedule("testapp:add_note", "from the engine")
        engine.start_workers(number=1, stop_when_queue_empty=True)
        texts = sorted(Note.objects.values_list("text", flat=True))
        assert texts == ["from a registry", "from the engine"]

    def test_worker_database_connections_are_closed_after_each_job(self, engine: Engine) -> None:
        """The DB connection a job opened in its worker thread is closed once the job ends."""
        from spinachd_testapp.tasks import used_connections

        engine.schedule("testapp:add_note", "x")
        engine.start_workers(number=1, stop_when_queue_empty=True)
        assert len(used_connections) == 1
        assert used_connections[0].connection is None


class TestManagementCommand:
    def test_spinach_command_runs_the_jobs(self, engine: Engine) -> None:
        """manage.py spinach --stop-when-queue-empty runs every queued job, then returns."""
        from django.core.management import call_command
        from spinachd_testapp.models import Note

        for i in range(4):
            engine.schedule("testapp:add_note", f"note {i}")
        call_command("spinach", stop_when_queue_empty=True, threads=2)
        assert Note.objects.count() == 4
        assert broker_is_empty(settings.SPINACH_BROKER)

    def test_spinach_command_rejects_zero_threads(self, engine: Engine) -> None:
        """--threads 0 is a command error naming the option."""
        from django.core.management import call_command
        from django.core.management.base import CommandError

        with pytest.raises(CommandError, match="--threads"):
            call_command("spinach", "--threads", "0", "--stop-when-queue-empty")


class TestEmail:
    def test_background_backend_delivers_through_the_actual_backend(self, engine: Engine) -> None:
        """Mail is only scheduled at send time, and delivered intact by the workers."""
        from django.core import mail
        from django.utils.safestring import mark_safe
        from django.utils.translation import gettext_lazy

        rich = mail.EmailMultiAlternatives(
            gettext_lazy("Hello"),
            "Plain body",
            "from@example.com",
            ["to@example.com"],
            cc=["cc@example.com"],
            bcc=["bcc@example.com"],
            reply_to=["reply@example.com"],
            headers={"X-Tag": "welcome"},
        )
        rich.attach_alternative(mark_safe("<p>Hello</p>"), "text/html")
        rich.attach("notes.txt", "some text", "text/plain")
        rich.attach("data.bin", b"\x00\xff", "application/octet-stream")
        html = mail.EmailMessage("Html", "<b>bold</b>", "from@example.com", ["to@example.com"])
        html.content_subtype = "html"

        assert mail.get_connection().send_messages([rich, html]) == 2
        assert mail.outbox == []
        engine.start_workers(number=1, stop_when_queue_empty=True)

        sent_rich, sent_html = mail.outbox
        assert isinstance(sent_rich, mail.EmailMultiAlternatives)
        assert (sent_rich.subject, sent_rich.body, sent_rich.from_email) == (
            "Hello",
            "Plain body",
            "from@example.com",
        )
        assert (sent_rich.to, sent_rich.cc, sent_rich.bcc, sent_rich.reply_to) == (
            ["to@example.com"],
            ["cc@example.com"],
            ["bcc@example.com"],
            ["reply@example.com"],
        )
        assert sent_rich.extra_headers == {"X-Tag": "welcome"}
        assert [tuple(a) for a in sent_rich.alternatives] == [("<p>Hello</p>", "text/html")]
        assert [tuple(a) for a in sent_rich.attachments] == [
            ("notes.txt", "some text", "text/plain"),
            ("data.bin", b"\x00\xff", "application/octet-stream"),
        ]
        assert type(sent_html) is mail.EmailMessage
        assert (sent_html.subject, sent_html.content_subtype) == ("Html", "html")

    def test_send_mail_goes_through_the_background_backend(self, engine: Engine) -> None:
        """django.core.mail.send_mail works unchanged with the background backend."""
        from django.core import mail

        assert mail.send_mail("Hi", "Body", "from@example.com", ["to@example.com"]) == 1
        engine.start_workers(number=1, stop_when_queue_empty=True)
        assert [m.subject for m in mail.outbox] == ["Hi"]

    def test_no_messages_schedule_no_job(self, engine: Engine, broker: MemoryBroker) -> None:
        """Sending an empty list of messages returns 0 and schedules nothing."""
        from django.core import mail

        assert mail.get_connection().send_messages([]) == 0
        assert broker_is_empty(broker)

    def test_mime_attachment_is_refused_unless_failing_silently(
        self, engine: Engine, broker: MemoryBroker
    ) -> None:
        """A MIME attachment cannot travel as JSON: a TypeError, or 0 with fail_silently."""
        from email.mime.text import MIMEText

        from django.core import mail

        message = mail.EmailMessage("S", "B", "from@example.com", ["to@example.com"])
        message.attach(MIMEText("inline"))
        with pytest.raises(TypeError, match=r"message\.attach\(filename, content, mimetype\)"):
            mail.get_connection().send_messages([message])
        assert mail.get_connection(fail_silently=True).send_messages([message]) == 0
        assert broker_is_empty(broker)


class TestSessions:
    def test_expired_sessions_are_cleared_periodically(
        self, engine: Engine, broker: MemoryBroker
    ) -> None:
        """With SPINACH_CLEAR_SESSIONS_PERIODICITY, a periodic job deletes expired sessions."""
        from django.contrib.sessions.models import Session
        from django.utils import timezone

        from spinach.contrib.spinachd.tasks import CLEAR_SESSIONS_TASK

        now = timezone.now()
        Session.objects.create(
            session_key="e" * 32, session_data="", expire_date=now - timedelta(1)
        )
        Session.objects.create(
            session_key="v" * 32, session_data="", expire_date=now + timedelta(1)
        )
        cleared = threading.Event()

        def on_finished(namespace: str, job: Job, **kwargs: Any) -> None:
            if job.task_name == CLEAR_SESSIONS_TASK:
                cleared.set()

        signals.job_finished.connect(on_finished, sender=NAMESPACE, weak=False)
        try:
            engine.start_workers(number=1, block=False)
            clock = broker.clock
            assert isinstance(clock, ManualClock)
            clock.advance(timedelta(hours=1))
            broker.wake_up()
            assert cleared.wait(10)
        finally:
            signals.job_finished.disconnect(on_finished, sender=NAMESPACE)
        engine.stop_workers()
        assert list(Session.objects.values_list("session_key", flat=True)) == ["v" * 32]

    def test_clear_task_is_there_without_the_setting(self) -> None:
        """Without the setting the task is still attached (not periodic) and can be scheduled."""
        from django.apps import apps
        from django.contrib.sessions.models import Session
        from django.test import override_settings
        from django.utils import timezone

        from spinach.contrib.spinachd import engine as engine_module
        from spinach.contrib.spinachd.tasks import CLEAR_SESSIONS_TASK

        before = engine_module.get_engine()
        try:
            with override_settings(SPINACH_BROKER=MemoryBroker()):
                del settings.SPINACH_CLEAR_SESSIONS_PERIODICITY
                apps.get_app_config("spinachd").ready()
            engine = engine_module.get_engine()
            assert engine is not before
            assert engine._tasks.get(CLEAR_SESSIONS_TASK).periodicity is None
            Session.objects.create(
                session_key="x" * 32, session_data="", expire_date=timezone.now() - timedelta(1)
            )
            engine.schedule(CLEAR_SESSIONS_TASK)
            engine.start_workers(number=1, stop_when_queue_empty=True)
            assert not Session.objects.filter(session_key="x" * 32).exists()
        finally:
            engine_module._set_engine(before)


class TestDiscovery:
    def test_module_without_tasks_is_skipped(self, caplog: pytest.LogCaptureFixture) -> None:
        """A tasks module without a 'tasks' attribute gives None, with a debug log."""
        from spinach.contrib.spinachd.discovery import tasks_of_module

        module = types.ModuleType("fake_app.tasks")
        with caplog.at_level("DEBUG", logger="spinach.contrib.spinachd.discovery"):
            assert tasks_of_module(module) is None
        assert "fake_app.tasks" in caplog.text

    def test_tasks_that_is_not_a_registry_is_an_error(self) -> None:
        """A 'tasks' that is not a spinach.Tasks raises ImproperlyConfigured naming the module."""
        from spinach.contrib.spinachd.discovery import tasks_of_module

        module = types.ModuleType("fake_app.tasks")
        module.tasks = ["not", "a", "registry"]  # type: ignore[attr-defined]  # a fake module
        with pytest.raises(ImproperlyConfigured, match=r"fake_app\.tasks\.tasks must be"):
            tasks_of_module(module)

    def test_apps_without_a_registry_attach_nothing(self) -> None:
        """Apps with no tasks module, or one without 'tasks', attach no registry."""
        from django.apps import apps

        from spinach.contrib.spinachd.discovery import discover_tasks

        engine = Engine(MemoryBroker(), "spinachd-discovery")
        configs = [apps.get_app_config("contenttypes"), apps.get_app_config("spinachd_notasks")]
        assert discover_tasks(engine, configs) == []


class TestSettings:
    def test_broker_of_the_wrong_type_is_an_error(self) -> None:
        """A SPINACH_BROKER that is not a Broker instance raises ImproperlyConfigured."""
        from django.test import override_settings

        from spinach.contrib.spinachd.conf import get_broker

        with (
            override_settings(SPINACH_BROKER="redis://localhost:6379"),
            pytest.raises(ImproperlyConfigured, match="SPINACH_BROKER must be a spinach Broker"),
        ):
            get_broker()

    def test_default_broker_is_redis_and_does_not_connect(self) -> None:
        """Without SPINACH_BROKER the broker is a RedisBroker, built without connecting."""
        from django.test import override_settings

        from spinach.brokers.redis import RedisBroker
        from spinach.contrib.spinachd.conf import get_broker, get_namespace

        with override_settings():
            del settings.SPINACH_BROKER
            del settings.SPINACH_NAMESPACE
            assert isinstance(get_broker(), RedisBroker)
            assert get_namespace() == "spinach"

    def test_failed_store_bounds(self) -> None:
        """SPINACH_KEEP_FAILED and SPINACH_MAX_FAILED default to the engine's defaults,
        and are read as given."""
        from django.test import override_settings

        from spinach.const import DEFAULT_KEEP_FAILED, DEFAULT_MAX_FAILED
        from spinach.contrib.spinachd.conf import get_failed_bounds

        assert get_failed_bounds() == (DEFAULT_KEEP_FAILED, DEFAULT_MAX_FAILED)
        with override_settings(SPINACH_KEEP_FAILED=timedelta(hours=1), SPINACH_MAX_FAILED=None):
            assert get_failed_bounds() == (timedelta(hours=1), None)

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("SPINACH_NAMESPACE", ""),
            ("SPINACH_CLEAR_SESSIONS_PERIODICITY", 3600),
            ("SPINACH_ACTUAL_EMAIL_BACKEND", None),
            ("SPINACH_KEEP_FAILED", 3600),
            ("SPINACH_MAX_FAILED", 0),
        ],
    )
    def test_bad_settings_are_errors_naming_them(self, name: str, value: Any) -> None:
        """A setting of the wrong type raises ImproperlyConfigured naming the setting."""
        from django.test import override_settings

        from spinach.contrib.spinachd import conf

        getters = {
            "SPINACH_NAMESPACE": conf.get_namespace,
            "SPINACH_CLEAR_SESSIONS_PERIODICITY": conf.get_clear_sessions_periodicity,
            "SPINACH_ACTUAL_EMAIL_BACKEND": conf.get_actual_email_backend,
            "SPINACH_KEEP_FAILED": conf.get_failed_bounds,
            "SPINACH_MAX_FAILED": conf.get_failed_bounds,
        }
        with override_settings(**{name: value}), pytest.raises(ImproperlyConfigured, match=name):
            getters[name]()


def broker_is_empty(broker: MemoryBroker) -> bool:
    counts = broker.count_jobs()
    return not counts.queued and not counts.future and not counts.running
