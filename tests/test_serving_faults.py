"""The server as a process: worker kills, SIGTERM, and its OpenAPI contract checked by schemathesis.

Each test runs ``python -m recsys.serve`` on a loopback port against the tiny bundle. Waits are
bounded by generous timeouts; nothing asserts on how fast anything is.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi import HTTPException

from experiments._fault_run import active_workers, spawned_children
from recsys.serving.litserve_adapter import READY, STARTING, ResponseBufferItem
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # end-to-end: servers, processes, fuzzing (make test-fast skips them)

START_TIMEOUT = 120  # a cold start spawns a worker that imports torch and loads the bundle


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    def __init__(self, bundle: Path, tmp: Path, *overrides: str):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"serve_{self.port}.log"
        command = [
            sys.executable,
            "-m",
            "recsys.serve",
            f"bundle={bundle}",
            f"port={self.port}",
            "pin_cpus=false",
            f"hydra.run.dir={tmp / 'hydra'}",
            *overrides,
        ]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_health(200)

    def wait_health(self, status: int, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(f"{self.base}/health", timeout=5).status_code == status:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"/health never answered {status}:\n{self.output()}")

    def worker_pids(self) -> list[int]:
        """The spawned inference workers (children of the main process run by spawn_main)."""
        return spawned_children(self.proc.pid)

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture()
def live(tiny_bundle, tmp_path):
    servers: list[LiveServer] = []

    def start(*overrides: str) -> LiveServer:
        servers.append(LiveServer(tiny_bundle, tmp_path, *overrides))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


class Load:
    """``n`` clients asking for recommendations in a loop; every outcome is recorded."""

    def __init__(self, base: str, user_id: str, n: int = 8):
        self.base, self.user_id = base, user_id
        self.results: list[tuple[float, int | str, dict | None]] = []
        self.health: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._client) for _ in range(n)]
        self.threads.append(threading.Thread(target=self._health))
        for t in self.threads:
            t.start()

    def _client(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                sent = time.monotonic()  # outcomes are keyed by when the request was sent
                try:
                    r = client.get(f"{self.base}/recommend/{self.user_id}")
                    is_json = r.headers.get("content-type", "").startswith("application/json")
                    body = r.json() if is_json else None
                    self.results.append((sent, r.status_code, body))
                except httpx.TransportError as err:
                    self.results.append((sent, type(err).__name__, None))
                    time.sleep(0.05)

    def _health(self) -> None:
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                try:
                    self.health.append((time.monotonic(), client.get(f"{self.base}/health").status_code))
                except httpx.TransportError:
                    self.health.append((time.monotonic(), -1))
                time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(timeout=120)


def _user(tiny_bundle: Path) -> str:
    import pandas as pd

    return str(pd.read_parquet(tiny_bundle / "users.parquet")["user_id"].iat[0])


def test_killed_worker_fails_its_requests_with_503_and_the_server_recovers(live, tiny_bundle):
    """Kill the worker under load until a kill catches it with a request in hand (it may be idle
    between requests at the instant of a kill: its queued requests are then simply served by the
    new worker). Every answer is a 200 or a 503 with a JSON body; the server always recovers."""
    server = live("standby_workers=0")  # the restart path (a standby would answer at once)
    load = Load(server.base, _user(tiny_bundle))
    kills, hit = 0, False
    while not hit and kills < 12:
        old = server.worker_pids()
        assert len(old) == 1
        time.sleep(0.5)
        killed_at = time.monotonic()
        os.kill(old[0], signal.SIGKILL)  # what the kernel's OOM killer does
        kills += 1
        # a request sent right after the kill is queued before the server notices: it must be
        # refused once the server does, not left waiting for the replacement's start
        right_after = httpx.get(f"{server.base}/recommend/{_user(tiny_bundle)}", timeout=60)
        assert right_after.status_code == 503 and right_after.headers["retry-after"] == "1"
        deadline = killed_at + START_TIMEOUT
        while time.monotonic() < deadline and not any(
            t > killed_at and s == 200 for t, s, _ in load.results[-20:]
        ):
            time.sleep(0.05)
        assert any(t > killed_at and s == 200 for t, s, _ in load.results), "never served again"
        hit = any(s == 503 and "while handling" in str(b) for _, s, b in load.results)  # in-flight
        new = server.worker_pids()
        assert len(new) == 1 and new != old
    # the health poller is one thread among nine clients: give it time to record the recovery
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and not (load.health and load.health[-1][1] == 200):
        time.sleep(0.05)
    load.stop()
    statuses = [s for _, s, _ in load.results]
    assert set(statuses) <= {200, 503}, sorted(set(map(str, statuses)))  # no hang, no dropped connection
    failed = [body for _, s, body in load.results if s == 503]
    assert hit and all(isinstance(body, dict) and body.get("detail") for body in failed), kills
    # /health: 200 before a kill, 503 while the new worker loads the bundle, 200 again
    seen = [s for _, s in load.health]
    first_503 = seen.index(503)
    assert 200 in seen[:first_503] and 200 in seen[first_503:], seen[:: max(1, len(seen) // 50)]
    assert server.proc.poll() is None
    print(f"{kills} kill(s): {len(failed)} of {len(statuses)} requests got 503")


def test_a_standby_worker_answers_at_once_when_the_active_one_is_killed(live, tiny_bundle):
    """The default server: one active worker and one standby (serve.standby_workers). Killing the
    active worker under load: the request sent right after the kill is answered 200 well within a
    second, /health never reports 503, every answer is 200 or a 503 with a JSON body (requests the
    dead worker held), and LitServe's replacement becomes the next standby."""
    server = live()
    workers = server.worker_pids()
    assert len(workers) == 2
    deadline = time.monotonic() + START_TIMEOUT
    while len(active := active_workers(server.proc.pid)) != 1 and time.monotonic() < deadline:
        time.sleep(0.1)  # the standby's lock attempt comes after its bundle is loaded
    assert len(active) == 1
    load = Load(server.base, _user(tiny_bundle))
    time.sleep(1.0)
    os.kill(active[0], signal.SIGKILL)
    sent = time.monotonic()
    right_after = httpx.get(f"{server.base}/recommend/{_user(tiny_bundle)}", timeout=60)
    waited = time.monotonic() - sent
    assert right_after.status_code == 200 and waited < 1.0, (right_after.status_code, waited)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and (
        len(server.worker_pids()) != 2 or active[0] in server.worker_pids()
    ):
        time.sleep(0.1)  # LitServe's monitor replaces the dead worker
    time.sleep(1.0)
    load.stop()
    statuses = [s for _, s, _ in load.results]
    assert set(statuses) <= {200, 503}, sorted(set(map(str, statuses)))
    assert all(isinstance(b, dict) and b.get("detail") for _, s, b in load.results if s == 503)
    assert 503 not in [s for _, s in load.health]  # a worker was ready throughout
    assert len(server.worker_pids()) == 2 and active[0] not in server.worker_pids()
    assert len(active_workers(server.proc.pid)) == 1


