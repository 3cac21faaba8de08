"""HTTP API on LitServe: the routes of ARCHITECTURE.md, the model in LitServe's inference workers.

LitServe registers one POST route per LitAPI; our contract also has GET routes with path
parameters. ``RecsysSpec`` (a LitSpec, the mechanism LitServe's own OpenAI spec uses) registers
every route; each handler validates its input with FastAPI/pydantic, then submits a small
``{"op": ...}`` payload to the worker queue exactly like LitServe's request handler, so all model
work runs in ``RecsysAPI`` workers (``setup`` loads the bundle once per worker).
"""

import asyncio
import atexit
import hmac
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import litserve as ls
import orjson
import torch
from fastapi import Depends, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ConfigDict, Field, create_model

from recsys.serving import litserve_adapter as lsa
from recsys.serving.active_slots import ActiveSlots
from recsys.serving.catalog_changes import CatalogChangeLog
from recsys.serving.lifecycle import RecsysServer
from recsys.serving.openapi import AllowedMethods, PlainTextContentType, document_responses
from recsys.serving.schemas import (
    ID,
    MAX_ID_LENGTH,
    MAX_POSTED_HISTORY,
    Health,
    HistoryRecommendations,
    ItemChange,
    ItemInfo,
    NewItem,
    UserHistory,
    UserRecommendations,
)

ADMIN_TOKEN_ENV = "RECSYS_ADMIN_TOKEN"
WORKER_POLL_S = 0.05  # how often a waiting request checks that its worker is still alive
STATUS_TTL_S = 0.02  # worker states are re-read at most this often per HTTP process
# A worker killed between taking a request off the queue and announcing it (LitServe's START
# message) takes the request with it, unseen: a request still unannounced this long after a worker
# was seen not ready is answered 503 (a live queue hands requests out within milliseconds).
ORPHAN_GRACE_S = 0.5


def unavailable(detail: str) -> HTTPException:
    """503 with ``Retry-After``: the server is up but cannot answer this request now."""
    return HTTPException(status_code=503, detail=detail, headers={"Retry-After": "1"})


# One table of operations: the routes submit {"op": name, **arguments}, the workers run OPS[name].
OPS: dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    "user": lambda worker, x: worker.graph.recommend(user_id=x["user_id"], top_k=x["top_k"]),
    "history": lambda worker, x: worker.graph.recommend(history=x["history"], top_k=x["top_k"]),
    "user_history": lambda worker, x: worker.graph.history(x["user_id"], limit=x["limit"]),
    "item": lambda worker, x: worker.graph.item(x["item_id"]),
    "add_item": lambda worker, x: worker.add_item(x),
    "delete_item": lambda worker, x: worker.delete_item(x["item_id"]),
}


def json_response(body: bytes, status_code: int = 200) -> Response:
    return Response(content=body, status_code=status_code, media_type="application/json")


def bundle_summary(bundle_dir: str | Path) -> dict[str, Any]:
    """What /health reports, read from the manifest alone (the front end never loads the model)."""
    manifest = json.loads((Path(bundle_dir) / "manifest.json").read_text())
    return {
        "n_items": manifest["n_items"],
        "n_users": manifest["n_users"],
        "bundle": {
            "path": str(bundle_dir),
            "created_at": manifest.get("created_at"),
            "index": manifest.get("index", {}).get("kind"),
            "ranker": bool(manifest.get("ranker")),
            "embedding_dim": manifest.get("embedding_dim"),
            "max_history": manifest.get("candidates", {}).get("max_history"),
            "recsys": manifest.get("versions", {}).get("recsys"),
        },
    }


