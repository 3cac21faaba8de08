"""What the declared attributes add to a served request's ranker step (issue 32: at most 0.5 ms).

The same ranker (features only, [256, 128], K candidates) with and without ML-100K's attribute
layout (item `year`; user `gender`, `occupation`, `age`): the attribute columns gathered from the
tables as the serving graph does, then the net's forward for one user. The two run interleaved,
one call each in turn, so the machine's load falls on both alike; medians in microseconds.

    python experiments/probe_attribute_cost.py [--candidates 200] [--calls 4000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recsys.features.attribute_features import AttributeLayout, Attributes, AttributeTable
from recsys.features.ranker_features import FEATURES, feature_columns
from recsys.models.ranker_net import RankerNet

DEFAULT = ["score", "rank", "log_popularity", "recent_popularity", "text_similarity", "is_cold", "transition"]
LAYOUT = AttributeLayout(  # ML-100K's: 2 genders, 21 occupations
    {"item": {}, "user": {"gender": ["F", "M"], "occupation": [f"job{i:02d}" for i in range(21)]}},
    {"item": ["year"], "user": ["age"]},
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--calls", type=int, default=4000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    n_items, n_users, k = 1684, 943, args.candidates
    codes = torch.stack([torch.randint(0, 4, (n_users,)), torch.randint(0, 23, (n_users,))], dim=1)
    attributes = Attributes(
        LAYOUT,
        AttributeTable(torch.zeros(n_items, 0, dtype=torch.long), torch.rand(n_items, 1) * 80 + 1920),
        AttributeTable(codes, torch.rand(n_users, 1) * 50 + 15),
    )
    settings = dict(
        use_embeddings=False, hidden=[256, 128], dropout=0.2, cold_candidates="rank", prior_scale=10.0
    )
    plain = RankerNet(64, feature_columns(DEFAULT), **settings).eval()
    reading = RankerNet(64, feature_columns(DEFAULT), attributes=LAYOUT.as_dict(), **settings).eval()
    candidates = torch.randint(2, n_items, (1, k))
    base, user, items = torch.randn(k, len(FEATURES)), torch.randn(64), torch.randn(k, 64)

    def with_attributes() -> torch.Tensor:
        columns = attributes.values(candidates, torch.tensor([5]))[0]
        return reading.score_user(user, items, torch.cat([base, columns], dim=-1))

    times: dict[str, list[float]] = {"without": [], "with": []}
    with torch.inference_mode():
        for _ in range(200):  # warm-up
            plain.score_user(user, items, base)
            with_attributes()
        for _ in range(args.calls):
            for name, call in (
                ("without", lambda: plain.score_user(user, items, base)),
                ("with", with_attributes),
            ):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) * 1e6 for name, t in times.items()}
    print(
        f"K={k}, 1 thread: ranker {medians['without']:.0f} us; with the attribute columns "
        f"{medians['with']:.0f} us; difference {medians['with'] - medians['without']:.0f} us"
    )


if __name__ == "__main__":
    main()
