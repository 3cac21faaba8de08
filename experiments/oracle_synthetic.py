"""The best any model can do on `synthetic`: ndcg@10 of a ranker that knows the generator.

`synthetic`'s users are drawn by a known process (recsys/data/sources/synthetic_generator.py): the
next item is the sequel of the previous one (p = 0.5 when it has one), otherwise an item of a genre
(the previous item's with p = 0.6 after the first step, else one of the user's 1–3 favourites
with p = 0.8, else any genre), drawn by popularity within that genre; a user's final item is a fresh
release of that genre with p = 0.15. This script regenerates the data config's draw (same seed),
takes each test request of the prepared dataset back to the generator step that produced it, and
ranks the catalog by the true probability of each item at that step given everything the
generator knew (the previous raw item, its genre, the user's hidden favourites, whether the step
was the user's last), with the user's earlier items excluded as in evaluation. No model can beat
that ranking in expectation; its ndcg@10 on the same test requests is the ceiling any
retrieval or two-stage figure on `synthetic` is measured against.

    python experiments/oracle_synthetic.py [--metrics artifacts/demo/evaluation/metrics.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import report
from recsys.data.sources import synthetic_vocab as vocab
from recsys.data.sources.synthetic_generator import (
    _DAY_MS,
    SyntheticConfig,
    _user_ids,
    build_catalog,
    draw_favourites,
    fresh_weights,
    generate_interactions,
)
from tests.conftest import compose_config

REPO = Path(__file__).resolve().parents[1]


def genre_item_probabilities(cat, weights: np.ndarray, n_genres: int) -> np.ndarray:
    """[genres, items]: P(item | genre) of the generator's within-genre draw (``_genre_sampler``:
    an item of every genre it carries, by weight)."""
    table = np.zeros((n_genres, len(weights)))
    for col in range(3):
        genre = cat.genres[:, col]
        ok = genre >= 0
        np.add.at(table, (genre[ok], np.flatnonzero(ok)), weights[ok])
    totals = table.sum(1, keepdims=True)
    return np.divide(table, totals, out=np.zeros_like(table), where=totals > 0)


def hidden_state(cfg: SyntheticConfig):
    """The catalog, each user's favourites and their count, and the raw interactions with the
    duplicate reviews told apart, as ``generate`` draws them."""
    rng = np.random.default_rng(cfg.seed)
    cat = build_catalog(cfg, rng)
    # generate_interactions' first draws: the favourites, then how many of them a user has
    peek = np.random.default_rng()
    peek.bit_generator.state = rng.bit_generator.state
    favourites, n_fav = draw_favourites(peek, cfg.n_users)
    inter = generate_interactions(cfg, cat, rng).sort_values(["user", "timestamp"], kind="stable")
    user_ids = _user_ids(cfg.n_users, rng)
    # a duplicate review repeats an earlier review of the same (user, item) a whole number of
    # days (1–29) later; a step's clock never advances by whole days
    inter["duplicate"] = False
    repeated = inter[inter.duplicated(["user", "item"], keep=False)]
    for _, group in repeated.groupby(["user", "item"]):
        times = group["timestamp"].to_numpy()
        gap = times[:, None] - times[None, :]
        later_copy = ((gap > 0) & (gap % _DAY_MS == 0) & (gap // _DAY_MS < 30)).any(1)
        inter.loc[group.index[later_copy], "duplicate"] = True
    return cat, favourites, n_fav, inter, user_ids


def generator_tables(cat) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """P(item | genre) of the regular and of the fresh-release draws, and which genres have any
    such item (``_genre_sampler``'s ``has_items``)."""
    regular = genre_item_probabilities(cat, cat.weights, len(vocab.GENRES))
    fresh = genre_item_probabilities(cat, fresh_weights(cat), len(vocab.GENRES))
    return regular, fresh, regular.sum(1) > 0, fresh.sum(1) > 0


def step_probabilities(cfg, cat, p_regular, p_fresh, regular_has, fresh_has, favs, prev, final):
    """[items]: P(next item) at one generator step (``generate_interactions``' loop body)."""
    n_genres = p_regular.shape[0]
    stay = cfg.p_genre_stay if prev >= 0 else 0.0
    p_genre = np.full(n_genres, (1 - stay) * (1 - cfg.p_favourite_genre) / n_genres)
    np.add.at(p_genre, favs, (1 - stay) * cfg.p_favourite_genre / len(favs))
    if prev >= 0:
        p_genre[cat.genres[prev, 0]] += stay
    # a genre without regular items falls back to one of the favourites
    lost = p_genre[~regular_has].sum()
    p_genre[~regular_has] = 0.0
    np.add.at(p_genre, favs, lost / len(favs))
    fresh_share = cfg.p_fresh_final * fresh_has * final  # per genre
    follow = cat.next_part[prev] if prev >= 0 else -1
    sequel = cfg.p_franchise_next if follow >= 0 else 0.0
    probs = (p_genre * fresh_share) @ p_fresh + (p_genre * (1 - fresh_share) * (1 - sequel)) @ p_regular
    if follow >= 0:
        probs[follow] += (p_genre * (1 - fresh_share)).sum() * sequel
    return probs


def ranked_position(probs, listed, rows, seen, target: int, n_items: int) -> int:
    """1-based rank of ``target`` (a 0-based catalog row) when the catalog is sorted by ``probs``
    (raw items ``listed`` at catalog ``rows``) with the ``seen`` rows excluded; ties count in the
    target's favour."""
    scores = np.full(n_items, -np.inf)
    scores[rows] = probs[listed]
    scores[seen] = -np.inf
    return int((scores > scores[target]).sum() + 1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--metrics", default="artifacts/demo/evaluation/metrics.json")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    cfg_data = compose_config("prepare", ["data=synthetic"]).data
    gen = SyntheticConfig(**dict(cfg_data.preparer.source.generator))
    processed = REPO / "data" / "processed" / str(cfg_data.name)
    test = pd.read_parquet(processed / "test.parquet")
    items = pd.read_parquet(processed / "items.parquet", columns=["item_idx", "item_id"])

    cat, favourites, n_fav, inter, user_ids = hidden_state(gen)
    p_regular, p_fresh, regular_has, fresh_has = generator_tables(cat)
    raw_of_item = {item_id: k for k, item_id in enumerate(cat.item_ids)}
    idx_of_raw = np.full(len(cat.item_ids), -1)
    idx_of_raw[[raw_of_item[i] for i in items["item_id"]]] = items["item_idx"].to_numpy()
    raw_user = {str(u): k for k, u in enumerate(user_ids)}
    first_idx = int(items["item_idx"].min())
    listed = idx_of_raw >= 0  # raw items in the prepared catalog (every one, for `synthetic`)
    rows = idx_of_raw[listed] - first_idx
    steps = {u: g for u, g in inter[~inter["duplicate"]].groupby("user")}

    ndcg, hits, kinds, matched = [], [], [], 0
    learnable_ndcg, learnable_hits = [], []
    for row in test.itertuples(index=False):
        u = raw_user[str(row.user_id)]
        seq = steps[u]
        raw_items, times = seq["item"].to_numpy(), seq["timestamp"].to_numpy()
        at = np.flatnonzero((idx_of_raw[raw_items] == row.target) & (times == row.timestamp))
        if len(at) == 0:  # the test row is a duplicate review (an earlier step's item again)
            ndcg.append(0.0), hits.append(0.0), kinds.append("duplicate review")
            learnable_ndcg.append(0.0), learnable_hits.append(0.0)
            continue
        t = int(at[0])
        matched += 1
        prev = int(raw_items[t - 1]) if t > 0 else -1
        target_raw = int(raw_items[t])
        if cat.fresh[target_raw]:
            kinds.append("a fresh release (cold: never in training)")
        elif prev >= 0 and cat.next_part[prev] == target_raw:
            kinds.append("the sequel of the previous item")
        else:
            kinds.append("an item of a genre, by popularity")
        favs = favourites[u, : n_fav[u]]
        seen = np.asarray(row.history, dtype=np.int64) - first_idx
        target = row.target - first_idx
        for final, out_ndcg, out_hits in (
            (t == len(raw_items) - 1, ndcg, hits),
            (False, learnable_ndcg, learnable_hits),  # without the fresh-release rule
        ):
            probs = step_probabilities(
                gen, cat, p_regular, p_fresh, regular_has, fresh_has, favs, prev, final
            )
            rank = ranked_position(probs, listed, rows, seen, target, len(items))
            out_ndcg.append(1.0 / np.log2(rank + 1) if rank <= 10 else 0.0)
            out_hits.append(float(rank <= 10))

    lines = [
        f"`data=synthetic` (generator seed {gen.seed}), {len(test):,} test requests, {matched:,} traced back to "
        "their generator step (the rest are duplicate reviews of an earlier item: counted as misses); "
        "the user's earlier items excluded, as in evaluation.",
        "",
        "| ranking | test ndcg@10 | test recall@10 |",
        "|---|---|---|",
        f"| the generator's probabilities (the ceiling) | {np.mean(ndcg):.4f} | {np.mean(hits):.4f} |",
        f"| the same without the fresh-release rule (what no training list shows: a fresh item is only "
        f"ever a user's last) | {np.mean(learnable_ndcg):.4f} | {np.mean(learnable_hits):.4f} |",
    ]
    metrics_path = REPO / args.metrics
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    for name in ("retrieval", "two_stage"):
        if f"{name}/ndcg@10" in metrics:
            lines.append(
                f"| {name} (`{args.metrics}`) | {metrics[f'{name}/ndcg@10']:.4f} | "
                f"{metrics[f'{name}/recall@10']:.4f} |"
            )
    by_kind = pd.DataFrame({"kind": kinds, "ndcg": ndcg, "learnable": learnable_ndcg}).groupby("kind")
    lines += [
        "",
        "By what the generator did at the test step:",
        "",
        "| test target | share | ceiling ndcg@10 | without the fresh-release rule |",
        "|---|---|---|---|",
        *[
            f"| {kind} | {len(g) / len(test):.3f} | {g['ndcg'].mean():.4f} | {g['learnable'].mean():.4f} |"
            for kind, g in by_kind
        ],
    ]
    if "retrieval/ndcg@10" in metrics:
        base = metrics["retrieval/ndcg@10"]
        lines += [
            "",
            f"Ceiling / retrieval ndcg@10: {np.mean(ndcg) / base:.3f}×; without the fresh-release rule "
            f"{np.mean(learnable_ndcg) / base:.3f}×.",
        ]
    report(
        "The ceiling on synthetic: ranking by the generator's probabilities (issues 30, 32)",
        "\n".join(lines),
        record=not args.no_record,
    )


if __name__ == "__main__":
    main()
