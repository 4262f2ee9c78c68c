"""Secure connections for real: TLS, passwords and the documented ACL user.

The tests start their own ``redis-server`` with a TLS port and a throwaway
certificate authority (``trustme``); ``SPINACH_TEST_REDIS_URL`` does not apply.
The ACL lines come from ``docs/production.md``, so that the documented user is
the tested one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import shutil
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import redis
import trustme

from spinach import Tasks
from spinach.brokers.base import JobCounts
from spinach.brokers.redis import RedisBroker
from spinach.brokers.redis.scripts import lua_dir
from spinach.exc import BrokerConnectionError
from spinach.task import RetryException
from spinach.testing import wait_for
from spinach.testing.redis_server import RedisServer, free_port

from .conftest import make_engine

try:
    from redis.driver_info import DriverInfo  # noqa: F401
except ImportError:  # an older redis-py: no DriverInfo yet
    _NO_CLIENT_SETINFO: dict[str, Any] = {"lib_name": None, "lib_version": None}
else:
    _NO_CLIENT_SETINFO = {"driver_info": None}

_PRODUCTION_DOC = Path(__file__).resolve().parents[2] / "docs" / "production.md"
#: Placeholders of the documented ACL lines.
_DOC_USER, _DOC_NAMESPACE = "spinach", "myapp"
_DOC_PASSWORD, _DOC_PASSWORD_HASH = "LONG-RANDOM-PASSWORD", "SHA256-OF-THE-PASSWORD"


def _require_redis_server(why: str = "") -> None:
    """Skip (fail in CI) when there is no usable redis-server, saying why."""
    if not why and shutil.which("redis-server") is not None:
        return
    message = why or "redis-server is not installed: install it to run the TLS and ACL tests"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


# -- certificates and servers --------------------------------------------------


@attrs.frozen
class Certificates:
    """PEM files of a throwaway CA, a server certificate it signed, and a client one."""

    ca: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str
    #: a CA that signed nothing the server uses
    other_ca: str


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("certificates")
    # ECDSA keys: RSA ones take seconds to generate.
    ca = trustme.CA(key_type=trustme.KeyType.ECDSA)
    # For localhost only, so that a URL with 127.0.0.1 shows a host name mismatch.
    server = ca.issue_cert("localhost", key_type=trustme.KeyType.ECDSA)
    client = ca.issue_cert("spinach-worker", key_type=trustme.KeyType.ECDSA)
    files = Certificates(
        *(
            str(directory / name)
            for name in (
                "ca.pem",
                "server.crt",
                "server.key",
                "client.crt",
                "client.key",
                "other.pem",
            )
        )
    )
    ca.cert_pem.write_to_path(files.ca)
    server.cert_chain_pems[0].write_to_path(files.server_cert)
    server.private_key_pem.write_to_path(files.server_key)
    client.cert_chain_pems[0].write_to_path(files.client_cert)
    client.private_key_pem.write_to_path(files.client_key)
    trustme.CA(key_type=trustme.KeyType.ECDSA).cert_pem.write_to_path(files.other_ca)
    return files


def _start_tls_server(
    directory: Path, certificates: Certificates, *options: str
) -> tuple[RedisServer, int]:
    """A server with a TLS port, plus a plain loopback port for its readiness ping."""
    _require_redis_server()
    server = RedisServer(str(directory))
    tls_port = free_port()
    while tls_port == server.port:
        tls_port = free_port()
    try:
        server.start(
            "--tls-port", str(tls_port),
            "--tls-cert-file", certificates.server_cert,
            "--tls-key-file", certificates.server_key,
            "--tls-ca-cert-file", certificates.ca,
            *options,
        )  # fmt: skip
    except RuntimeError:
        server.stop()
        _require_redis_server(
            "redis-server did not start with --tls-port: is it built with TLS (BUILD_TLS=yes)?"
        )
    return server, tls_port


@attrs.frozen
class TlsRedis:
    """A running redis-server with TLS and a password for its default user."""

    server: RedisServer
    tls_port: int
    password: str
    certificates: Certificates

    def admin(self) -> redis.Redis:
        """A client of the default user, over the plain loopback port."""
        return redis.Redis(port=self.server.port, password=self.password)

    def url(self, user: str = "", password: str | None = None, host: str = "localhost") -> str:
        password = self.password if password is None else password
        return f"rediss://{user}:{password}@{host}:{self.tls_port}/0"


@pytest.fixture(scope="module")
def tls_redis(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[TlsRedis]:
    password = secrets.token_hex(16)
    server, tls_port = _start_tls_server(
        tmp_path_factory.mktemp("redis-tls"), certificates, "--tls-auth-clients", "no"
    )
    try:
        # Set once the server answers: RedisServer's readiness ping, refused without a
        # password, is retried by redis-py for seconds.
        setup = redis.Redis(port=server.port)
        setup.config_set("requirepass", password)
        setup.close()
        yield TlsRedis(server, tls_port, password, certificates)
    finally:
        server.stop()


@pytest.fixture
def admin(tls_redis: TlsRedis) -> Iterator[redis.Redis]:
    client = tls_redis.admin()
    yield client
    client.close()


# -- TLS -----------------------------------------------------------------------


def test_jobs_run_over_tls(
    tls_redis: TlsRedis, namespace: str, from_url: Callable[..., RedisBroker]
) -> None:
    """Jobs scheduled over rediss://, trusting the server's CA with ssl_ca_certs, run once each."""
    runs: list[Any] = []
    broker = from_url(tls_redis.url(), ssl_ca_certs=tls_redis.certificates.ca)
    engine = make_engine(broker, namespace, runs)
    for i in range(20):
        engine.schedule("record", i)
    engine.start_workers(number=4, stop_when_queue_empty=True)
    assert sorted(runs) == list(range(20))
    broker.flush()