def test_worker_death_with_restarts_off_exits_nonzero_with_a_message(live):
    server = live("restart_workers=false")
    os.kill(server.worker_pids()[0], signal.SIGKILL)
    assert server.proc.wait(timeout=120) == 1
    out = server.output()
    assert "recsys.serve: stopped: an inference worker died and serve.restart_workers is off" in out
    assert "Traceback" not in out, out


def test_sigterm_drains_in_flight_requests_and_exits_zero(live, tiny_bundle):
    server = live("drain_s=20")
    load = Load(server.base, _user(tiny_bundle), n=4)
    time.sleep(1.0)
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=120) == 0
    load.stop()
    out = server.output()
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.startswith("recsys.serve:")]
    assert len(lines) == 1 and lines[0].startswith("recsys.serve: stopped on SIGTERM"), out
    answered = [s for _, s, _ in load.results if isinstance(s, int)]
    assert answered and set(answered) == {200}  # requests that got in were all answered
    # after the stop, clients only fail to connect (never a 5xx, never a half answer)
    errors = {s for t, s, _ in load.results if not isinstance(s, int)}
    assert errors <= {"ConnectError", "RemoteProtocolError", "ReadError"}, errors
    assert all(t >= signalled for t, s, _ in load.results if not isinstance(s, int))


@pytest.mark.parametrize("admin_token", [None, "schemathesis-token"], ids=["no-admin-token", "admin-token"])
def test_schemathesis_finds_no_contract_violation_in_1000_cases(tiny_bundle, tmp_path, admin_token):
    """The whole API against its OpenAPI document; with an admin token, schemathesis also adds and
    deletes items (on a copy of the bundle) through the token it is given."""
    import shutil

    bundle = shutil.copytree(tiny_bundle, tmp_path / "bundle")
    overrides = [f"admin_token={admin_token}"] if admin_token else []
    auth = ["--header", f"Authorization: Bearer {admin_token}"] if admin_token else []
    server = LiveServer(bundle, tmp_path, *overrides)
    try:
        out = _schemathesis(server, auth, tmp_path)
    finally:
        server.stop()
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-6000:]
    generated = re.search(r"(\d+) generated", report)
    assert generated and int(generated.group(1)) >= 1000, report[-3000:]
    if admin_token:  # it did change the catalog, through the token
        assert "No issues found" in report, report[-3000:]
        assert (bundle / "catalog_changes.json").is_file()
    else:  # without a token the admin routes can only refuse: schemathesis warns about exactly them
        assert "Failures:" not in report and "401 Unauthorized (2 operations)" in report, report[-3000:]
        assert "- DELETE /items/{item_id}" in report and "- POST /items" in report, report[-3000:]
        assert not (bundle / "catalog_changes.json").exists()


