"""Every LitServe internal recsys relies on, in one module.

LitServe's public API registers one POST route per ``LitAPI`` and owns the process lifecycle; our
contract needs GET routes with path parameters, prompt 503s while no worker can answer, and a
bounded drain on SIGTERM. Those need a few of its internals: the request queue and response
buffer a route submits through, the workers' setup states, the error-response decoding, three
``LitServer`` methods the lifecycle hooks into, and its one-request worker loop (which a standby
worker enters late). They are named here and nowhere else, LitServe is
pinned to the tested minor version (pyproject.toml), and ``tests/test_litserve_adapter.py`` checks
each one, so an upgrade that moves one fails in CI rather than in production.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import litserve as ls
import litserve.server as litserve_server
from litserve.loops.simple_loops import SingleLoop
from litserve.server import RegularRequestHandler
from litserve.specs.base import LitSpec
from litserve.utils import LitAPIStatus, ResponseBufferItem, WorkerSetupStatus, wrap_litserve_start

MONITOR_THREAD = "litserve-monitoring"  # the name of LitServe's worker-monitor thread
READY = WorkerSetupStatus.READY
STARTING = WorkerSetupStatus.STARTING

__all__ = [
    "MONITOR_THREAD",
    "READY",
    "STARTING",
    "AdaptedLitServer",
    "LateStartLoop",
    "LitSpec",
    "ResponseBufferItem",
    "api_key_required",
    "discard",
    "in_process",
    "reply",
    "submit",
    "taken_by",
    "worker_key",
    "worker_states",
]


class LateStartLoop(SingleLoop):
    """LitServe's one-request worker loop, entered only once ``lit_api.before_serving()`` returns.

    LitServe marks a worker ready when its ``setup`` returns and then runs this loop, which reads
    the request queue. A standby worker loads its bundle in ``setup`` (ready, as LitServe's own
    ``/livez`` expects of every worker) and waits in ``before_serving`` without taking requests."""

    def __call__(self, lit_api: Any, *args: Any, **kwargs: Any) -> Any:
        lit_api.before_serving()
        return super().__call__(lit_api, *args, **kwargs)


def in_process(server: ls.LitServer) -> Any:
    """A context manager running ``server``'s workers for an in-process ``TestClient`` on
    ``server.app`` (LitServe's test helper)."""
    return wrap_litserve_start(server)


def api_key_required() -> bool:
    """Whether LitServe checks an ``X-API-Key`` header (``LIT_SERVER_API_KEY``, read at its import)."""
    return bool(litserve_server.LIT_SERVER_API_KEY)


def worker_key(spec: LitSpec, worker_id: int) -> str:
    """The key of a worker's setup state: ``<last segment of the API path>_<worker id>``."""
    return f"{spec.api_path.split('/')[-1]}_{worker_id}"


def worker_states(server: Any) -> dict[str, str]:
    """Every inference worker's setup state (a copy of LitServe's shared dict; empty before start)."""
    states = getattr(server, "workers_setup_status", None) if server is not None else None
    return dict(states) if states else {}


def submit(spec: LitSpec, payload: dict[str, Any], event: Any) -> tuple[str, ResponseBufferItem]:
    """Queue ``payload`` for the inference workers the way LitServe's request handler does; the
    reply lands in the returned item (``event`` is set then)."""
    uid = str(uuid.uuid4())
    item = ResponseBufferItem(event=event)
    spec.response_buffer[uid] = item  # before the put: a fast reply is never lost
    spec.request_queue.put((spec.response_queue_id, uid, time.monotonic(), payload))
    return uid, item


def discard(spec: LitSpec, uid: str) -> None:
    spec.response_buffer.pop(uid, None)


def taken_by(item: ResponseBufferItem) -> int | None:
    """The worker that took the request (LitServe's START message), or None while it is queued."""
    return item.worker_id


def reply(item: ResponseBufferItem) -> Any:
    """The worker's answer; a worker-side error is re-raised as the HTTPException it carried (500
    for anything else)."""
    response, status = item.response
    if status == LitAPIStatus.ERROR:
        RegularRequestHandler._handle_error_response(response)
    return response


class AdaptedLitServer(ls.LitServer):
    """``LitServer`` with its lifecycle internals behind named hooks, for subclasses to override:

    - ``manager_started(start)``: wraps the start of the queue-manager process (``start()`` starts it);
    - ``before_http_start()`` / ``http_started(workers)``: around the start of the HTTP processes;
    - ``worker_died()``: called from LitServe's monitor thread when a worker died with restarts off;
    - ``shutdown(finish, http_workers)``: the main thread's shutdown; ``finish(running)`` runs
      LitServe's own with the HTTP processes still to stop.
    """

    def __init__(self, *args: Any, monitor_s: float, graceful_s: float, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.monitor_internal = monitor_s  # (sic: LitServe's attribute name) its monitor's period
        self.uvicorn_graceful_timeout = graceful_s  # uvicorn's bound on finishing open requests

    # ------------------------------------------------------------- hooks (LitServe's behaviour)
    def manager_started(self, start: Callable[[], Any]) -> Any:
        return start()

    def before_http_start(self) -> None:
        pass

    def http_started(self, http_workers: dict[Any, Any]) -> None:
        pass

    def worker_died(self) -> None:
        self.stop_event.set()

    def shutdown(self, finish: Callable[[dict[Any, Any]], None], http_workers: dict[Any, Any]) -> None:
        finish(http_workers)

    # ------------------------------------------------------------- LitServe's internals
    @property
    def stop_event(self) -> Any:
        """Set to make ``run`` return (LitServe's shutdown event, a manager Event)."""
        return self._shutdown_event

    @property
    def workers(self) -> list[Any]:
        """The inference worker processes (the monitor replaces dead ones in place)."""
        return list(self.inference_workers)

    def _init_manager(self, *args: Any, **kwargs: Any):
        return self.manager_started(lambda: super(AdaptedLitServer, self)._init_manager(*args, **kwargs))

    def _start_server(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        self.before_http_start()
        http_workers = super()._start_server(*args, **kwargs)
        self.http_started(http_workers)
        return http_workers

    def _perform_graceful_shutdown(self, manager, uvicorn_workers, shutdown_reason: str = "normal") -> None:
        if threading.current_thread() is not threading.main_thread():  # the monitor thread
            self.worker_died()
            return

        def finish(running: dict[Any, Any]) -> None:
            super(AdaptedLitServer, self)._perform_graceful_shutdown(manager, running, shutdown_reason)

        self.shutdown(finish, uvicorn_workers)