def test_idle_engine_is_notified_over_tls(
    tls_redis: TlsRedis,
    admin: redis.Redis,
    namespace: str,
    from_url: Callable[..., RedisBroker],
) -> None:
    """An idle engine's listener subscribes over TLS, and its workers run a job scheduled later."""
    runs: list[Any] = []
    broker = from_url(tls_redis.url(), ssl_ca_certs=tls_redis.certificates.ca)
    engine = make_engine(broker, namespace, runs)
    channel = f"spinach:{{{namespace}}}:events"
    engine.start_workers(number=2, block=False)
    try:
        wait_for(lambda: admin.pubsub_numsub(channel) == [(channel.encode(), 1)])
        engine.schedule("record", 1)
        wait_for(lambda: runs == [1])
    finally:
        engine.stop_workers()
    broker.flush()


@pytest.mark.parametrize(
    ("host", "ca", "says"),
    [
        ("localhost", None, "certificate verify failed"),
        ("localhost", "other_ca", "certificate verify failed"),
        ("127.0.0.1", "ca", "IP address mismatch"),
    ],
    ids=["system-cas", "another-ca", "wrong-host"],
)
def test_untrusted_certificate_fails_scheduling(
    tls_redis: TlsRedis,
    namespace: str,
    from_url: Callable[..., RedisBroker],
    host: str,
    ca: str | None,
    says: str,
) -> None:
    """Scheduling against a certificate the client cannot trust fails, naming the TLS error."""
    trust = {} if ca is None else {"ssl_ca_certs": getattr(tls_redis.certificates, ca)}
    broker = from_url(tls_redis.url(host=host), enqueue_job_max_retries=0, **trust)
    engine = make_engine(broker, namespace, [])
    with pytest.raises(BrokerConnectionError, match="CERTIFICATE_VERIFY_FAILED") as info:
        engine.schedule("record", 1)
    assert says in str(info.value)
    assert isinstance(info.value.__cause__, redis.ConnectionError)


def test_untrusted_certificate_fails_start_workers(
    tls_redis: TlsRedis, namespace: str, from_url: Callable[..., RedisBroker]
) -> None:
    """Starting workers against an untrusted certificate fails at once, pointing at the CA."""
    engine = make_engine(from_url(tls_redis.url()), namespace, [])
    with pytest.raises(BrokerConnectionError, match=r"certificate verify failed.*ssl_ca_certs"):
        engine.start_workers(number=1, stop_when_queue_empty=True)


