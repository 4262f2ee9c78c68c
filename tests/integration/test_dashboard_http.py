"""The dashboard over HTTP: its security rules, its command, and the documented
mounting lines of Flask, Django and FastAPI, each in a real framework."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from spinach import Engine, MemoryBroker
from spinach.dashboard import Dashboard

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def engine() -> Engine:
    engine = Engine(MemoryBroker(), "dash")
    engine.task(lambda: None, name="noop")
    return engine


def token_of(client: Client, path: str = "/") -> str:
    """GET a page; the CSRF token of its forms and of the cookie it set."""
    response = client.get(path)
    assert response.status_code == 200, response.text
    cookie = client.get_cookie("spinach_csrf", path=path if path.endswith("/") else "/")
    assert cookie is not None
    return cookie.value


def test_every_change_needs_the_csrf_token_of_its_cookie(engine: Engine) -> None:
    job = engine.schedule("noop")
    client = Client(Dashboard(engine))
    assert client.post(f"/jobs/{job.id}/cancel").status_code == 403
    token = token_of(client)
    wrong = client.post(f"/jobs/{job.id}/cancel", data={"csrf_token": "x" * 43})
    assert wrong.status_code == 403
    assert "CSRF token is missing or does not match" in wrong.text
    foreign = client.post(
        f"/jobs/{job.id}/cancel",
        data={"csrf_token": token},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403
    assert "A form of another site (https://evil.example)" in foreign.text
    assert engine.get_job(job.id).status.name == "QUEUED"  # type: ignore[union-attr]
    # Same host, through a proxy that ends TLS: the scheme differs, the host does not.
    done = client.post(
        f"/jobs/{job.id}/cancel",
        data={"csrf_token": token},
        headers={"Origin": "https://localhost"},
    )
    assert done.status_code == 303
    assert done.headers["Location"] == f"/jobs/{job.id}?notice=cancelled"
    assert engine.get_job(job.id).status.name == "CANCELLED"  # type: ignore[union-attr]
    assert "Cancelled." in client.get(done.headers["Location"]).text


def test_read_only_shows_but_changes_nothing(engine: Engine) -> None:
    job = engine.schedule("noop")
    client = Client(Dashboard(engine, read_only=True))
    page = client.get(f"/jobs/{job.id}")
    assert page.status_code == 200
    assert "Cancel</button>" not in page.text
    token = token_of(client)
    refused = client.post(f"/jobs/{job.id}/cancel", data={"csrf_token": token})
    assert refused.status_code == 403
    assert "read-only" in refused.text
    assert engine.get_job(job.id).status.name == "QUEUED"  # type: ignore[union-attr]


def test_the_authorize_hook_guards_every_page(engine: Engine) -> None:
    seen: list[str] = []

    def authorize(request: Any) -> bool:
        seen.append(request.path)
        return request.headers.get("X-Staff") == "yes"

    client = Client(Dashboard(engine, authorize=authorize))
    assert client.get("/").status_code == 403
    assert client.get("/static/dashboard.css").status_code == 403
    assert client.get("/", headers={"X-Staff": "yes"}).status_code == 200
    assert seen == ["/", "/static/dashboard.css", "/"]


def test_bad_requests_say_what_was_wrong(engine: Engine) -> None:
    client = Client(Dashboard(engine))
    assert "&#39;nope&#39; is not a job id" in client.get("/jobs/nope").text
    unknown = "00000000-0000-4000-8000-000000000000"
    assert f"No job {unknown}" in client.get(f"/jobs/{unknown}").text
    # The search box redirects only to a job's own page.
    found = client.get(f"/jobs?id=+{unknown.upper()}+")
    assert (found.status_code, found.headers["Location"]) == (303, f"/jobs/{unknown}")
    assert client.get("/jobs?id=x%3Fnotice%3Dcancelled").status_code == 404
    assert client.get("/jobs?id=a%0d%0ab").status_code == 404
    assert client.get("/failed?page=0").status_code == 400
    token = token_of(client)
    nothing = client.post("/failed/requeue", data={"csrf_token": token})
    assert nothing.status_code == 400
    assert "Tick the jobs to act on" in nothing.text
    with pytest.raises(ValueError, match="refresh must be"):
        Dashboard(engine, refresh=-1)


def test_mounted_in_flask(engine: Engine) -> None:
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware

    app = Flask(__name__)
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {"/spinach": Dashboard(engine)})  # type: ignore[method-assign]
    job = engine.schedule("noop")
    client = app.test_client()
    page = client.get(f"/spinach/jobs/{job.id}")
    assert page.status_code == 200
    assert f'action="/spinach/jobs/{job.id}/cancel"' in page.text
    cookie = client.get_cookie("spinach_csrf", path="/spinach/")
    assert cookie is not None
    done = client.post(f"/spinach/jobs/{job.id}/cancel", data={"csrf_token": cookie.value})
    assert done.status_code == 303
    assert done.headers["Location"].startswith(f"/spinach/jobs/{job.id}?")
    assert engine.get_job(job.id).status.name == "CANCELLED"  # type: ignore[union-attr]


def test_mounted_in_fastapi(engine: Engine) -> None:
    from a2wsgi import WSGIMiddleware
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()
    app.mount("/spinach", WSGIMiddleware(Dashboard(engine)))  # type: ignore[arg-type]
    job = engine.schedule("noop")
    with TestClient(app) as client:
        page = client.get(f"/spinach/jobs/{job.id}")
        assert page.status_code == 200
        assert f'action="/spinach/jobs/{job.id}/cancel"' in page.text
        token = client.cookies["spinach_csrf"]
        done = client.post(
            f"/spinach/jobs/{job.id}/cancel", data={"csrf_token": token}, follow_redirects=False
        )
        assert done.status_code == 303
    assert engine.get_job(job.id).status.name == "CANCELLED"  # type: ignore[union-attr]


DJANGO_APP = """
import sys

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["testserver"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="not secret",
    INSTALLED_APPS=[],
    MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
)
django.setup()

