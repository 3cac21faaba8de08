"""HTTP API on LitServe: the routes of ARCHITECTURE.md, the model in LitServe's inference workers.

LitServe registers one POST route per LitAPI; our contract also has GET routes with path
parameters. ``RecsysSpec`` (a LitSpec, the mechanism LitServe's own OpenAI spec uses) registers
every route; each handler validates its input with FastAPI/pydantic, then submits a small
``{"op": ...}`` payload to the worker queue exactly like LitServe's request handler, so all model
work runs in ``RecsysAPI`` workers (``setup`` loads the bundle once per worker).
"""

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import litserve as ls
import torch
from fastapi import HTTPException, Query
from fastapi.responses import JSONResponse
from litserve.server import RegularRequestHandler
from litserve.specs.base import LitSpec
from litserve.utils import LitAPIStatus, ResponseBufferItem, WorkerSetupStatus
from pydantic import ConfigDict, Field, create_model

from recsys.serving.schemas import (
    ID,
    MAX_ID_LENGTH,
    MAX_POSTED_HISTORY,
    Health,
    HistoryRecommendations,
    ItemInfo,
    UserHistory,
    UserRecommendations,
)

# One table of operations: the routes submit {"op": name, **arguments}, the workers run OPS[name].
OPS: dict[str, Callable[[Any, dict[str, Any]], dict[str, Any]]] = {
    "user": lambda graph, x: graph.recommend(user_id=x["user_id"], top_k=x["top_k"]),
    "history": lambda graph, x: graph.recommend(history=x["history"], top_k=x["top_k"]),
    "user_history": lambda graph, x: graph.history(x["user_id"], limit=x["limit"]),
    "item": lambda graph, x: graph.item(x["item_id"]),
}


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


class RecsysSpec(LitSpec):
    def __init__(self, bundle_dir: str | Path, max_top_k: int = 100):
        super().__init__()
        self.api_path = "/recommend"
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
            status = self._server.workers_setup_status if self._server else None
            ready = bool(status) and all(v == WorkerSetupStatus.READY for v in status.values())
            if not ready:
                return JSONResponse({"status": "loading"}, status_code=503)
            return {"status": "ok", **self.summary}

        async def recommend_user(user_id: ID, top_k: top_k = 10) -> UserRecommendations:
            return await self._call("user", user_id=user_id, top_k=top_k)

        async def recommend_history(request: body) -> HistoryRecommendations:  # type: ignore[valid-type]
            return await self._call("history", history=request.history, top_k=request.top_k)

        async def user_history(
            user_id: ID, limit: Annotated[int, Query(ge=1, le=MAX_POSTED_HISTORY)] = 50
        ) -> UserHistory:
            return await self._call("user_history", user_id=user_id, limit=limit)

        async def item(item_id: ID) -> ItemInfo:
            return await self._call("item", item_id=item_id)

        self.add_endpoint("/health", health, ["GET"])
        self.add_endpoint("/recommend/{user_id}", recommend_user, ["GET"])
        self.add_endpoint("/recommend", recommend_history, ["POST"])
        self.add_endpoint("/user/{user_id}/history", user_history, ["GET"])
        self.add_endpoint("/items/{item_id}", item, ["GET"])

    def __getstate__(self) -> dict[str, Any]:
        """Workers get a copy of the spec; route handlers are front-end closures, left behind."""
        state = super().__getstate__()
        state["_endpoints"] = []
        return state

    async def _call(self, op: str, **arguments: Any) -> dict[str, Any]:
        """Submit to the inference worker and wait, as LitServe's RegularRequestHandler does."""
        if op not in OPS:
            raise KeyError(f"route submits unknown operation {op!r}; known: {sorted(OPS)}")
        payload = {"op": op, **arguments}
        uid = str(uuid.uuid4())
        event = asyncio.Event()
        self.response_buffer[uid] = ResponseBufferItem(event=event)  # before the put: no lost reply
        self.request_queue.put((self.response_queue_id, uid, time.monotonic(), payload))
        await event.wait()
        response, status = self.response_buffer.pop(uid).response
        if status == LitAPIStatus.ERROR:
            RegularRequestHandler._handle_error_response(response)  # re-raises the worker's HTTPException
        return response

    def decode_request(self, request: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return request

    def encode_response(self, output: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return output


class RecsysAPI(ls.LitAPI):
    """One per inference worker: loads the bundle in ``setup`` and runs the graph."""

    def __init__(
        self,
        bundle_dir: str | Path,
        max_top_k: int = 100,
        min_history: int = 3,
        threads: int = 1,
        cpus: set[int] | None = None,
    ):
        super().__init__(spec=RecsysSpec(bundle_dir, max_top_k))
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

        pin_current_thread(self.cpus)  # before any torch/FAISS thread exists: they inherit it
        torch.set_num_threads(self.threads)  # two threads collapse under contention (measured)
        self.graph = InferenceGraph.from_bundle(
            self.bundle_dir, min_history=self.min_history, max_top_k=self.max_top_k, threads=self.threads
        )

    def predict(self, x: dict[str, Any]) -> dict[str, Any]:
        from recsys.serving.graph import UnknownItemError, UnknownUserError

        run = OPS.get(x.get("op"))
        if run is None:
            raise HTTPException(status_code=400, detail=f"unknown operation {x.get('op')!r}")
        try:
            return run(self.graph, x)
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
    timeout: float = 30,
    max_payload_bytes: int = 1_000_000,
    worker_cpus: set[int] | None = None,
) -> ls.LitServer:
    if not (Path(bundle_dir) / "manifest.json").is_file():
        raise FileNotFoundError(
            f"{bundle_dir}: no serving bundle here; create one with `make demo` or "
            "`python -m recsys.export retrieval_ckpt=… ranker_ckpt=… bundle_dir=…`"
        )
    api = RecsysAPI(
        bundle_dir, max_top_k=max_top_k, min_history=min_history, threads=threads, cpus=worker_cpus
    )
    return ls.LitServer(
        api,
        accelerator="cpu",
        workers_per_device=workers,
        timeout=timeout,
        healthcheck_path="/livez",  # LitServe's plain-text liveness; /health is ours (JSON readiness)
        max_payload_size=max_payload_bytes,  # bytes (an int: the middleware compares numbers)
    )