def test_untrusted_certificate_is_reported_at_once(
    tls_redis: TlsRedis,
    namespace: str,
    from_url: Callable[..., RedisBroker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An untrusted certificate is a setup error: scheduling raises at once, pointing at the CA."""
    broker = from_url(tls_redis.url(), enqueue_job_max_retries=1)
    engine = make_engine(broker, namespace, [])
    with caplog.at_level(logging.WARNING, "spinach"), pytest.raises(BrokerConnectionError) as info:
        engine.schedule("record", 1)
    assert "ssl_ca_certs" in str(info.value)
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]


def test_client_certificate(
    tmp_path: Path,
    certificates: Certificates,
    namespace: str,
    from_url: Callable[..., RedisBroker],
) -> None:
    """A server requiring client certificates refuses a client without one, and runs jobs with."""
    server, tls_port = _start_tls_server(tmp_path, certificates, "--tls-auth-clients", "yes")
    try:
        url = f"rediss://localhost:{tls_port}/0"
        without = from_url(url, ssl_ca_certs=certificates.ca, enqueue_job_max_retries=0)
        with pytest.raises(BrokerConnectionError):
            make_engine(without, namespace, []).schedule("record", 1)
        runs: list[Any] = []
        broker = from_url(
            url,
            ssl_ca_certs=certificates.ca,
            ssl_certfile=certificates.client_cert,
            ssl_keyfile=certificates.client_key,
        )
        engine = make_engine(broker, namespace, runs)
        engine.schedule("record", 1)
        engine.start_workers(number=1, stop_when_queue_empty=True)
        assert runs == [1]
    finally:
        server.stop()


# -- passwords -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "password", "says"),
    [
        ("", "wrong", "invalid username-password pair"),
        ("", "", "Authentication required"),
        ("nobody", "wrong", "invalid username-password pair"),
    ],
    ids=["wrong-password", "no-password", "unknown-user"],
)
def test_bad_credentials_fail_scheduling_at_once(
    tls_redis: TlsRedis,
    namespace: str,
    from_url: Callable[..., RedisBroker],
    caplog: pytest.LogCaptureFixture,
    user: str,
    password: str,
    says: str,
) -> None:
    """Bad credentials make scheduling raise BrokerConnectionError at once, saying what to check."""
    broker = from_url(tls_redis.url(user, password), ssl_ca_certs=tls_redis.certificates.ca)
    engine = make_engine(broker, namespace, [])
    bad_credentials = pytest.raises(BrokerConnectionError, match="Check the user and password")
    with caplog.at_level(logging.WARNING, "spinach"), bad_credentials as info:
        engine.schedule("record", 1)
    assert says in str(info.value)
    assert isinstance(info.value.__cause__, redis.AuthenticationError)
    assert not [r for r in caplog.records if "unreachable" in r.getMessage()]


def test_wrong_password_fails_start_workers(
    tls_redis: TlsRedis, namespace: str, from_url: Callable[..., RedisBroker]
) -> None:
    """Starting workers with a wrong password fails at once, saying to check the password."""
    broker = from_url(tls_redis.url("", "wrong"), ssl_ca_certs=tls_redis.certificates.ca)
    engine = make_engine(broker, namespace, [])
    with pytest.raises(BrokerConnectionError, match=r"username-password.*user and password"):
        engine.start_workers(number=1, stop_when_queue_empty=True)


# -- the documented ACL user ---------------------------------------------------


def _documented_rules(prefix: str) -> list[str]:
    """The rules of the one line of the production docs starting with ``prefix``."""
    lines = [
        line.split()
        for line in _PRODUCTION_DOC.read_text(encoding="utf-8").splitlines()
        if line.startswith(f"{prefix} {_DOC_USER} ")
    ]
    assert len(lines) == 1, f"expected one {prefix!r} line in {_PRODUCTION_DOC}"
    return lines[0][len(prefix.split()) + 1 :]


def _rules_for(rules: list[str], namespace: str, password: str) -> list[str]:
    """Documented rules with the test's namespace and password in place of the placeholders."""
    hashed = hashlib.sha256(password.encode()).hexdigest()
    return [
        rule.replace(f"{{{_DOC_NAMESPACE}}}", f"{{{namespace}}}")
        .replace(_DOC_PASSWORD_HASH, hashed)
        .replace(_DOC_PASSWORD, password)
        for rule in rules
    ]


@attrs.frozen
class AclUser:
    name: str
    password: str


@pytest.fixture
def acl_user(admin: redis.Redis, namespace: str) -> Iterator[AclUser]:
    """The user of the documented ACL SETUSER line, for this test's namespace."""
    user = AclUser(f"{_DOC_USER}-{namespace}", secrets.token_hex(16))
    rules = _rules_for(_documented_rules("ACL SETUSER"), namespace, user.password)
    admin.execute_command("ACL", "SETUSER", user.name, *rules)
    yield user
    admin.execute_command("ACL", "DELUSER", user.name)


def _denials(admin: redis.Redis, user: str) -> list[dict[bytes, Any]]:
    """The entries of ACL LOG about commands, keys or channels refused to ``user``."""
    return [e for e in admin.execute_command("ACL", "LOG") if e[b"username"] == user.encode()]


def test_documented_acl_allows_every_command_of_the_scripts() -> None:
    """Every command that a Lua script of the broker calls is allowed by the documented ACL."""
    allowed = {rule[1:] for rule in _documented_rules("ACL SETUSER") if rule.startswith("+")}
    called = {
        command.lower()
        for script in lua_dir().rglob("*.lua")
        for command in re.findall(
            r"redis\.p?call\(\s*[\"'](\w+)[\"']", script.read_text(encoding="utf-8")
        )
    }
    assert called, f"found no redis.call in {lua_dir()}"
    assert called - allowed == set()


def test_documented_acl_lines_carry_the_same_rules() -> None:
    """The documented ACL file line grants what the ACL SETUSER line grants."""
    setuser = _documented_rules("ACL SETUSER")
    file_line = _documented_rules("user")
    assert f"#{_DOC_PASSWORD_HASH}" in file_line
    assert [r for r in setuser if r not in ("resetpass", f">{_DOC_PASSWORD}")] == [
        r for r in file_line if r != f"#{_DOC_PASSWORD_HASH}"
    ]


class Concurrency:
    """The most calls of a function running at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._now = 0
        self.most = 0

    def __enter__(self) -> None:
        with self._lock:
            self._now += 1
            self.most = max(self.most, self._now)

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._now -= 1


def test_engine_runs_under_the_documented_acl_user(
    tls_redis: TlsRedis,
    admin: redis.Redis,
    acl_user: AclUser,
    namespace: str,
    from_url: Callable[..., RedisBroker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Under the documented ACL user, over TLS, every broker operation runs; nothing is refused."""
    # The broker must load its scripts itself (SCRIPT LOAD), as after a Redis restart.
    admin.script_flush()
    admin.execute_command("ACL", "LOG", "RESET")
    url = tls_redis.url(acl_user.name, acl_user.password)
    ca = tls_redis.certificates.ca
    # A tiny interval makes redis-py send its health-check PING before almost every command.
    # redis-py 8.2 sends its two CLIENT SETINFO of a new connection before reading their
    # replies; such a PING can go out between them and read the error a Redis before 7.2
    # gives SETINFO. Without SETINFO (a cosmetic label), each PING reads its own reply.
    broker = from_url(url, ssl_ca_certs=ca, health_check_interval=0.001, **_NO_CLIENT_SETINFO)
    runs: list[Any] = []
    ticks: list[int] = []
    flaky_runs: list[int] = []
    limited_at_once = Concurrency()

    def tick() -> None:
        ticks.append(1)

    def limited(i: int) -> None:
        with limited_at_once:
            runs.append(i)

    def flaky() -> None:
        flaky_runs.append(1)
        if len(flaky_runs) == 1:
            raise RetryException("once more", at=broker.now() + timedelta(seconds=0.2))
        runs.append("flaky")

    engine = make_engine(broker, namespace, runs)
    tasks = Tasks()
    tasks.add(tick, "tick", periodicity=timedelta(seconds=1))
    tasks.add(limited, "limited", max_retries=1, max_concurrency=1)
    tasks.add(flaky, "flaky", max_retries=2)
    engine.attach_tasks(tasks)

    # A worker that fetches a job and dies: the engine must adopt that job.
    orphan = engine.schedule("record", "orphan")
    dead = from_url(url, ssl_ca_certs=ca)
    dead.namespace = namespace
    assert [job.id for job in dead.get_jobs_from_queue("spinach", 1)] == [orphan.id]
    for i in range(5):
        engine.schedule("record", i)
        engine.schedule("limited", 10 + i)
    engine.schedule("flaky")
    engine.schedule_at("record", broker.now() + timedelta(seconds=0.3), "future")
    expected = ["orphan", 0, 1, 2, 3, 4, 10, 11, 12, 13, 14, "flaky", "future"]

    with caplog.at_level(logging.WARNING, "spinach"):
        engine.start_workers(number=4, block=False)
        try:
            wait_for(lambda: ticks and Counter(runs) == Counter(expected), timeout=20)
            assert broker.worker_id in [worker.id for worker in broker.inspect().workers]
        finally:
            engine.stop_workers()

    assert limited_at_once.most == 1
    counts = broker.count_jobs()
    assert (counts.future, counts.running) == (0, 0)  # a periodic job may just have been queued
    broker.flush()
    assert broker.count_jobs() == JobCounts(queued={}, future=0, running=0)
    assert _denials(admin, acl_user.name) == []
    problems = [
        r for r in caplog.records if r.levelno >= logging.ERROR or r.name != "spinach.worker"
    ]
    assert problems == []


def test_acl_user_cannot_reach_another_namespace(
    tls_redis: TlsRedis,
    admin: redis.Redis,
    acl_user: AclUser,
    namespace: str,
    from_url: Callable[..., RedisBroker],
) -> None:
    """The documented user is refused other namespaces' keys and channel, and other commands."""
    url = tls_redis.url(acl_user.name, acl_user.password)
    broker = from_url(url, ssl_ca_certs=tls_redis.certificates.ca)
    client = broker.redis
    # A namespace whose name starts with this one's is another namespace all the same.
    other = f"{namespace}-other"
    with pytest.raises(redis.exceptions.NoPermissionError, match="access one of the keys"):
        client.hget(f"spinach:{{{other}}}:payloads", "x")
    with pytest.raises(redis.exceptions.NoPermissionError, match="access one of the channels"):
        client.publish(f"spinach:{{{other}}}:events", "ready")
    with pytest.raises(redis.exceptions.NoPermissionError, match="'keys' command"):
        client.keys(f"spinach:{{{namespace}}}:*")
    with pytest.raises(redis.exceptions.NoPermissionError, match="'flushall' command"):
        client.flushall()
    with pytest.raises(redis.exceptions.NoPermissionError, match="access one of the keys"):
        make_engine(from_url(url, ssl_ca_certs=tls_redis.certificates.ca), other, []).schedule(
            "record", 1
        )
    assert admin.keys(f"spinach:{{{other}}}:*") == []
    # ACL LOG merges the refusals of one kind of the same object.
    assert {(e[b"reason"], e[b"object"]) for e in _denials(admin, acl_user.name)} == {
        (b"key", f"spinach:{{{other}}}:payloads".encode()),
        (b"channel", f"spinach:{{{other}}}:events".encode()),
        (b"command", b"keys"),
        (b"command", b"flushall"),
    }


@pytest.mark.parametrize("where", ["aclfile", "redis.conf"])
def test_documented_acl_file_line_works(
    tmp_path: Path,
    namespace: str,
    from_url: Callable[..., RedisBroker],
    where: str,
) -> None:
    """The documented ``user`` line, read by redis-server at start, gives a user that runs jobs."""
    _require_redis_server()
    password = secrets.token_hex(16)
    rules = _rules_for(_documented_rules("user"), namespace, password)
    line = " ".join(["user", _DOC_USER, *rules])
    if where == "aclfile":
        acl_file = tmp_path / "users.acl"
        acl_file.write_text(f"user default on nopass ~* &* +@all\n{line}\n", encoding="utf-8")
        options = ["--aclfile", str(acl_file)]
    else:
        # Command-line options are redis.conf lines.
        options = ["--user", *line.split()[1:]]
    server = RedisServer(str(tmp_path))
    server.start(*options)
    try:
        runs: list[Any] = []
        url = f"redis://{_DOC_USER}:{password}@127.0.0.1:{server.port}/0"
        engine = make_engine(from_url(url), namespace, runs)
        for i in range(3):
            engine.schedule("record", i)
        engine.start_workers(number=2, stop_when_queue_empty=True)
        assert sorted(runs) == [0, 1, 2]
        admin = redis.Redis(port=server.port)
        assert admin.execute_command("ACL", "LOG") == []
        admin.close()
    finally:
        server.stop()


def test_a_user_without_blpop_still_gets_its_jobs(
    tls_redis: TlsRedis,
    admin: redis.Redis,
    acl_user: AclUser,
    namespace: str,
    from_url: Callable[..., RedisBroker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A user of an ACL line older than the waits for jobs (no +blpop): the
    first wait says what to allow, and workers go on with notifications."""
    admin.execute_command("ACL", "SETUSER", acl_user.name, "-blpop")
    url = tls_redis.url(acl_user.name, acl_user.password)
    ca = tls_redis.certificates.ca
    broker = from_url(url, ssl_ca_certs=ca, **_NO_CLIENT_SETINFO)
    runs: list[Any] = []
    engine = make_engine(broker, namespace, runs)
    engine.start_workers(number=2, block=False)
    try:
        wait_for(lambda: "+blpop" in caplog.text)
        for i in range(3):
            engine.schedule("record", i)
            wait_for(lambda i=i: i in runs)
    finally:
        engine.stop_workers()
        broker.flush()
    assert caplog.text.count("+blpop") == 1
    assert "Error in the engine loop" not in caplog.text
