"""How a trained ranker should treat cold candidates, judged on lists that hold cold targets.

The ranker learns from its twin's lists, and no training target is a cold item, so it learns to
push cold candidates down; whether serving should let it (``model.cold_candidates=rank``) or keep
them at their retrieval position (``keep``) is a question for lists with cold positives. On a
``cold_items=holdout`` split the served retrieval model's **validation** lists have them: each
ranker run is scored on those lists under each policy (the same logits; the policy only orders
the final list). Test is not read.

    python experiments/study_cold_policy.py --rankers logs/studies/cold_s12/ranker_seed4{2,3,4}

Each ``--rankers`` entry is a ``python -m recsys.train experiment=ranker`` output directory (its
``config.yaml`` names the retrieval checkpoint, its ``metrics.json`` the ranker's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import report, table_lines

POLICIES = ("rank", "keep")
KEYS = {
    "two-stage ndcg@10": "two_stage/ndcg@10",
    "retrieval ndcg@10": "retrieval/ndcg@10",
    "two-stage warm ndcg@10": "two_stage_warm/ndcg@10",
    "two-stage cold recall@10": "two_stage_cold/recall@10",
    "retrieval cold recall@10": "retrieval_cold/recall@10",
    "two-stage cold recall@50": "two_stage_cold/recall@50",
    "retrieval cold recall@50": "retrieval_cold/recall@50",
}


def val_lists_results(run: Path) -> dict[str, dict[str, float]]:
    """{policy: metrics} of the run's ranker on its retrieval model's validation lists."""
    import lightning as L
    from omegaconf import OmegaConf

    from recsys.candidates.datamodule import CandidateDataModule
    from recsys.models.ranker_module import RankerModule

    cfg = OmegaConf.load(run / "config.yaml")
    ranker_ckpt = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    datamodule = CandidateDataModule.for_ranker(ranker_ckpt, cfg.retrieval_ckpt)
    # the served model's own lists: its val split trains nothing here, it is scored
    datamodule.holdout_ckpt, datamodule.holdout_fraction = None, 0.0
    datamodule.setup()
    datamodule.splits["test"] = datamodule.splits["train"]
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    ranker = RankerModule.load_from_checkpoint(ranker_ckpt, map_location="cpu", weights_only=True)
    results = {}
    for policy in POLICIES:
        ranker.net.cold_candidates = policy
        trainer.test(ranker, datamodule=datamodule, verbose=False)
        results[policy] = dict(ranker.test_results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rankers", nargs="+", required=True, help="ranker run directories")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    rows = {Path(run): val_lists_results(Path(run)) for run in args.rankers}
    first = next(iter(rows.values()))["rank"]
    lines = [
        f"{len(rows)} ranker run(s), each scored on its retrieval model's validation lists "
        f"({first.get('retrieval/n_users', float('nan')):.0f} users, "
        f"{first.get('retrieval_cold/n_users', 0):.0f} with a cold target; "
        f"{first.get('cold_first_random/n_cold_items', float('nan')):.0f} cold items, cold-first random "
        f"recall@50 {first.get('cold_first_random/recall@50', float('nan')):.4f}); "
        f"{os.environ.get('OMP_NUM_THREADS', 'all')} CPU thread(s).",
        "",
        *table_lines(
            ["run", "cold_candidates", *KEYS],
            [
                [run.name, policy, *(f"{m.get(k, float('nan')):.4f}" for k in KEYS.values())]
                for run, by_policy in rows.items()
                for policy, m in by_policy.items()
            ],
        ),
    ]
    diff = np.array([r["keep"]["two_stage/ndcg@10"] - r["rank"]["two_stage/ndcg@10"] for r in rows.values()])
    se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
    lines += [
        "",
        f"keep − rank, two-stage ndcg@10 on these lists, paired by run: {diff.mean():+.4f} "
        f"(standard error {se:.4f}, {len(diff)} runs).",
    ]
    report(
        "Cold candidates in the final list, on lists with cold targets (issue 32)",
        "\n".join(lines),
        record=not args.no_record,
    )


if __name__ == "__main__":
    main()