class RecsysSpec(lsa.LitSpec):
    def __init__(self, bundle_dir: str | Path, max_top_k: int = 100, admin_token: str | None = None):
        super().__init__()
        self._admin_token = admin_token or None  # front end only: never pickled to workers, never logged
        self.api_path = "/recommend"
        self._status: dict[str, Any] = {}
        self._status_read_at = float("-inf")
        self._unready_seen_at = float("-inf")  # when a worker was last seen not ready (dead, loading)
        self.summary = bundle_summary(bundle_dir)
        self.max_top_k = max_top_k
        top_k = Annotated[int, Query(ge=1, le=max_top_k, description=f"1..{max_top_k}")]
        item_id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
        body = create_model(
            "RecommendRequest",
            __config__=ConfigDict(extra="forbid"),
            history=(
                list[item_id],
                Field(max_length=MAX_POSTED_HISTORY, description="item ids, oldest first"),
            ),
            top_k=(int, Field(10, ge=1, le=max_top_k)),
        )

        async def health() -> Health:
            if not self._ready_workers():  # loading, or every worker restarting after a failure
                return JSONResponse({"status": "loading"}, status_code=503)
            return {"status": "ok", **self.summary}

        # The annotated models document each answer (OpenAPI); the body itself is the JSON the
        # worker encoded, returned as is: FastAPI's re-validation and encoding of a list of ten
        # items cost the HTTP side ~0.1 ms a request, and its schema is checked by schemathesis.
        async def recommend_user(user_id: ID, top_k: top_k = 10) -> UserRecommendations:
            return json_response(await self._call("user", user_id=user_id, top_k=top_k))

        async def recommend_history(request: body) -> HistoryRecommendations:  # type: ignore[valid-type]
            return json_response(await self._call("history", history=request.history, top_k=request.top_k))

        async def user_history(
            user_id: ID, limit: Annotated[int, Query(ge=1, le=MAX_POSTED_HISTORY)] = 50
        ) -> UserHistory:
            return json_response(await self._call("user_history", user_id=user_id, limit=limit))

        async def item(item_id: ID) -> ItemInfo:
            return json_response(await self._call("item", item_id=item_id))

        bearer = HTTPBearer(auto_error=False, description="serve.admin_token (or RECSYS_ADMIN_TOKEN)")

        def admin(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
            # 401 first: a request without credentials is told it needs them, whatever the setting
            if credentials is None or credentials.scheme.lower() != "bearer":
                raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
            if self._admin_token is None:
                raise HTTPException(
                    403, f"catalog changes are disabled: set serve.admin_token or {ADMIN_TOKEN_ENV}"
                )
            # constant time: a wrong token's timing says nothing about the right one
            if not hmac.compare_digest(credentials.credentials.encode(), self._admin_token.encode()):
                raise HTTPException(403, "wrong admin token")

        async def add_item(new: NewItem, _: Annotated[None, Depends(admin)]) -> ItemChange:
            return json_response(await self._call("add_item", **new.model_dump()), status_code=201)

        async def delete_item(item_id: ID, _: Annotated[None, Depends(admin)]) -> None:
            await self._call("delete_item", item_id=item_id)
            return Response(status_code=204)

        self.add_endpoint("/health", health, ["GET"])
        self.add_endpoint("/recommend/{user_id}", recommend_user, ["GET"])
        self.add_endpoint("/recommend", recommend_history, ["POST"])
        self.add_endpoint("/user/{user_id}/history", user_history, ["GET"])
        self.add_endpoint("/items/{item_id}", item, ["GET"])
        self.add_endpoint("/items", add_item, ["POST"])
        self.add_endpoint("/items/{item_id}", delete_item, ["DELETE"])

    def __getstate__(self) -> dict[str, Any]:
        """Workers get a copy of the spec; route handlers are front-end closures, left behind."""
        state = super().__getstate__()
        state["_endpoints"] = []
        state["_admin_token"] = None
        return state

    def _worker_status(self) -> dict[str, Any]:
        """The workers' setup states, re-read from LitServe's shared dict at most every
        ``STATUS_TTL_S`` (one read is a ~0.1 ms round trip to the manager process)."""
        now = time.monotonic()
        if now - self._status_read_at > STATUS_TTL_S:
            self._status, self._status_read_at = lsa.worker_states(self._server), now
            if any(state != lsa.READY for state in self._status.values()):
                self._unready_seen_at = now
        return self._status

    def _ready_workers(self) -> list[str]:
        return [k for k, v in self._worker_status().items() if v == lsa.READY]

    def _check_waiting(self, item: lsa.ResponseBufferItem, deadline: float, submitted: float) -> None:
        """Raise 503 when the worker that took the request (LitServe reports which) is gone, when
        the request is still queued and no worker is ready to take it (it would wait for the
        replacement's whole start), or when it is still unannounced ``ORPHAN_GRACE_S`` after
        ``submitted`` and a worker was seen not ready since (it died with the request in hand)."""
        worker_id = lsa.taken_by(item)
        if worker_id is not None:
            if self._worker_status().get(lsa.worker_key(self, worker_id)) != lsa.READY:
                raise unavailable("the inference worker stopped while handling this request; retry")
        elif not self._ready_workers():
            raise unavailable("no inference worker is ready (one is restarting); retry shortly")
        elif self._unready_seen_at >= submitted and time.monotonic() - submitted > ORPHAN_GRACE_S:
            raise unavailable("an inference worker stopped while this request was queued; retry")
        if time.monotonic() > deadline:
            raise unavailable("no answer from the inference workers in time; retry")

    async def _call(self, op: str, **arguments: Any) -> dict[str, Any]:
        """Submit to an inference worker and wait, as LitServe's RegularRequestHandler does, but
        never forever: a worker that dies with the request (LitServe restarts it) or no answer
        within the server's timeout is a prompt 503, so clients and load balancers can retry."""
        if op not in OPS:
            raise KeyError(f"route submits unknown operation {op!r}; known: {sorted(OPS)}")
        if not self._ready_workers():
            raise unavailable("no inference worker is ready (loading the bundle); retry shortly")
        event = asyncio.Event()
        submitted = time.monotonic()
        uid, item = lsa.submit(self, {"op": op, **arguments}, event)
        deadline = submitted + float(getattr(self._server, "timeout", 30) or 30)
        try:
            while not event.is_set():
                try:
                    await asyncio.wait_for(event.wait(), timeout=WORKER_POLL_S)
                except TimeoutError:
                    self._check_waiting(item, deadline, submitted)
        finally:
            lsa.discard(self, uid)
        return lsa.reply(item)  # a worker's HTTPException is re-raised here

    def decode_request(self, request: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return request

    def encode_response(self, output: dict[str, Any], **kwargs: Any) -> bytes:
        """The answer as JSON bytes, encoded in the worker (what the route returns as is): orjson,
        1 µs for a ten-item answer against 14 µs for the standard library's compact dumps."""
        return orjson.dumps(output)


class RecsysAPI(ls.LitAPI):
    """One per inference worker: loads the bundle in ``setup`` and runs the graph."""

    def __init__(
        self,
        bundle_dir: str | Path,
        max_top_k: int = 100,
        min_history: int = 3,
        threads: int = 1,
        cpus: set[int] | None = None,
        admin_token: str | None = None,
        slots: ActiveSlots | None = None,
    ):
        super().__init__(
            spec=RecsysSpec(bundle_dir, max_top_k, admin_token=admin_token), loop=lsa.LateStartLoop()
        )
        self.slots = slots  # with standby workers: answer only while holding an active slot
        self.bundle_dir, self.max_top_k, self.min_history, self.threads = (
            bundle_dir,
            max_top_k,
            min_history,
            threads,
        )
        self.cpus = cpus

    def setup(self, device: str) -> None:
        from recsys.serving.cpu_affinity import pin_current_thread
        from recsys.serving.graph import InferenceGraph

        if threading.current_thread() is threading.main_thread():  # (a worker process's is)
            # Ctrl+C reaches every process of the group: the worker keeps answering while the
            # main process drains, then stops it (recsys.serving.lifecycle)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        pin_current_thread(self.cpus)  # before any torch/FAISS thread exists: they inherit it
        torch.set_num_threads(self.threads)  # two threads collapse under contention (measured)
        self.graph = InferenceGraph.from_bundle(
            self.bundle_dir, min_history=self.min_history, max_top_k=self.max_top_k, threads=self.threads
        )
        self.changes = change_log(self.bundle_dir)
        self.sync()

    def before_serving(self) -> None:
        """Called by the worker loop before it reads any request: a standby waits here, loaded,
        until an active worker is gone (``recsys.serving.active_slots``)."""
        if self.slots is not None:
            self.slots.wait_for_one()
            self.sync()  # changes made while it waited

    def sync(self) -> None:
        """Replay catalog changes recorded since this worker last looked (another worker's, or
        earlier runs' at start): every worker serves the same catalog."""
        if self.changes.changed():
            self.graph.apply_changes(self.changes.changes_since(self.graph.applied_seq))

    def add_item(self, new: dict[str, Any]) -> dict[str, Any]:
        from recsys.data.text import unified_text

        if self.graph.is_live(new["item_id"]):
            raise HTTPException(
                status_code=409, detail=f"item_id {new['item_id']!r} is already in the catalog"
            )
        text = new["text"] or unified_text(new["title"], new["categories"], {}, "")
        try:
            vectors, text_vectors = self.graph.embed_items([text])
        except ValueError as err:  # e.g. an item tower that reads no text
            raise HTTPException(status_code=409, detail=str(err)) from None
        change = self.changes.append(
            {
                "op": "add",
                "item_id": new["item_id"],
                "title": new["title"],
                "categories": list(new["categories"]),
                "vector": vectors[0],
                "text_vector": text_vectors[0],
            }
        )
        self.sync()
        return {"item_id": change.item_id, "change": "added", "seq": change.seq}

    def delete_item(self, item_id: str) -> dict[str, Any]:
        from recsys.serving.graph import UnknownItemError

        if not self.graph.is_live(item_id):
            raise UnknownItemError(f"unknown item_id {item_id!r}")
        change = self.changes.append({"op": "delete", "item_id": item_id})
        self.sync()
        return {"item_id": change.item_id, "change": "deleted", "seq": change.seq}

    def predict(self, x: dict[str, Any]) -> dict[str, Any]:
        from recsys.serving.graph import UnknownItemError, UnknownUserError

        run = OPS.get(x.get("op"))
        if run is None:
            raise HTTPException(status_code=400, detail=f"unknown operation {x.get('op')!r}")
        try:
            self.sync()
            return run(self, x)
        except (UnknownUserError, UnknownItemError) as err:
            raise HTTPException(status_code=404, detail=err.args[0]) from None
        except ValueError as err:
            raise HTTPException(status_code=422, detail=str(err)) from None


def build_server(
    bundle_dir: str | Path,
    max_top_k: int = 100,
    min_history: int = 3,
    workers: int = 1,
    threads: int = 1,
    standby_workers: int = 0,
    timeout: float = 30,
    max_payload_bytes: int = 1_000_000,
    worker_cpus: set[int] | None = None,
    restart_workers: bool = True,
    drain_s: float = 10.0,
    admin_token: str | None = None,
) -> RecsysServer:
    if not (Path(bundle_dir) / "manifest.json").is_file():
        raise FileNotFoundError(
            f"{bundle_dir}: no serving bundle here; create one with `make demo` or "
            "`python -m recsys.export retrieval_ckpt=… ranker_ckpt=… bundle_dir=…`"
        )
    change_log(bundle_dir).changes_since(0)  # a tampered change log stops the start, like a tampered bundle
    slots = None
    if standby_workers:
        slots_dir = tempfile.mkdtemp(prefix="recsys-serve-slots-")
        atexit.register(shutil.rmtree, slots_dir, ignore_errors=True)  # the main process's exit
        slots = ActiveSlots(slots_dir, workers)
    api = RecsysAPI(
        bundle_dir,
        max_top_k=max_top_k,
        min_history=min_history,
        threads=threads,
        cpus=worker_cpus,
        admin_token=admin_token or os.environ.get(ADMIN_TOKEN_ENV) or None,
        slots=slots,
    )
    server = RecsysServer(
        api,
        accelerator="cpu",
        workers_per_device=workers + standby_workers,
        timeout=timeout,
        healthcheck_path="/livez",  # LitServe's plain-text liveness; /health is ours (JSON readiness)
        max_payload_size=max_payload_bytes,  # bytes (an int: the middleware compares numbers)
        restart_workers=restart_workers,  # a dead worker (OOM kill) is replaced, not fatal
        drain_s=drain_s,
        middlewares=[PlainTextContentType, AllowedMethods],
    )
    document_responses(server.app, api_key=lsa.api_key_required(), examples=example_ids(bundle_dir))
    return server


def change_log(bundle_dir: str | Path) -> CatalogChangeLog:
    manifest = json.loads((Path(bundle_dir) / "manifest.json").read_text())
    return CatalogChangeLog(bundle_dir, manifest["embedding_dim"], manifest["item_tower"]["text_dim"])


def example_ids(bundle_dir: str | Path) -> dict[str, str]:
    """A known user and item of the bundle (the front end reads two parquet columns, no model)."""
    import pyarrow.parquet as pq

    users = pq.read_table(Path(bundle_dir) / "users.parquet", columns=["user_id"]).column(0)
    items = pq.read_table(Path(bundle_dir) / "items.parquet", columns=["item_id"]).column(0)
    return {"user_id": str(users[0]), "item_id": str(items[0])} if len(users) and len(items) else {}
