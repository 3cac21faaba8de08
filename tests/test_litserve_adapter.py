"""One test per LitServe internal that recsys.serving.litserve_adapter relies on: an upgrade that
moves one fails here."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
from importlib.metadata import version
from pathlib import Path

import litserve as ls
import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from litserve.loops.simple_loops import SingleLoop
from litserve.utils import LitAPIStatus

from recsys.serving import litserve_adapter as lsa
from recsys.serving.api import RecsysSpec, build_server
from tests.conftest import REPO_ROOT


@pytest.fixture(scope="module")
def started(tiny_bundle):
    server = build_server(tiny_bundle)
    with lsa.in_process(server) as running, TestClient(running.app) as client:
        deadline = time.monotonic() + 120
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "the worker never became ready"
            time.sleep(0.1)
        yield running, client


def test_the_installed_litserve_is_the_pinned_minor_version():
    pin = re.search(r'"litserve~=(\d+)\.(\d+)\.(\d+)"', (REPO_ROOT / "pyproject.toml").read_text())
    assert pin, "pyproject.toml pins litserve with ~=X.Y.Z"
    installed = tuple(int(x) for x in version("litserve").split(".")[:3])
    major, minor, patch = (int(x) for x in pin.groups())
    assert installed[:2] == (major, minor) and installed[2] >= patch, installed


def test_worker_states_are_keyed_by_worker_key_and_reach_ready(started):
    server, _ = started
    spec = server.litapi_connector.lit_apis[0].spec
    assert isinstance(spec, RecsysSpec)
    states = lsa.worker_states(server)
    assert states == {lsa.worker_key(spec, 0): lsa.READY}
    assert lsa.worker_states(None) == {}


def test_submit_reaches_a_worker_which_takes_it_and_replies(started, tiny_bundle):
    import pandas as pd

    server, client = started
    spec = server.litapi_connector.lit_apis[0].spec
    item_id = str(pd.read_parquet(Path(tiny_bundle) / "items.parquet")["item_id"].iat[0])
    # the spec's queue and buffer live in the HTTP side: submit from a route's event loop
    answers = {}

    async def ask() -> None:
        event = asyncio.Event()
        uid, item = lsa.submit(spec, {"op": "item", "item_id": item_id}, event)
        assert uid in spec.response_buffer and lsa.taken_by(item) is None
        await asyncio.wait_for(event.wait(), timeout=60)
        answers["taken_by"], answers["reply"] = lsa.taken_by(item), lsa.reply(item)
        lsa.discard(spec, uid)
        answers["left"] = uid in spec.response_buffer

    route = "/adapter-probe"

    async def probe() -> dict:
        await ask()
        return {"ok": True}

    server.app.add_api_route(route, probe, methods=["GET"])
    assert client.get(route).json() == {"ok": True}
    assert answers["taken_by"] == 0 and answers["left"] is False
    assert json.loads(answers["reply"])["item_id"] == item_id  # the JSON the worker encoded


@pytest.mark.parametrize(
    "response, status",
    [
        (HTTPException(status_code=404, detail="unknown item_id 'x'"), 404),
        (RuntimeError("boom"), 500),
    ],
)
def test_reply_reraises_a_worker_error_as_its_http_status(response, status):
    item = lsa.ResponseBufferItem(event=None)
    item.response = (response, LitAPIStatus.ERROR)
    with pytest.raises(HTTPException) as err:
        lsa.reply(item)
    assert err.value.status_code == status
    item.response = ({"a": 1}, LitAPIStatus.OK)
    assert lsa.reply(item) == {"a": 1}


def test_api_key_follows_litserves_setting(monkeypatch):
    monkeypatch.setattr(lsa.litserve_server, "LIT_SERVER_API_KEY", None)
    assert lsa.api_key_required() is False
    monkeypatch.setattr(lsa.litserve_server, "LIT_SERVER_API_KEY", "k")
    assert lsa.api_key_required() is True


def test_lifecycle_internals_exist_with_the_signatures_the_hooks_call():
    params = {
        name: list(inspect.signature(getattr(ls.LitServer, name)).parameters)
        for name in ("_init_manager", "_start_server", "_perform_graceful_shutdown")
    }
    assert params["_init_manager"][:2] == ["self", "num_api_servers"]
    assert params["_start_server"][:2] == ["self", "port"]
    assert params["_perform_graceful_shutdown"][:4] == [
        "self",
        "manager",
        "uvicorn_workers",
        "shutdown_reason",
    ]


def test_late_start_loop_waits_for_the_api_before_litserves_loop_reads_a_request(tiny_bundle):
    """The worker loop LitServe calls (lit_api, device, worker_id, request_queue, transport,
    setup states, callbacks) runs ``before_serving`` first, then LitServe's own one-request loop;
    and it is what a recsys worker is built with."""
    base = list(inspect.signature(SingleLoop.__call__).parameters)
    assert base[:8] == [
        "self",
        "lit_api",
        "device",
        "worker_id",
        "request_queue",
        "transport",
        "workers_setup_status",
        "callback_runner",
    ]
    calls = []

    class Api:
        def before_serving(self):
            calls.append("before")

    def run_base(self, lit_api, *args, **kwargs):
        calls.append(("loop", args))

    original = SingleLoop.__call__
    SingleLoop.__call__ = run_base
    try:
        lsa.LateStartLoop()(Api(), "cpu", 0, "queue")
    finally:
        SingleLoop.__call__ = original
    assert calls == ["before", ("loop", ("cpu", 0, "queue"))]
    from recsys.serving.api import RecsysAPI

    assert isinstance(RecsysAPI(tiny_bundle).loop, lsa.LateStartLoop)


def test_the_monitor_reads_its_period_and_thread_name_as_the_adapter_sets_them():
    monitor = inspect.getsource(ls.LitServer._start_worker_monitoring)
    assert "self.monitor_internal" in monitor and f'name="{lsa.MONITOR_THREAD}"' in monitor
    assert "self._perform_graceful_shutdown" in monitor  # what worker_died intercepts
    assert "self.uvicorn_graceful_timeout" in inspect.getsource(ls.LitServer._start_server)


def test_a_started_server_exposes_its_stop_event_and_workers(started):
    server, _ = started
    assert len(server.workers) == 1 and server.workers[0].is_alive()
    assert server.monitor_internal == 0.2 and server.uvicorn_graceful_timeout == server.drain_s
    assert not server.stop_event.is_set()