def _schemathesis(server: LiveServer, auth: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{server.base}/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "260",
            "--seed",
            "20261202",
            "--request-timeout",
            "30",
            "--no-color",
            *auth,
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )


# ---------------------------------------------------------------------- the mechanism, in-process
class _FakeServer:
    timeout = 30

    def __init__(self, status: dict[str, str]):
        self.workers_setup_status = status


def test_a_request_whose_worker_is_gone_gets_503_and_none_is_submitted_without_a_ready_worker(tiny_bundle):
    import asyncio

    from recsys.serving.api import RecsysSpec

    spec = RecsysSpec(tiny_bundle)
    item = ResponseBufferItem(event=asyncio.Event())
    item.worker_id = 0  # LitServe's START message: worker 0 took the request

    def workers(status: str) -> None:
        spec._server = _FakeServer({"recommend_0": status})
        spec._status_read_at = float("-inf")  # as if the cached states had expired

    now = time.monotonic()
    workers(READY)
    spec._check_waiting(item, deadline=now + 60, submitted=now)  # alive: keep waiting
    workers(STARTING)  # restarted
    with pytest.raises(HTTPException) as err:
        spec._check_waiting(item, deadline=now + 60, submitted=now)
    assert err.value.status_code == 503 and err.value.headers == {"Retry-After": "1"}
    queued = ResponseBufferItem(event=asyncio.Event())  # not taken yet, and no worker ready to take it
    with pytest.raises(HTTPException, match="restarting") as err:
        spec._check_waiting(queued, deadline=now + 60, submitted=now)
    assert err.value.status_code == 503 and err.value.headers == {"Retry-After": "1"}
    workers(READY)  # a ready worker will take it: keep waiting, up to the deadline
    spec._check_waiting(queued, deadline=now + 60, submitted=time.monotonic())
    with pytest.raises(HTTPException, match="in time"):
        spec._check_waiting(queued, deadline=now - 1, submitted=time.monotonic())
    workers(STARTING)
    with pytest.raises(HTTPException) as err:  # no ready worker: refused before it is queued
        asyncio.run(spec._call("item", item_id="x"))
    assert err.value.status_code == 503


def test_a_request_lost_with_a_worker_before_it_was_announced_gets_503_within_the_grace(tiny_bundle):
    """A worker killed between taking a request off the queue and announcing it leaves the request
    unannounced while other workers are ready (a standby, or the replacement): once a worker has been
    seen not ready after the request was queued, it is answered 503 after ORPHAN_GRACE_S, never
    left to the server's timeout; without a death, an unannounced request keeps waiting."""
    import asyncio

    from recsys.serving.api import ORPHAN_GRACE_S, RecsysSpec

    spec = RecsysSpec(tiny_bundle)

    def workers(**status: str) -> None:
        spec._server = _FakeServer(status)
        spec._status_read_at = float("-inf")

    queued = ResponseBufferItem(event=asyncio.Event())
    submitted = time.monotonic() - 2 * ORPHAN_GRACE_S  # queued a while ago
    workers(recommend_0=READY, recommend_1=READY)
    spec._check_waiting(queued, deadline=submitted + 60, submitted=submitted)  # no death: it waits
    workers(recommend_0=STARTING, recommend_1=READY)  # worker 0 died (restarting), the standby is ready
    with pytest.raises(HTTPException, match="queued") as err:
        spec._check_waiting(queued, deadline=submitted + 60, submitted=submitted)
    assert err.value.status_code == 503 and err.value.headers == {"Retry-After": "1"}
    workers(recommend_0=READY, recommend_1=READY)  # replaced already: the death was seen, still 503
    with pytest.raises(HTTPException, match="queued"):
        spec._check_waiting(queued, deadline=submitted + 60, submitted=submitted)
    fresh = time.monotonic()  # queued after the death was seen: waits for the grace first
    workers(recommend_0=STARTING, recommend_1=READY)
    spec._check_waiting(queued, deadline=fresh + 60, submitted=fresh)
    later = time.monotonic() + 1  # queued after the last not-ready sighting: a live queue, it waits
    spec._check_waiting(queued, deadline=later + 60, submitted=later)
