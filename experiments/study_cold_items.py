"""Cold-start study: are items nobody trained on recommended from their text? (issue 15)

For each negative pool (`catalog`: every item is a negative, the old behaviour; `trained`: only
items that are some training target) and seed, one two-tower run and one ranker on top, with
the model-free references in the same runs: popularity and a text-content scorer (cosine to the
mean history text, `model.text_baseline=true`). Reports overall, warm-target and cold-target
figures side by side. ``--cold-offsets`` adds runs with ``model.cold_score_offset`` (text-only
items' scores shifted by b in evaluation, stage-two candidates and serving): an opt-in share of
the list for new items, reported with its warm cost.

    # ML-100K with a cold-item holdout (cold_items=holdout: 20% of the warm test-target items
    # lose every training interaction; val/test rows intact)
    python experiments/study_cold_items.py --dataset ml100k --seeds 42,43,44
    # synthetic: its own "fresh release" items, cold by construction
    python experiments/study_cold_items.py --dataset synthetic --seeds 42,43,44
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import REPO, STUDIES, repo_path, report, reprepare, run_train, shown_path

DATASETS = {
    "ml100k": ["experiment=two_tower", "data=movielens_100k", "cold_items=holdout"],
    "synthetic": ["experiment=two_tower"],
}
POOLS = ("catalog", "trained")


def k_of(dataset: str) -> int:
    """The cutoff the issue's cold target is stated at."""
    return 50 if dataset == "ml100k" else 100


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="ml100k")
    parser.add_argument("--pools", default=",".join(POOLS))
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--workdir", default=f"{STUDIES}/cold")
    parser.add_argument("--cold-offsets", default="0", help="model.cold_score_offset values, e.g. 0,0.1")
    parser.add_argument("--no-ranker", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="read back runs already finished in --workdir")
    parser.add_argument(
        "--cold-candidates",
        default="rank,keep",
        help="ranker cold_candidates policies to compare on each two-tower run (keep: cold candidates "
        "keep their retrieval slot; rank: the ranker orders every candidate)",
    )
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("extra", nargs="*", help="extra Hydra overrides for every two-tower run")
    args = parser.parse_args()
    k = k_of(args.dataset)
    work = repo_path(args.workdir) / args.dataset
    rows = []
    variants = [(p, float(b)) for p in args.pools.split(",") for b in args.cold_offsets.split(",")]
    for pool, offset in variants:
        label, tag = (
            (pool, pool) if not offset else (f"{pool}, offset {offset:g}", f"{pool}_offset{offset:g}")
        )
        for seed in (int(s) for s in args.seeds.split(",")):
            overrides = [
                *DATASETS[args.dataset],
                f"seed={seed}",
                f"model.negative_pool={pool}",
                "model.text_baseline=true",
                *([f"model.cold_score_offset={offset:g}"] if offset else []),
                *args.extra,
            ]
            m, wall, command = run_train(overrides, work / f"{tag}_seed{seed}", REPO, args.reuse)
            row = {"pool": label, "seed": seed, "m": m, "wall": wall, "commands": [command], "rankers": {}}
            policies = [] if args.no_ranker else args.cold_candidates.split(",")
            pending = [
                q for q in policies if not (work / f"{tag}_seed{seed}_ranker_{q}" / "metrics.json").exists()
            ]
            if args.reuse and pending:  # the dataset directory may hold another seed's data now
                reprepare(
                    [o for o in overrides if o != "model.text_baseline=true"], m["best_checkpoint"], REPO
                )
            for policy in policies:
                ranker = [
                    "experiment=ranker",
                    f"retrieval_ckpt={shown_path(m['best_checkpoint'])}",
                    f"seed={seed}",
                    f"model.cold_candidates={policy}",
                    "data.holdout_fraction=0.1",  # validation compares the policies (the default refits)
                ]
                r, r_wall, r_command = run_train(
                    ranker, work / f"{tag}_seed{seed}_ranker_{policy}", REPO, args.reuse
                )
                row["rankers"][policy] = (r, r_wall)
                row["commands"].append(r_command)
            # the first policy's ranker fills the main table (the default policy comes first)
            row["r"] = next(iter(row["rankers"].values()))[0] if row["rankers"] else None
            print(json.dumps({key: row[key] for key in ("pool", "seed", "wall")}), flush=True)
            rows.append(row)
    n_items = rows[0]["m"]["n_items"]
    cold_users = rows[0]["m"].get("retrieval_cold/n_users", 0)
    # the baseline a cold figure must beat: the catalog's cold items first, in a random order
    n_cold = rows[0]["m"].get("cold_first_random/n_cold_items", n_items)
    random_k = min(1.0, k / n_cold)
    lines = [
        f"Dataset `{args.dataset}` ({n_items:,} items, {n_cold:,.0f} of them cold; {cold_users:.0f} of "
        f"{rows[0]['m']['retrieval/n_users']:.0f} test users have a cold target). Cold-first random "
        f"recall@{k} = {k}/{n_cold:,.0f} = {random_k:.4f}. "
        f"Ranking over the full catalog, earlier items excluded; {os.environ.get('OMP_NUM_THREADS', 'all')} "
        "torch thread(s) a run. `text content` = "
        "cosine between an item's text and the user's mean history text; popularity scores every "
        "cold item 0.",
        "",
        f"| pool | seed | val ndcg@10 | ndcg@10 | warm ndcg@10 | cold recall@{k} | cold × cold-first random | "
        f"cold recall@{k} text content | cold recall@{k} popularity | warm recall@{k} | "
        "two_stage ndcg@10 | two_stage cold recall@10 | two_stage cold recall@50 | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(m: dict | None, key: str) -> str:
        return f"{m[key]:.4f}" if m and key in m else "–"

    for row in rows:
        m, r = row["m"], row.get("r")
        cold = m.get(f"retrieval_cold/recall@{k}", float("nan"))
        lines.append(
            f"| {row['pool']} | {row['seed']} | {m['val_best']:.4f} | {m['retrieval/ndcg@10']:.4f} | "
            f"{m['retrieval_warm/ndcg@10']:.4f} | {cold:.4f} | {cold / random_k:.1f}× | "
            f"{cell(m, f'text_content_cold/recall@{k}')} | {cell(m, f'popularity_cold/recall@{k}')} | "
            f"{m[f'retrieval_warm/recall@{k}']:.4f} | {cell(r, 'two_stage/ndcg@10')} | "
            f"{cell(r, 'two_stage_cold/recall@10')} | {cell(r, 'two_stage_cold/recall@50')} | {row['wall']:.0f} |"
        )
    if any(row["rankers"] for row in rows):
        lines += [
            "",
            "Two-stage by the ranker's `cold_candidates` policy (ranker val = the two-stage ndcg@10 of the "
            "10% of val users it holds out):",
            "",
            "| pool | seed | cold_candidates | ranker val ndcg@10 | two_stage ndcg@10 | two_stage warm ndcg@10 | "
            "two_stage cold recall@10 | @50 | @100 | retrieval cold recall@10 | @50 | @100 | ranker wall s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            for policy, (r, r_wall) in row["rankers"].items():
                lines.append(
                    f"| {row['pool']} | {row['seed']} | {policy} | {r['val_best']:.4f} | "
                    f"{r['two_stage/ndcg@10']:.4f} | {cell(r, 'two_stage_warm/ndcg@10')} | "
                    + " | ".join(cell(r, f"two_stage_cold/recall@{c}") for c in (10, 50, 100))
                    + " | "
                    + " | ".join(cell(r, f"retrieval_cold/recall@{c}") for c in (10, 50, 100))
                    + f" | {r_wall:.0f} |"
                )
        lines += [
            "",
            "| pool | cold_candidates | seeds | ranker val ndcg@10 | two_stage ndcg@10 | two_stage cold recall@50 |",
        ]
        lines.append("|---|---|---|---|---|---|")
        for pool in dict.fromkeys(row["pool"] for row in rows):
            runs = [row for row in rows if row["pool"] == pool]
            for policy in runs[0]["rankers"]:
                cells = [
                    np.array([row["rankers"][policy][0][key] for row in runs])
                    for key in ("val_best", "two_stage/ndcg@10", "two_stage_cold/recall@50")
                ]
                lines.append(
                    f"| {pool} | {policy} | {len(runs)} | "
                    + " | ".join(f"{c.mean():.4f} ± {c.std():.4f}" for c in cells)
                    + " |"
                )
    lines += ["", "Mean ± std over seeds:", ""]
    keys = [
        "val_best",
        "retrieval/ndcg@10",
        "retrieval_warm/ndcg@10",
        f"retrieval_cold/recall@{k}",
        f"text_content_cold/recall@{k}",
        f"retrieval_warm/recall@{k}",
    ]
    lines += [
        f"| pool | seeds | val ndcg@10 | ndcg@10 | warm ndcg@10 | cold recall@{k} | text content cold recall@{k} "
        f"| warm recall@{k} | two_stage ndcg@10 | two_stage cold recall@50 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pool in dict.fromkeys(row["pool"] for row in rows):
        runs = [row for row in rows if row["pool"] == pool]
        cells = [np.array([row["m"].get(key, np.nan) for row in runs]) for key in keys]
        for key in ("two_stage/ndcg@10", "two_stage_cold/recall@50"):
            cells.append(np.array([row["r"][key] if row["r"] else np.nan for row in runs]))
        lines.append(
            f"| {pool} | {len(runs)} | " + " | ".join(f"{c.mean():.4f} ± {c.std():.4f}" for c in cells) + " |"
        )
    lines += ["", "Commands:", ""]
    for row in rows:
        lines += [f"- {row['pool']} (seed {row['seed']}): `{c}`" for c in row["commands"]]
    report(f"Cold-start items, {args.dataset} (issue 15)", "\n".join(lines), record=not args.no_record)


if __name__ == "__main__":
    main()
