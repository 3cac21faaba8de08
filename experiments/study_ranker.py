"""ML-100K two-stage study: does re-ranking the retrieved top-K beat retrieval alone?

For each seed, the two-tower recipe on ML-100K (`experiment=two_tower data=movielens_100k`, the
`recipe` row of study_ml100k.py) is trained once — or reused from ``--retrieval-workdir`` when that
study already ran — and every ranker variant is trained on its candidates with the same seed.
With ``--holdout-workdir`` the rankers learn from holdout models' lists (`experiment=ranker`'s
protocol, features only); without it, from the served model's val lists (the earlier protocol,
`holdout_ckpt=null`, with the embeddings unless the variant drops them). Each ranker run reports
`two_stage/*` and `retrieval/*` over the same test users, so the ratio is like for like.

    python experiments/study_ranker.py [--seeds 42,43,44] [--variants default,seed_mlp,...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import REPO, STUDIES, repo_path, report, run_train, shown_path
from experiments.study_ml100k import run_variant

# the ranker before issue 14's fifth session: no score prior, 30 epochs early-stopped on the
# ranker's held-out val users (~94 on ML-100K), best epoch tested
EARLY_STOPPED = [
    "model.score_prior=false",
    "trainer.max_epochs=30",
    "callbacks.early_stopping={_target_:lightning.pytorch.callbacks.EarlyStopping,"
    "monitor:val/ndcg@10,mode:max,patience:5}",
    "callbacks.model_checkpoint.monitor=val/ndcg@10",
    "data.holdout_fraction=0.1",  # its stopping users
]
VARIANTS: dict[str, list[str]] = {
    "default": [],  # a correction of the retrieval logit: dense features + [u, i, u⊙i], listwise, 8 epochs
    "early_stopped": EARLY_STOPPED,
    "no_prior": ["model.score_prior=false"],  # the same 8 epochs, learning the whole logit
    "epochs20": ["trainer.max_epochs=20"],  # validation curves behind the epoch count
    "no_prior_epochs20": ["model.score_prior=false", "trainer.max_epochs=20"],
    "seed_mlp": ["model.features=[]", "model.loss=bce", "model.score_prior=false"],  # the seed's ranker
    "features_only": ["model.use_embeddings=false"],
    "features_bce": ["model.loss=bce"],
    "hidden_512": ["model.hidden=[512,256]"],  # the seed's layer widths
    "hidden_128": ["model.hidden=[128,64]"],
    "hidden_64": ["model.hidden=[64]"],  # one narrow layer: a fifth of the served ranker's time (issue 33)
    # the candidate's age at the request (days since its first interaction before it; issue 32)
    "item_age": [
        "model.features=[score,rank,log_popularity,recent_popularity,text_similarity,is_cold,transition,item_age]"
    ],
    "dropout_04": ["model.dropout=0.4"],
    # the data config's declared item/user attributes (ML-100K: year; age, gender, occupation), embedded
    # and standardized (issue 32)
    "attributes": ["model.attributes=true"],
    "no_transition": ["model.features=[score,rank,log_popularity,recent_popularity,text_similarity,is_cold]"],
    # the user's history in the candidate's categories (share, recency): ML-100K genres (issue 32)
    "categories": [
        "model.features=[score,rank,log_popularity,recent_popularity,text_similarity,is_cold,transition,"
        "category_share,category_recency]"
    ],
    "categories_features_only": [
        "model.use_embeddings=false",
        "model.features=[score,rank,log_popularity,recent_popularity,text_similarity,is_cold,transition,"
        "category_share,category_recency]",
    ],
    # the feature-group ablation on holdout lists (issue 32): each group off, the rest features only
    "no_retrieval_features": [
        "model.features=[log_popularity,recent_popularity,text_similarity,is_cold,transition]"
    ],
    "no_popularity": ["model.features=[score,rank,text_similarity,is_cold,transition]"],
    "no_text": ["model.features=[score,rank,log_popularity,recent_popularity,is_cold,transition]"],
    # popularity and transitions counted from every interaction before each request (issue 17);
    # the default follows the split (leave-one-out: train counts), so this shows the LOO time leak
    "as_of_request": ["data.features_as_of_request=true"],
    # a learning-curve point: trained on 80% of the val users. Its 5 folds cover the val users as
    # the default's 10 do (90%), so the two pooled validations say whether more lists still help
    "train_80": ["data.holdout_fraction=0.2"],
    # how many retrieved candidates the ranker orders (default 200)
    "candidates_100": ["data.num_candidates=100"],
    "candidates_400": ["data.num_candidates=400"],
    # the validation curve without the embeddings (issue 14, on the two-tower with seen items
    # masked, where the default's curve peaks at epoch 1)
    "features_only_epochs10": ["model.use_embeddings=false", "trainer.max_epochs=10"],
    # an EMA of the ranker's weights (~33 steps, ~2.4 of its 14-step epochs), as retrieval has
    "ema_097": [
        "+callbacks.ema={_target_:recsys.utils.weight_averaging.EMAWeights,decay:0.97,use_buffers:false}"
    ],
}


def retrieval_checkpoint(workdir: Path, seed: int, variant: str = "recipe") -> tuple[str, float]:
    metrics_path = workdir / f"{variant}_seed{seed}" / "metrics.json"
    if not metrics_path.is_file():
        run_variant(variant, seed, [], workdir)
    metrics = json.loads(metrics_path.read_text())
    return shown_path(metrics["best_checkpoint"]), metrics["retrieval/ndcg@10"]


def run_ranker(
    name: str,
    seed: int,
    ckpt: str,
    workdir: Path,
    retrieval: str = "recipe",
    fold: int | None = None,
    experiment: str = "ranker",
    holdout: str | None = None,
) -> dict:
    """``fold`` None: the experiment's own recipe (it trains on every val user, validates on none);
    a fold: that tenth of the val users validates (cross-validation), unless the variant sets its
    own ``data.holdout_fraction``. ``holdout``: a holdout model's checkpoint, whose lists train
    (and, by fold, validate) the ranker instead of the served model's val lists."""
    overrides = [f"experiment={experiment}", f"retrieval_ckpt={ckpt}", f"seed={seed}", *VARIANTS[name]]
    if holdout is not None:
        overrides.append(f"holdout_ckpt={holdout}")
    else:  # the earlier protocol: the served model's val lists, embeddings unless the variant drops them
        overrides.append("holdout_ckpt=null")
        if not any(o.startswith("model.use_embeddings=") for o in VARIANTS[name]):
            overrides.append("model.use_embeddings=true")
    if fold is not None:
        if not any(o.startswith("data.holdout_fraction=") for o in VARIANTS[name]):
            overrides.append("data.holdout_fraction=0.1")
        overrides.append(f"data.holdout_fold={fold}")
    tag = name if retrieval == "recipe" else f"{retrieval}_{name}"
    tag = tag if experiment == "ranker" else f"{experiment.removeprefix('ranker_')}_{tag}"
    # the holdout model's directory names it: rankers on two holdout models never share a directory
    tag = tag if holdout is None else f"{Path(holdout).parents[2].name}_{tag}"
    suffix = "_all" if fold is None else (f"_fold{fold}" if fold else "")
    out = workdir / f"ranker_{tag}_seed{seed}{suffix}"
    metrics, wall, command = run_train(overrides, out, REPO)
    return {
        "name": name,
        "seed": seed,
        "fold": fold,
        "wall_s": wall,
        "metrics": metrics,
        "command": command,
        "out": out,
    }


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _fold_label(fold: int | None) -> str:
    return "all" if fold is None else str(fold)  # all: the refit, every val user trains


