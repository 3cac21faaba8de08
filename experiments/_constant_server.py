"""The serving floor: a LitServe endpoint that returns a fixed 10-item answer (no model), with its
inference worker and HTTP side on the same CPUs as `python -m recsys.serve` puts them.

python experiments/_constant_server.py PORT [--no-pin]
python experiments/_constant_server.py PORT --recsys-routes BUNDLE [--no-pin]

``--recsys-routes``: recsys' own routes and request path (``RecsysSpec``: validation, the queue,
the wait on the worker) with a worker that answers the same fixed list without the graph: what
the HTTP side costs above the floor, apart from the model's work.
"""

import sys

import litserve as ls

from recsys.serving.api import RecsysAPI, build_server
from recsys.serving.cpu_affinity import pin_current_thread, pin_http_side

ITEMS = [{"item_id": str(i), "title": "t", "score": 1.0, "rank": i + 1} for i in range(10)]


class Constant(ls.LitAPI):
    def __init__(self, cpus=None):
        super().__init__()
        self.cpus = cpus

    def setup(self, device):
        pin_current_thread(self.cpus)

    def predict(self, x):
        return {"strategy": "two_stage", "items": ITEMS}


class _FixedGraph:
    applied_seq = 0

    def recommend(self, user_id=None, history=None, top_k=10):
        return {"user_id": user_id, "strategy": "two_stage", "items": ITEMS}


class _NoChanges:
    def changed(self):
        return False


class FixedRecsys(RecsysAPI):
    """recsys' routes and request path with a worker that answers the fixed list (no graph)."""

    def setup(self, device):
        pin_current_thread(self.cpus)
        self.graph, self.changes = _FixedGraph(), _NoChanges()


def recsys_routes(bundle: str, worker_cpus):
    server = build_server(bundle, worker_cpus=worker_cpus)
    server.litapi_connector.lit_apis[0].__class__ = FixedRecsys  # (module level: spawn pickles it)
    return server


if __name__ == "__main__":
    worker_cpus = pin_http_side(1, 1) if "--no-pin" not in sys.argv[2:] else None
    if "--recsys-routes" in sys.argv:
        server = recsys_routes(sys.argv[sys.argv.index("--recsys-routes") + 1], worker_cpus)
    else:
        server = ls.LitServer(Constant(worker_cpus), accelerator="cpu", timeout=30)
    server.run(host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False, log_level="warning")