from django.test import Client
from django.urls import re_path

from spinach import Engine, MemoryBroker
from spinach.dashboard import Dashboard, django_view

spin = Engine(MemoryBroker(), "dash")
spin.task(lambda: None, name="noop")
urlpatterns = [re_path(r"^spinach/(?P<path>.*)$", django_view(Dashboard(spin)))]

client = Client()
job = spin.schedule("noop")
page = client.get(f"/spinach/jobs/{job.id}")
assert page.status_code == 200, page.status_code
assert f'action="/spinach/jobs/{job.id}/cancel"' in page.content.decode()
assert client.get("/spinach/").status_code == 200
assert client.get("/spinach/static/dashboard.css")["Content-Type"].startswith("text/css")
token = client.cookies["spinach_csrf"].value
assert client.get("/spinach/jobs/%E6%97%A5").status_code == 404
done = client.post(
    f"/spinach/jobs/{job.id}/cancel", {"csrf_token": token}, HTTP_ORIGIN="http://testserver"
)
assert done.status_code == 303, done.status_code
assert done["Location"].startswith(f"/spinach/jobs/{job.id}?"), done["Location"]
assert spin.get_job(job.id).status.name == "CANCELLED"
refused = client.post(f"/spinach/jobs/{job.id}/cancel", {"csrf_token": "x" * 43})
assert refused.status_code == 403, refused.status_code
print("mounted")
"""


def test_mounted_in_django(tmp_path: Path) -> None:
    """In a process of its own: Django's settings are set once per process."""
    (tmp_path / "django_dashboard.py").write_text(DJANGO_APP)
    run = subprocess.run(
        [sys.executable, "django_dashboard.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "mounted"


@pytest.fixture
def dashboard_command(
    redis_url: str, namespace: str
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    command = [sys.executable, "-m", "spinach", "dashboard", redis_url, "--port", "0"]
    process = subprocess.Popen(
        [*command, "--namespace", namespace],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # the command prints its address once it listens
        found = re.search(r"on (http://127\.0\.0\.1:\d+/) ", line)
        assert found, (line, process.stderr.read() if process.poll() is not None else "")
        yield found.group(1), process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def test_the_command_serves_on_loopback_and_stops_on_sigterm(
    dashboard_command: tuple[str, subprocess.Popen[str]], namespace: str
) -> None:
    url, process = dashboard_command
    with urllib.request.urlopen(url) as response:
        page = response.read().decode()
    assert f"namespace <b>{namespace}</b>" in page
    form = urllib.parse.urlencode({"csrf_token": "x"}).encode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url + "failed/purge", data=form)
    assert refused.value.code == 403
    refused.value.close()
    process.terminate()
    assert process.wait(timeout=30) == 0


def test_the_command_refuses_an_unusable_target() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "spinach", "dashboard", "http://localhost:6379"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 2
    assert run.stderr.startswith("spinach dashboard: ")
    assert "Traceback" not in run.stderr


def test_pages_escape_what_jobs_hold_and_say_only_known_notices(engine: Engine) -> None:
    engine.task(lambda text: None, name="<b>bold</b>")
    job = engine.schedule("<b>bold</b>", "<script>alert(1)</script>")
    client = Client(Dashboard(engine))
    page = client.get(f"/jobs/{job.id}")
    assert "<script>alert" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in page.text
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert "Call this number" not in client.get("/?notice=Call+this+number").text
    assert "Purged 3 job(s)." in client.get("/failed?notice=purged-n&count=3").text


def test_a_broker_out_of_reach_is_a_clear_page() -> None:
    from spinach import RedisBroker
    from spinach.testing.redis_server import free_port

    broker = RedisBroker.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        page = Client(Dashboard(Engine(broker, "gone"))).get("/")
        assert page.status_code == 503
        assert "The broker could not answer (ConnectionError" in page.text
    finally:
        broker.close()


def test_the_job_page_shows_its_meta(engine: Engine) -> None:
    from spinach import signals

    def tag(namespace: str, job: Any) -> None:
        job.meta["tenant"] = "<i>acme</i>"

    signals.job_scheduling.connect(tag, sender=engine.namespace, weak=False)
    try:
        job = engine.schedule("noop")
    finally:
        signals.job_scheduling.disconnect(tag, sender=engine.namespace)
    page = Client(Dashboard(engine)).get(f"/jobs/{job.id}")
    assert '<dl class="fields" id="meta">' in page.text
    assert "<dt>tenant</dt>" in page.text
    assert "&lt;i&gt;acme&lt;/i&gt;" in page.text
