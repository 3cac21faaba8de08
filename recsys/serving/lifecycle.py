"""The serving process's life: clean stops on SIGTERM/SIGINT, and worker failures made explicit.

LitServe 0.2.19 leaves three gaps this closes:

- **SIGTERM** ends the main process at once (no handler), and its own shutdown closes the
  worker transport *before* stopping the HTTP servers, so in-flight requests could never finish.
  Here a signal first asks each HTTP server process to stop (uvicorn's graceful shutdown: no new
  connections, open requests complete within ``drain_s``), then lets LitServe stop the rest.
- **Ctrl+C** reaches every process of the terminal's group: the multiprocessing manager that
  holds LitServe's queues died of it, and every later manager call raised ``EOFError`` (the
  traceback users saw). The manager ignores SIGINT and SIGTERM, the inference workers SIGINT; the
  main process alone decides, and stops them last. (Under systemd, use ``KillMode=mixed`` so that
  SIGTERM goes to the main process only, as Docker and Kubernetes do.)
- **A dead worker with restarts off** made LitServe shut the manager down from its monitor
  thread while the main thread still waited on it (``EOFError`` again). Here the monitor only
  records the failure and wakes the main thread, which shuts down once and reports it.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from recsys.serving.litserve_adapter import MONITOR_THREAD, AdaptedLitServer

WORKER_MONITOR_S = 0.2  # how often LitServe's monitor checks the inference workers (its default: 2 s)


class RecsysServer(AdaptedLitServer):
    """``LitServer`` with a bounded drain on SIGTERM/SIGINT and one shutdown path."""

    def __init__(self, *args: Any, drain_s: float = 10.0, **kwargs: Any):
        super().__init__(*args, monitor_s=WORKER_MONITOR_S, graceful_s=float(drain_s), **kwargs)
        self.drain_s = float(drain_s)
        self.failure: str | None = None  # why the server stopped on its own, if it did
        self.stopped_by: str | None = None  # the signal that stopped it, if one did
        self.drain_seconds: float | None = None
        self._http_workers: dict[Any, Any] = {}
        self._main_pid = os.getpid()
        self._shutdown_once = threading.Lock()
        self._shut_down = False

    def outcome(self) -> tuple[int, str]:
        """(exit code, one-line message) once ``run`` has returned."""
        if self.failure:
            return 1, f"stopped: {self.failure}; exiting 1 so a supervisor restarts it"
        if self.stopped_by:
            return 0, f"stopped on {self.stopped_by}; in-flight requests drained in {self.drain_seconds} s"
        return 0, "stopped"

    def manager_started(self, start: Callable[[], Any]) -> Any:
        # the queue manager (a forked child) ignores SIGINT/SIGTERM sent to the whole group (Ctrl+C,
        # systemd's control-group stop): it must outlive the drain; the main shuts it down last
        previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            return start()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def before_http_start(self) -> None:
        self._main_pid = os.getpid()
        for sig in (signal.SIGTERM, signal.SIGINT):  # workers and manager are up: the main decides
            signal.signal(sig, self._on_stop_signal)

    def http_started(self, http_workers: dict[Any, Any]) -> None:
        self._http_workers = http_workers

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        # uvicorn's forked HTTP servers inherit this handler and re-raise the signal once their own
        # graceful shutdown is done: only the main process acts on it
        if os.getpid() != self._main_pid or self.stopped_by is not None:
            return
        self.stopped_by = signal.Signals(signum).name
        # off the main thread: it may be inside a call on the manager's connection right now
        threading.Thread(target=self._drain_and_stop, name="recsys-drain", daemon=True).start()

    def _drain_and_stop(self) -> None:
        started = time.monotonic()
        workers = [w for w in self._http_workers.values() if getattr(w, "pid", None) and w.is_alive()]
        for w in workers:
            os.kill(w.pid, signal.SIGTERM)  # uvicorn: stop accepting, finish open requests
        for w in workers:
            w.join(timeout=max(0.0, started + self.drain_s + 2.0 - time.monotonic()))
        self.drain_seconds = round(time.monotonic() - started, 2)
        self.stop_event.set()

    def worker_died(self) -> None:
        # a worker died and restarts are off: record it and wake the main thread, which shuts
        # down (the manager must outlive the main thread's wait on it)
        self.failure = "an inference worker died and serve.restart_workers is off"
        self.stop_event.set()

    def shutdown(self, finish: Callable[[dict[Any, Any]], None], http_workers: dict[Any, Any]) -> None:
        with self._shutdown_once:
            if self._shut_down:
                return
            self._shut_down = True
        for thread in threading.enumerate():  # the monitor must not restart the workers stopped next
            if thread.name == MONITOR_THREAD:
                thread.join(timeout=2 * WORKER_MONITOR_S + 1)
        for worker in self.workers:  # drained: nothing left to finish, no state to save
            if worker.is_alive():
                worker.kill()
                worker.join(timeout=5)
        finish({k: w for k, w in http_workers.items() if w.is_alive()})  # drained ones are gone
