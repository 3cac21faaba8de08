"""The serving floor: a LitServe endpoint that returns a fixed 10-item answer (no model), with its
inference worker and HTTP side on the same CPUs as `python -m recsys.serve` puts them.

python experiments/_constant_server.py PORT [--no-pin]
"""

import sys

import litserve as ls

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


if __name__ == "__main__":
    worker_cpus = pin_http_side(1, 1) if "--no-pin" not in sys.argv[2:] else None
    server = ls.LitServer(Constant(worker_cpus), accelerator="cpu", timeout=30)
    server.run(host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False, log_level="warning")
