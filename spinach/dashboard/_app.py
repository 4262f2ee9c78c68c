"""The dashboard's WSGI application (see :mod:`spinach.dashboard`).

It reads and steers jobs only through public methods: the engine's
``get_job``, ``failed_jobs``, ``requeue_failed``, ``purge_failed`` and
``cancel``, and the broker's ``inspect``, ``job_activity`` and
``count_jobs``; so it works on any broker.
"""

from __future__ import annotations

import hmac
import io
import json
import secrets
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import redis

from .._jobs_command import on_every_failed
from ..brokers.base import MinuteActivity
from ..exc import SpinachError
from ..job import FINISHED, JobStatus

try:
    import jinja2
    from werkzeug.exceptions import BadRequest, Forbidden, HTTPException, NotFound
    from werkzeug.routing import Map, Rule
    from werkzeug.utils import redirect
    from werkzeug.wrappers import Request, Response
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "The Spinach dashboard needs Werkzeug and Jinja2: pip install 'spinach[dashboard]'"
    ) from e

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from ..engine import Engine

__all__ = ["Dashboard", "django_view"]

#: Failed jobs per page.
PAGE_SIZE = 50
#: The cookie and the form field of the CSRF token (double submit).
CSRF_COOKIE = "spinach_csrf"
CSRF_FIELD = "csrf_token"
#: Statuses of a job that can be cancelled.
_CANCELLABLE = frozenset((JobStatus.WAITING, JobStatus.QUEUED, JobStatus.RUNNING))
#: Size of the activity chart, in SVG units: one bar per minute.
_BAR_WIDTH, _CHART_HEIGHT = 10, 100
#: What a page says after a change, by the ``notice`` of its URL (a link cannot
#: make the page say anything else); ``{n}`` is the URL's ``count``.
NOTICES = {
    "cancelled": "Cancelled.",
    "not-cancelled": "Nothing to cancel: the job had ended.",
    "requeued": "Requeued.",
    "not-requeued": "Nothing to requeue: the job is not in the failed store.",
    "purged": "Purged.",
    "not-purged": "Nothing to purge: the job was not in the failed store.",
    "requeued-n": "Requeued {n} job(s).",
    "purged-n": "Purged {n} job(s).",
}
#: Headers of every page: no framing by other sites, nothing loaded from elsewhere.
_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
}


