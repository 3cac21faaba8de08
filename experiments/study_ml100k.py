"""ML-100K two-tower study: encoders × text × logQ, with popularity in the same runs.

Each variant is one `python -m recsys.train experiment=two_tower data=movielens_100k …` run (the
recipe with one change; the exact command is recorded); wall-clock covers the whole run (train +
full-catalog test). The recipe derives a GRU over item-MLP vectors on ML-100K's long histories; a
value a variant sets on the command line wins over the derived one.

    python experiments/study_ml100k.py [--variants recipe,lstm,sasrec,...] [--seeds 42]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import REPO, STUDIES, repo_path, report, run_train

# the pre-issue-14 recipe: one (prefix, next item) row per target, 256 rows a step, 14 epochs (its
# time budget replaced by the epochs it reached on a bf16 CPU)
LAST_POSITION = [
    "model.objective=last_position",
    "data.batch_size=256",
    "model.lr=1e-3",
    "model.history_dropout=0.3",
    "trainer.max_epochs=14",
    "callbacks.early_stopping.patience=5",
]
BASE = ["experiment=two_tower", "data=movielens_100k"]
VARIANTS: dict[str, list[str]] = {
    "recipe": [],
    "lstm": ["model/user_encoder=lstm"],
    "sasrec": ["model/user_encoder=sasrec", "model.item_mlp=false"],  # the recipe on short histories
    "last_position": LAST_POSITION,
    "no_text": ["model.use_text=false"],
    "logq": ["model.softmax=sampled", "model.num_global_negatives=1024", "model.logq=both"],
    "sampled_no_logq": ["model.softmax=sampled", "model.num_global_negatives=1024", "model.logq=none"],
    # one global timeline cut instead of leave-one-out (issue 17): what a deployed model faces
    "global_temporal": ["split=global_temporal"],
    # item text from the static table distilled from MiniLM, and from hashing (issue 19)
    "static_text": ["text_encoder=static"],
    "hashing_text": ["text_encoder=hashing"],
}
SHOW = ("recall@10", "ndcg@10", "mrr", "recall@100")


def run_variant(name: str, seed: int, extra: list[str], workdir: Path) -> dict:
    overrides = [*BASE, f"seed={seed}", *VARIANTS[name], *extra]
    metrics, wall, command = run_train(overrides, workdir / f"{name}_seed{seed}", REPO)
    return {"name": name, "seed": seed, "wall_s": wall, "metrics": metrics, "command": command}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--workdir", default=f"{STUDIES}/ml100k")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--title", default="ML-100K two-tower study")
    parser.add_argument("extra", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    rows = []
    for name in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            r = run_variant(name, seed, args.extra, repo_path(args.workdir))
            m = r["metrics"]
            print(
                f"{name:22s} seed={seed} "
                + " ".join(f"{k}={m['retrieval/' + k]:.4f}" for k in SHOW)
                + f" | popularity ndcg@10={m['popularity/ndcg@10']:.4f} | {r['wall_s']:.0f}s",
                flush=True,
            )
            rows.append(r)
    lines = [
        "Protocol: all ratings, stable leave-one-out (unless the variant sets `split=global_temporal`), "
        "full catalog (1,682 items), earlier items excluded; "
        f"{os.environ.get('OMP_NUM_THREADS', 'all')} CPU thread(s) a run. "
        "Wall = whole run (prepare cached, train with early stopping on val/ndcg@10, test). "
        "Every run is bounded by epochs (no wall-clock budget); precision is what `auto` resolved to.",
        "",
        "| variant | seed | val ndcg@10 | recall@10 | ndcg@10 | mrr | recall@100 | test users | cold share | "
        "cold recall@10 | warm recall@10 | popularity recall@10 | popularity ndcg@10 | best epoch / done | "
        "precision | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["metrics"]
        epochs = Path(m["best_checkpoint"]).stem if m.get("best_checkpoint") else "-"
        lines.append(
            f"| {r['name']} | {r['seed']} | {m['val_best']:.4f} | {m['retrieval/recall@10']:.4f} | "
            f"{m['retrieval/ndcg@10']:.4f} | {m['retrieval/mrr']:.4f} | {m['retrieval/recall@100']:.4f} | "
            f"{m['retrieval/n_users']:.0f} | {m.get('retrieval_cold/n_users', 0) / m['retrieval/n_users']:.3f} | "
            f"{m.get('retrieval_cold/recall@10', float('nan')):.4f} | {m['retrieval_warm/recall@10']:.4f} | "
            f"{m['popularity/recall@10']:.4f} | {m['popularity/ndcg@10']:.4f} | "
            f"{epochs} / {m['epochs_done']}{' (time)' if m['stopped_by_time'] else ''} | "
            f"{m['precision']} | {r['wall_s']:.0f} |"
        )
    lines += [
        "",
        "Mean ± std over seeds:",
        "",
        "| variant | seeds | val ndcg@10 | ndcg@10 | recall@10 | wall s |",
    ]
    lines.append("|---|---|---|---|---|---|")
    for name in dict.fromkeys(r["name"] for r in rows):
        runs = [r for r in rows if r["name"] == name]
        cells = [
            np.array([r["metrics"][k] if k != "wall" else r["wall_s"] for r in runs])
            for k in ("val_best", "retrieval/ndcg@10", "retrieval/recall@10", "wall")
        ]
        lines.append(
            f"| {name} | {len(runs)} | "
            + " | ".join(f"{c.mean():.4f} ± {c.std():.4f}" for c in cells[:3])
            + f" | {cells[3].mean():.0f} |"
        )
    lines += ["", "Commands:", ""] + [f"- {r['name']} (seed {r['seed']}): `{r['command']}`" for r in rows]
    body = "\n".join(lines)
    report(args.title, body, record=not args.no_record)


if __name__ == "__main__":
    main()