def val_ratio_by_epoch(out: Path) -> list[float]:
    """The run's validation two-stage ndcg@10 over retrieval's on the same users, per epoch."""
    import pandas as pd

    newest = max(out.glob("csv/**/metrics.csv"), key=lambda f: f.stat().st_mtime)  # a rerun adds a version
    log = pd.read_csv(newest)
    val = log.dropna(subset=["val/ndcg@10"]).groupby("epoch").last()
    return (val["val/ndcg@10"] / val["val/retrieval_ndcg@10"]).tolist()


def pooled_curves(rows: list[dict], variants: list[str]) -> list[str]:
    """Validation ratio by epoch, mean over runs (seeds × folds), for variants whose runs all ran
    the same epochs (no early stopping): what a fixed epoch count is chosen from. The one-standard-
    error pick is the fewest epochs whose mean is within one standard error of the peak's."""
    lines = []
    for name in variants:
        curves = [val_ratio_by_epoch(r["out"]) for r in rows if r["name"] == name and r["fold"] is not None]
        if len(curves) < 2 or len({len(c) for c in curves}) != 1:
            continue
        by_epoch = list(zip(*curves, strict=True))
        mean = [statistics.mean(values) for values in by_epoch]
        best = max(range(len(mean)), key=mean.__getitem__)
        se = statistics.stdev(by_epoch[best]) / len(curves) ** 0.5
        one_se = next(e for e, m in enumerate(mean) if m >= mean[best] - se)
        cells = " ".join(f"{m:.3f}" for m in mean)
        lines.append(
            f"- {name} ({len(curves)} runs): {cells} (peak at epoch {best + 1} of {len(mean)}, "
            f"standard error {se:.3f}; fewest epochs within one standard error: {one_se + 1})"
        )
    if lines:
        lines = [
            "",
            "Validation two-stage / retrieval ndcg@10 by epoch (1, 2, …), mean over runs:",
            "",
            *lines,
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--retrieval-workdir", default=f"{STUDIES}/ml100k")
    parser.add_argument(
        "--retrieval-variant",
        default="recipe",
        help="the study_ml100k.py variant whose checkpoints are re-ranked",
    )
    parser.add_argument(
        "--folds",
        default="",
        help="which tenths of the val users validate (data.holdout_fold), e.g. 0,1,2,3,4 to cross-validate; "
        "none: the experiment's recipe, trained on every val user",
    )
    parser.add_argument(
        "--experiment",
        default="ranker",
        help="the ranker experiment the variants override",
    )
    parser.add_argument(
        "--holdout-workdir",
        default=None,
        help="train each ranker on a holdout model's lists: <dir>/<retrieval-variant>_seed<seed>/metrics.json "
        "of the retrieval run with split.skip_last=2 (variants must read features only)",
    )
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--title", default="ML-100K two-stage study")
    args = parser.parse_args()
    workdir = repo_path(args.retrieval_workdir)
    seeds = [int(s) for s in args.seeds.split(",")]
    ckpts = {seed: retrieval_checkpoint(workdir, seed, args.retrieval_variant) for seed in seeds}
    holdouts = {
        seed: retrieval_checkpoint(repo_path(args.holdout_workdir), seed, args.retrieval_variant)[0]
        if args.holdout_workdir
        else None
        for seed in seeds
    }
    folds = [int(f) for f in args.folds.split(",")] if args.folds else [None]
    rows = []
    for name in args.variants.split(","):
        for seed, fold in ((s, f) for s in seeds for f in folds):
            r = run_ranker(
                name,
                seed,
                ckpts[seed][0],
                workdir,
                args.retrieval_variant,
                fold,
                args.experiment,
                holdouts[seed],
            )
            m = r["metrics"]
            print(
                f"{name:22s} seed={seed} fold={_fold_label(fold)} two_stage ndcg@10={m['two_stage/ndcg@10']:.4f} "
                f"retrieval ndcg@10={m['retrieval/ndcg@10']:.4f} "
                f"ratio={m['two_stage/ndcg@10'] / m['retrieval/ndcg@10']:.3f} | {r['wall_s']:.0f}s",
                flush=True,
            )
            rows.append(r)
    lines = [
        f"Protocol: ML-100K, all ratings, `experiment={args.experiment}` with each variant's overrides, "
        f"retrieval variant `{args.retrieval_variant}` of study_ml100k.py "
        "(stable leave-one-out unless it says `global_temporal`); K = 200 retrieved per user over the full catalog",
        "(seen items excluded, the target never injected); ranker trained on val-split lists: with a fold, 90% of "
        "the users (80% for `train_80`), validated on the rest (**val ndcg@10**: their two-stage ndcg@10 at the "
        "tested epoch, the last one unless the variant early-stops; what decides defaults); fold `all`: every "
        "val user trains (the default's refit) and nothing validates; "
        f"tested on the test split. {os.environ.get('OMP_NUM_THREADS', 'all')} CPU thread(s) a run."
        + (
            " **Holdout protocol**: the lists that train and validate each ranker are the holdout model's "
            f"(`{args.holdout_workdir}`, the retrieval run with split.skip_last=2 and its config's "
            "split.test_targets) for its test targets, "
            "the served model's last training targets; test stays the served model's."
            if args.holdout_workdir
            else ""
        )
        + " val ratio: val two-stage / val retrieval ndcg@10 on the same validating users.",
        "",
        "| ranker | seed | fold | val ndcg@10 | val ratio | two_stage ndcg@10 | retrieval ndcg@10 | ratio | "
        "two_stage recall@10 | retrieval recall@10 | ranking auc | ranking ndcg@10 | as-of features | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m = r["metrics"]
        val_ratio = val_ratio_by_epoch(r["out"])[-1] if r["fold"] is not None else None
        lines.append(
            f"| {r['name']} | {r['seed']} | {_fold_label(r['fold'])} | {_cell(m['val_best'])} | {_cell(val_ratio)} | "
            f"{m['two_stage/ndcg@10']:.4f} | "
            f"{m['retrieval/ndcg@10']:.4f} | {m['two_stage/ndcg@10'] / m['retrieval/ndcg@10']:.3f} | "
            f"{m['two_stage/recall@10']:.4f} | {m['retrieval/recall@10']:.4f} | {m['ranking/auc']:.4f} | "
            f"{m['ranking/ndcg@10']:.4f} | {m.get('features_as_of_request', '-')} | {r['wall_s']:.0f} |"
        )
    lines += [
        "",
        "Mean over runs (seeds × folds):",
        "",
        "| ranker | val ndcg@10 (± sd) | two_stage ndcg@10 (± sd) | retrieval ndcg@10 | ratio of means |",
        "|---|---|---|---|---|",
    ]
    for name in args.variants.split(","):
        ms = [r["metrics"] for r in rows if r["name"] == name]
        val = [m["val_best"] for m in ms if m["val_best"] is not None]
        two = [m["two_stage/ndcg@10"] for m in ms]
        ret = [m["retrieval/ndcg@10"] for m in ms]
        sd, val_sd = (statistics.stdev(x) if len(x) > 1 else 0.0 for x in (two, val))
        val_cell = f"{statistics.mean(val):.4f} ± {val_sd:.4f}" if val else "–"
        lines.append(
            f"| {name} | {val_cell} | {statistics.mean(two):.4f} ± {sd:.4f} | "
            f"{statistics.mean(ret):.4f} | {statistics.mean(two) / statistics.mean(ret):.3f} |"
        )
    lines += pooled_curves(rows, args.variants.split(","))
    lines += ["", "Commands:", ""] + [
        f"- {r['name']} (seed {r['seed']}, fold {_fold_label(r['fold'])}): `{r['command']}`" for r in rows
    ]
    lines += [f"- retrieval checkpoints: `{ckpts[s][0]}`" for s in seeds]
    lines += [f"- holdout checkpoints: `{holdouts[s]}`" for s in seeds if holdouts[s]]
    report(args.title, "\n".join(lines), record=not args.no_record)


if __name__ == "__main__":
    main()