class Dashboard:
    """The web dashboard of an engine's namespace, as a WSGI application.

    Args:
        engine: whose broker and namespace it shows.
        read_only: show only: no cancel, requeue or purge; a POST answers 403.
        authorize: called with each request (a ``werkzeug.wrappers.Request``);
            when it returns False the request gets 403 and nothing is read.
            For a mounted dashboard, check your application's session or
            headers there.
        refresh: seconds between two reloads of the overview page, 0 for none.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        read_only: bool = False,
        authorize: Callable[[Request], bool] | None = None,
        refresh: int = 10,
    ) -> None:
        if isinstance(refresh, bool) or not isinstance(refresh, int) or refresh < 0:
            raise ValueError(f"refresh must be an int of seconds >= 0, got {refresh!r}")
        self.engine = engine
        self.read_only = read_only
        self._authorize = authorize
        self._refresh = refresh
        self._templates = jinja2.Environment(
            loader=jinja2.PackageLoader("spinach.dashboard", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self._templates.filters["when"] = _when
        self._templates.filters["pretty"] = _pretty
        self._stylesheet = (
            jinja2.PackageLoader("spinach.dashboard", "static")
            .get_source(self._templates, "dashboard.css")[0]
            .encode()
        )
        self._urls = Map(
            [
                Rule("/", endpoint="overview", methods=["GET"]),
                Rule("/jobs", endpoint="find_job", methods=["GET"]),
                Rule("/jobs/<job_id>", endpoint="job", methods=["GET"]),
                Rule("/jobs/<job_id>/cancel", endpoint="cancel", methods=["POST"]),
                Rule("/jobs/<job_id>/requeue", endpoint="requeue_one", methods=["POST"]),
                Rule("/jobs/<job_id>/purge", endpoint="purge_one", methods=["POST"]),
                Rule("/failed", endpoint="failed", methods=["GET"]),
                Rule("/failed/requeue", endpoint="requeue", methods=["POST"]),
                Rule("/failed/purge", endpoint="purge", methods=["POST"]),
                Rule("/static/dashboard.css", endpoint="css", methods=["GET"]),
            ],
            strict_slashes=False,
        )

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        request = Request(environ)
        token = request.cookies.get(CSRF_COOKIE, "")
        if len(token) != 43:  # not one of ours: secrets.token_urlsafe(32)
            token = secrets.token_urlsafe(32)
        response = self._respond(request, token)
        response.headers.update(_HEADERS)
        if request.cookies.get(CSRF_COOKIE) != token:
            response.set_cookie(
                CSRF_COOKIE,
                token,
                path=(request.script_root or "") + "/",
                httponly=True,
                samesite="Strict",
                secure=request.is_secure,
            )
        return response(environ, start_response)

    # -- plumbing -------------------------------------------------------------

    def _respond(self, request: Request, token: str) -> Response:
        try:
            if self._authorize is not None and not self._authorize(request):
                raise Forbidden("The dashboard's authorize hook refused this request.")
            endpoint, values = self._urls.bind_to_environ(request.environ).match()
            if request.method == "POST":
                self._check_post(request)
            page: Callable[..., Response] = getattr(self, f"_{endpoint}")
            return page(request, token, **values)
        except HTTPException as e:
            code = e.code or 500
            return self._render(request, token, "error.html", code, error=e.description)
        except (SpinachError, redis.RedisError, OSError) as e:
            message = (
                f"The broker could not answer ({type(e).__name__}: {e}). Check that it is "
                "reachable, then reload the page."
            )
            return self._render(request, token, "error.html", 503, error=message)

    def _check_post(self, request: Request) -> None:
        if self.read_only:
            raise Forbidden("This dashboard is read-only: it cannot change jobs.")
        # The host only: behind a proxy that ends TLS the scheme differs (the proxy
        # must pass the Host header on, as it does for the application).
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            raise Forbidden(f"A form of another site ({origin}) cannot change jobs here.")
        sent = request.form.get(CSRF_FIELD, "")
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
            raise Forbidden(
                "The form's CSRF token is missing or does not match its cookie: reload "
                "the page and try again."
            )

    def _render(
        self, request: Request, token: str, template: str, status: int = 200, **values: Any
    ) -> Response:
        root = request.script_root or ""
        page = self._templates.get_template(template).render(
            url=lambda path: root + path,
            csrf_field=CSRF_FIELD,
            csrf_token=token,
            read_only=self.read_only,
            namespace=self.engine.namespace,
            notice=_notice(request),
            **values,
        )
        return Response(page, status=status, mimetype="text/html")

    def _back(self, request: Request, path: str, notice: str, count: int = 0) -> Response:
        """See ``path`` again after a change (POST, redirect, GET), saying what was
        done: one of :data:`NOTICES`."""
        query = urlencode({"notice": notice, "count": count} if count else {"notice": notice})
        return redirect(f"{request.script_root or ''}{path}?{query}", 303)

    # -- pages ----------------------------------------------------------------

    def _css(self, request: Request, token: str) -> Response:
        return Response(self._stylesheet, mimetype="text/css")

    def _overview(self, request: Request, token: str) -> Response:
        broker = self.engine.broker
        inspection = broker.inspect()
        now = broker.clock.time()
        activity = broker.job_activity()
        queues = sorted(inspection.queues.items())
        totals = {
            "ready": sum(q.ready for _, q in queues),
            "held back": sum(q.held_back for _, q in queues),
            "future": sum(q.future for _, q in queues),
            "running": sum(q.running for _, q in queues),
            "failed": inspection.failed,
        }
        return self._render(
            request,
            token,
            "overview.html",
            refresh=self._refresh,
            queues=queues,
            totals=totals,
            workers=[(w, max(0.0, now - w.last_heartbeat)) for w in inspection.workers],
            failed_dropped=inspection.failed_dropped,
            latest_failures=self.engine.failed_jobs(5),
            chart=_chart(activity),
            now=datetime.fromtimestamp(now, timezone.utc),
        )

    def _find_job(self, request: Request, token: str) -> Response:
        text = request.args.get("id", "").strip()
        if not text:
            raise BadRequest("Give a job id to look for.")
        return redirect(f"{request.script_root or ''}/jobs/{_job_id(text)}", 303)

    def _job(self, request: Request, token: str, job_id: str) -> Response:
        job_id = _job_id(job_id)
        info = self.engine.get_job(job_id)
        if info is None:
            raise NotFound(
                f"No job {job_id} in namespace {self.engine.namespace!r}: unknown, or it "
                "ended without a kept result or failure."
            )
        return self._render(
            request,
            token,
            "job.html",
            info=info,
            settled=info.status in FINISHED,
            cancellable=info.status in _CANCELLABLE,
        )

    def _cancel(self, request: Request, token: str, job_id: str) -> Response:
        job_id = _job_id(job_id)
        done = self.engine.cancel(job_id)
        return self._back(request, f"/jobs/{job_id}", "cancelled" if done else "not-cancelled")

    def _requeue_one(self, request: Request, token: str, job_id: str) -> Response:
        job_id = _job_id(job_id)
        done = self.engine.requeue_failed([job_id])
        return self._back(request, f"/jobs/{job_id}", "requeued" if done else "not-requeued")

    def _purge_one(self, request: Request, token: str, job_id: str) -> Response:
        done = self.engine.purge_failed([_job_id(job_id)])
        return self._back(request, "/failed", "purged" if done else "not-purged")

    def _failed(self, request: Request, token: str) -> Response:
        try:
            page = int(request.args.get("page", "1"))
        except ValueError:
            page = 0
        if page < 1:
            raise BadRequest("The page must be a whole number from 1.")
        total = self.engine.broker.count_jobs().failed
        infos = self.engine.failed_jobs(PAGE_SIZE, (page - 1) * PAGE_SIZE)
        pages = max(1, -(-total // PAGE_SIZE))
        return self._render(
            request, token, "failed.html", infos=infos, page=page, pages=pages, total=total
        )

    def _requeue(self, request: Request, token: str) -> Response:
        return self._on_failed(request, self.engine.requeue_failed, "Requeued")

    def _purge(self, request: Request, token: str) -> Response:
        return self._on_failed(request, self.engine.purge_failed, "Purged")

    def _on_failed(
        self, request: Request, operate: Callable[[list[str]], int], done: str
    ) -> Response:
        job_ids = [_job_id(text) for text in request.form.getlist("job_id")]
        every = request.form.get("all") == "1"
        if every:
            total = self.engine.broker.count_jobs().failed
            count = on_every_failed(self.engine.failed_jobs, operate, lambda _: None, total)
        elif job_ids:
            count = operate(job_ids)
        else:
            raise BadRequest("Tick the jobs to act on, or choose all of them.")
        return self._back(request, "/failed", f"{done.lower()}-n", count)


def _job_id(text: str) -> str:
    """The canonical text of a job id from a URL or a form.

    Raises:
        NotFound: ``text`` is not a job id.
    """
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise NotFound(f"{text!r} is not a job id (a UUID such as {uuid.UUID(int=0)}).") from None


def _notice(request: Request) -> str:
    """What the page says after a change: one of :data:`NOTICES`, or nothing."""
    notice = NOTICES.get(request.args.get("notice", ""), "")
    count = request.args.get("count", "0")
    return notice.format(n=int(count)) if count.isdigit() else ""


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=repr)


def _chart(activity: list[MinuteActivity]) -> dict[str, Any]:
    """The bars of the activity chart: one per minute, started over failed."""
    top = max([1, *(m.started for m in activity), *(m.failed for m in activity)])
    bars = []
    for i, minute in enumerate(activity):
        started = round(minute.started / top * _CHART_HEIGHT, 1)
        failed = round(minute.failed / top * _CHART_HEIGHT, 1)
        bars.append(
            {
                "x": i * _BAR_WIDTH,
                "started": started,
                "failed": failed,
                "label": (
                    f"{datetime.fromtimestamp(minute.at, timezone.utc):%H:%M} UTC: "
                    f"{minute.started} started, {minute.failed} failed"
                ),
            }
        )
    return {
        "bars": bars,
        "top": top,
        "width": len(activity) * _BAR_WIDTH,
        "height": _CHART_HEIGHT,
        "bar": _BAR_WIDTH - 2,
        "started": sum(m.started for m in activity),
        "failed": sum(m.failed for m in activity),
    }


def django_view(dashboard: Dashboard) -> Callable[..., Any]:
    """A Django view serving ``dashboard`` under a URL pattern that captures
    the rest of the path as ``path``::

        re_path(r"^spinach/(?P<path>.*)$", django_view(Dashboard(spin)))

    Django's own CSRF check is left out for it (the dashboard has its own);
    wrap the view (``staff_member_required(django_view(...))``) to restrict it.
    """
    from django.http import HttpRequest, HttpResponse
    from django.views.decorators.csrf import csrf_exempt

    @csrf_exempt
    def view(request: HttpRequest, path: str = "") -> HttpResponse:
        body = request.body
        environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "SERVER_NAME": "localhost",
            "SERVER_PORT": "80",
            **{k: v for k, v in request.META.items() if isinstance(v, str)},
        }
        # What Django made of them: the scheme by SECURE_PROXY_SSL_HEADER, the host
        # by USE_X_FORWARDED_HOST; paths as WSGI has them (UTF-8 bytes as latin-1).
        environ["wsgi.url_scheme"] = request.scheme or "http"
        environ["HTTP_HOST"] = request.get_host()
        script_name = request.path[: len(request.path) - len(path)].rstrip("/")
        environ["SCRIPT_NAME"] = script_name.encode().decode("latin-1")
        environ["PATH_INFO"] = ("/" + path).encode().decode("latin-1")
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        answer: dict[str, Any] = {}

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Any:
            answer["status"], answer["headers"] = status, headers
            return lambda data: None

        chunks = dashboard(environ, start_response)
        try:
            content = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        response = HttpResponse(content, status=int(answer["status"].split(" ", 1)[0]))
        for name, value in answer["headers"]:
            if name.lower() == "set-cookie":
                response.cookies.load(value)  # Django sends its cookies apart
            else:
                response[name] = value
        return response

    return view
