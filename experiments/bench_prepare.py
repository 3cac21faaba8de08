"""Benchmark: synthetic_full generation + prepare, and ingest of a 2M-review Amazon-format file.

Each stage runs in its own process so its peak RSS is its own. Text embeddings use the
hashing encoder here (ingestion is what is measured; transformer encoding throughput is a
separate benchmark). Results are printed and appended to its topic log under experiments/log/.

    python experiments/bench_prepare.py [--workdir logs/recsys-bench] [--amazon-reviews 2000000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import report, run_child
from recsys.data.preparation import peak_rss_gib

REPO = Path(__file__).resolve().parents[1]
FULL_AMAZON_REVIEWS = 17_300_000
THREADS = 2


def _full_generator_config() -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from recsys.utils.hydra_helpers import CONFIG_PATH

    with initialize_config_dir(config_dir=CONFIG_PATH, version_base="1.3"):
        cfg = compose("prepare", overrides=["data=synthetic_full"])
    gen = OmegaConf.to_container(cfg.data.preparer.source.generator, resolve=True)
    gen.pop("_target_", None)
    return gen


def stage_generate(raw_dir: str, generator: dict) -> dict:
    from recsys.data.sources.synthetic_generator import SyntheticConfig, generate

    cfg = SyntheticConfig(**generator)
    written = generate(cfg, raw_dir, "Movies_and_TV.jsonl.gz", "meta_Movies_and_TV.jsonl.gz")
    size = sum(f.stat().st_size for f in Path(raw_dir).glob("*.gz"))
    return {"written": written, "gz_bytes": size, "config": asdict(cfg)}


def stage_prepare(raw_dir: str, out_dir: str) -> dict:
    from recsys.data.filtering import InteractionFilters
    from recsys.data.preparation import DatasetPreparer
    from recsys.data.sources.amazon import AmazonReviewsSource
    from recsys.data.text_embeddings import HashingTextEncoder

    preparer = DatasetPreparer(
        source=AmazonReviewsSource(raw_dir=raw_dir),
        processed_dir=out_dir,
        text_encoder=HashingTextEncoder(),
        filters=InteractionFilters(),
        progress=False,
    )
    m = preparer.run().manifest
    keys = (
        "n_users",
        "n_items_interacted",
        "n_catalog_items",
        "n_interactions",
        "n_rows",
        "timings",
        "peak_rss_gib_after",
    )
    return {k: m[k] for k in keys} | {
        "reviews_read": m["filter_stats"]["reviews_records_read"]
        + m["filter_stats"]["reviews_malformed_lines"]
    }


def child_main(args: argparse.Namespace) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    if args.stage == "generate":
        result = stage_generate(args.raw_dir, json.loads(args.generator))
    else:
        result = stage_prepare(args.raw_dir, args.out_dir)
    result["peak_rss_gib"] = peak_rss_gib()
    print(json.dumps(result))


def _row(name: str, gen: dict, prep: dict) -> tuple[str, dict]:
    reviews = prep["reviews_read"]
    t = prep["timings"]
    no_text = sum(v for k, v in t.items() if k != "text_embeddings")
    return name, {
        "reviews": reviews,
        "gen_s": gen["wall_s"],
        "gen_rss": gen["peak_rss_gib"],
        "read_s": t["read_interactions"],
        "read_rate": reviews / t["read_interactions"],
        "prepare_s": no_text,
        "prepare_rate": reviews / no_text,
        "prepare_rss": prep["peak_rss_gib"],
        "counts": (
            prep["n_users"],
            prep["n_catalog_items"],
            prep["n_items_interacted"],
            prep["n_interactions"],
        ),
        "timings": t,
        "rss_after": prep["peak_rss_gib_after"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default="logs/recsys-bench")
    parser.add_argument(
        "--amazon-reviews",
        default="1000000,2000000",
        help="sizes of Amazon-format files to ingest (two or more give a memory slope)",
    )
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to the topic log")
    parser.add_argument("--stage", choices=["generate", "prepare"], help=argparse.SUPPRESS)
    parser.add_argument("--raw-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out-dir", help=argparse.SUPPRESS)
    parser.add_argument("--generator", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        return child_main(args)

    work = Path(args.workdir)
    me = str(Path(__file__).resolve())
    # Amazon-format files: longer review texts (~60 words) so line sizes resemble real reviews.
    runs = {"synthetic_full": _full_generator_config()}
    for size in (int(s) for s in args.amazon_reviews.split(",")):
        n_users = max(1000, size // 50)
        runs[f"amazon_format_{size // 1000}k"] = {
            "n_items": max(2000, n_users * 2),
            "n_users": n_users,
            "mean_length": 50,
            "review_text_words": 60,
            "seed": 7,
        }
    rows = []
    for name, generator in runs.items():
        raw, out = work / name / "raw", work / name / "processed"
        print(f"[{name}] generating …", flush=True)
        gen = run_child(
            [me, "--stage", "generate", "--raw-dir", str(raw), "--generator", json.dumps(generator)], REPO
        )
        print(f"[{name}] preparing …", flush=True)
        prep = run_child([me, "--stage", "prepare", "--raw-dir", str(raw), "--out-dir", str(out)], REPO)
        rows.append(_row(name, gen, prep))
        print(json.dumps({"generate": gen | {"config": None}, "prepare": prep}, default=str), flush=True)

    lines = [
        f"Threads: {THREADS} (OMP/pyarrow on a 2-core machine). Prepare times exclude text encoding "
        "(hashing encoder used; MiniLM throughput is benchmarked separately).",
        "",
        "| dataset | raw reviews | generate s | generate peak RSS GiB | read s | read reviews/s | "
        "prepare s (no text) | prepare reviews/s | prepare peak RSS GiB | users / catalog / interacted / interactions |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['reviews']:,} | {r['gen_s']:.1f} | {r['gen_rss']:.2f} | {r['read_s']:.1f} | "
            f"{r['read_rate']:,.0f} | {r['prepare_s']:.1f} | {r['prepare_rate']:,.0f} | {r['prepare_rss']:.2f} | "
            + " / ".join(f"{c:,}" for c in r["counts"])
            + " |"
        )
    amazon = [r for n, r in rows if n.startswith("amazon_format")]
    name, largest = [(n, r) for n, r in rows if n.startswith("amazon_format")][-1]
    est_s = FULL_AMAZON_REVIEWS / largest["prepare_rate"]
    lines += [
        "",
        f"Extrapolation to the 17.3M-review Amazon Movies & TV file: prepare without text ≈ {est_s:,.0f} s "
        f"({est_s / 60:.1f} min; target ≤ 5 min), linear in reviews at the rate of `{name}`.",
    ]
    if len(amazon) >= 2:
        (r1, r2) = amazon[0], amazon[-1]
        slope = (r2["prepare_rss"] - r1["prepare_rss"]) / (r2["reviews"] - r1["reviews"])
        est_rss = r2["prepare_rss"] + slope * (FULL_AMAZON_REVIEWS - r2["reviews"])
        lines.append(
            f"Peak RSS ≈ {est_rss:.1f} GiB (target ≤ 8 GB), extrapolated along the measured slope "
            f"{slope * 1e6:.2f} GiB per million reviews between the two Amazon-format sizes."
        )
    lines += ["", "Phase timings (s) / peak RSS after each phase (GiB):"]
    lines += [f"- {n}: {r['timings']} / {r['rss_after']}" for n, r in rows]
    body = "\n".join(lines)
    report("Prepare benchmark (issue 2)", body, record=not args.no_record)


if __name__ == "__main__":
    main()
