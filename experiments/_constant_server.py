"""The serving floor: a LitServe endpoint that returns a fixed 10-item answer (no model).

python experiments/_constant_server.py PORT
"""

import sys

import litserve as ls

ITEMS = [{"item_id": str(i), "title": "t", "score": 1.0, "rank": i + 1} for i in range(10)]


class Constant(ls.LitAPI):
    def setup(self, device):
        pass

    def predict(self, x):
        return {"strategy": "two_stage", "items": ITEMS}


if __name__ == "__main__":
    server = ls.LitServer(Constant(), accelerator="cpu", timeout=30)
    server.run(host="127.0.0.1", port=int(sys.argv[1]), generate_client_file=False, log_level="warning")
