"""The whole pipeline at the seed's scale (`data=synthetic_full`: 434K items, ~101K users) on this
machine, each stage in its own process with its wall time and peak RSS.

Stages: generate + prepare (MiniLM bf16 text embeddings of the whole catalog, resumable through
the embedding cache) → text-encoder speed (fp32 vs bf16, 1 vs 2 processes, same texts) → DataModule alone →
training step throughput (a naive step vs ours, same batch, same threads) → two-tower training
for a bounded time → full-catalog test evaluation of every user → export with HNSW → serving
benchmark. Finished stages are kept in ``<workdir>/stages.json``: a rerun skips them (``--redo``
to run again), so an interrupted run continues.

    python experiments/bench_scale.py [--workdir logs/recsys-scale] [--train-minutes 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import report

REPO = Path(__file__).resolve().parents[1]
THREADS = 2


def run_stage(argv: list[str], log: Path) -> dict:
    """Run ``python argv…`` to completion: wall seconds and the child's own peak RSS (wait4)."""
    t0 = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, *argv], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"stage failed ({proc.returncode}): python {' '.join(argv)}\n see {log}")
    return {"wall_s": round(wall, 1), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2)}


def last_json(log: Path) -> dict:
    for line in reversed(log.read_text().splitlines()):
        if line.startswith("{") and line.endswith("}"):
            return json.loads(line)
    return {}


# ----------------------------------------------------------------------------- child stages
def compose_train(workdir: Path, overrides: list[str]):
    from tests.conftest import compose_config

    return compose_config("train", [*overrides, f"paths.root_dir={workdir}", "paths.output_dir=logs/unused"])


def child_prepare(workdir: Path, overrides: list[str]) -> None:
    """What ``train`` does first: generate the raw files, prepare, embed every item's text."""
    import hydra

    hydra.utils.instantiate(compose_train(workdir, overrides).data).prepare_data()


def child_encode_speed(workdir: Path, n: int, overrides: list[str]) -> None:
    """MiniLM on the same ``n`` catalog texts: fp32 (the default encoder) against bf16, each in one
    process of 2 threads and in 2 processes of 1 thread; cosine of each to fp32."""
    import numpy as np
    import pyarrow.parquet as pq
    import torch
    from hydra.utils import instantiate

    from tests.conftest import compose_config

    torch.set_num_threads(THREADS)
    processed = Path(compose_train(workdir, overrides).data.processed_dir)
    items = pq.read_table(processed / "items.parquet", columns=["text"])
    texts = items["text"].slice(0, n).to_pylist()
    out: dict = {"n_texts": n, "mean_chars": round(float(np.mean([len(t) for t in texts])), 1)}
    vectors = {}
    for precision, processes in (("fp32", 1), ("bf16", 1), ("fp32", 2), ("bf16", 2)):
        name = f"{precision}_x{processes}"
        cfg = compose_config(
            "prepare",
            [
                "text_encoder=minilm",
                f"text_encoder.precision={precision}",
                f"text_encoder.num_processes={processes}",
            ],
        )
        encoder = instantiate(cfg.text_encoder)
        encoder.encode(texts[-256:])  # load (and start the processes) + warm-up
        t0 = time.perf_counter()
        vectors[name] = encoder.encode(texts)
        out[f"{name}_items_per_s"] = round(n / (time.perf_counter() - t0), 1)
        cos = (vectors["fp32_x1"] * vectors[name]).sum(axis=1)
        out[f"{name}_cosine_mean"], out[f"{name}_cosine_min"] = float(cos.mean()), float(cos.min())
        del encoder
    # the prepare stage's path (bf16, 2 processes) against the default encoder (fp32, 1 process)
    out["speedup"] = round(out["bf16_x2_items_per_s"] / out["fp32_x1_items_per_s"], 2)
    out["bf16_speedup_same_layout"] = round(out["bf16_x2_items_per_s"] / out["fp32_x2_items_per_s"], 2)
    print(json.dumps(out))


def child_steps(workdir: Path, steps: int, overrides: list[str]) -> None:
    """DataModule alone, then a naive training step vs ours on the same batches."""
    import hydra
    import torch

    torch.set_num_threads(THREADS)
    cfg = compose_train(workdir, overrides)
    dm = hydra.utils.instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    loader = iter(dm.train_dataloader())
    t0 = time.perf_counter()
    batches = [next(loader) for _ in range(steps + 2)]
    rows = sum(len(b["target"]) for b in batches)
    out: dict = {
        "datamodule_rows_per_s": round(rows / (time.perf_counter() - t0), 0),
        "batch": cfg.data.batch_size,
    }
    dataset_dir = str(Path(cfg.data.processed_dir).resolve())

    def naive_step(model, batch, opt):
        # dense table + AdamW over all of it; every history position through the item tower
        tower = model.item_tower
        negatives = model.loss.sample()
        hist = tower(batch["history"].reshape(-1)).view(*batch["history"].shape, -1)
        user = model.user_tower(hist, batch["lengths"])
        pos, neg = tower(batch["target"]), tower(negatives)
        logits = user @ torch.cat([pos, neg]).T / model.hparams.temperature
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(user)))
        opt.zero_grad()
        loss.backward()
        opt.step()

    def our_step(model, batch, opt):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.training_step(batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()

    full_width = {**cfg.model.user_encoder, "length_groups": 1}  # every row padded to the batch's longest
    variants = {
        "naive": ({"sparse_embeddings": False, "user_encoder": full_width}, naive_step),
        "ours": ({"sparse_embeddings": True}, our_step),
    }
    for name, (kwargs, step) in variants.items():
        from omegaconf import OmegaConf

        from recsys.models.two_tower_module import TwoTowerModule

        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        params = {k: v for k, v in model_cfg.items() if not k.startswith("_")}
        params.update(kwargs, dataset_dir=dataset_dir)
        model = TwoTowerModule(**params)
        model.log = lambda *a, **k: None  # no trainer attached
        opt = model.configure_optimizers()["optimizer"]
        for b in batches[:2]:
            step(model, b, opt)
        t0 = time.perf_counter()
        for b in batches[2:]:
            step(model, b, opt)
        out[f"{name}_samples_per_s"] = round(
            sum(len(b["target"]) for b in batches[2:]) / (time.perf_counter() - t0), 1
        )
        del model, opt
    out["speedup"] = round(out["ours_samples_per_s"] / out["naive_samples_per_s"], 2)
    print(json.dumps(out))


# ----------------------------------------------------------------------------- parent
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default="logs/recsys-scale")
    parser.add_argument("--train-minutes", type=int, default=10)
    parser.add_argument("--encode-sample", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--redo", default="", help="comma-separated stages to run again")
    parser.add_argument("--experiment", default="two_tower_full")
    parser.add_argument(
        "--ranker-ckpt",
        help="a ranker checkpoint of the same embedding dim to serve with (measures its cost; "
        "no ranker: the bundle serves retrieval order)",
    )
    parser.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides for every stage")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    overrides = [f"experiment={args.experiment}", *args.overrides]
    if args.child == "prepare":
        return child_prepare(workdir, overrides)
    if args.child == "encode_speed":
        return child_encode_speed(workdir, args.encode_sample, overrides)
    if args.child == "steps":
        return child_steps(workdir, args.steps, overrides)

    workdir.mkdir(parents=True, exist_ok=True)
    state_path = workdir / "stages.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    redo = set(filter(None, args.redo.split(",")))
    common = [*overrides, f"paths.root_dir={workdir}"]
    passed = ["--workdir", str(workdir), "--experiment", args.experiment, "--overrides", *args.overrides]
    quiet = ["trainer.enable_progress_bar=false", "~callbacks.rich_progress_bar"]
    train_dir, bundle = workdir / "train", workdir / "bundle"
    cfg = compose_train(workdir, overrides)
    processed = Path(cfg.data.processed_dir)
    me = str(Path(__file__).resolve())
    stages = {
        "prepare": [me, "--child", "prepare", *passed],
        "encode_speed": [
            me,
            "--child",
            "encode_speed",
            *passed[:4],
            "--encode-sample",
            str(args.encode_sample),
            *passed[4:],
        ],
        "steps": [me, "--child", "steps", *passed[:4], "--steps", str(args.steps), *passed[4:]],
        "train": [
            "-m",
            "recsys.train",
            *common,
            *quiet,
            f"paths.output_dir={train_dir}",
            "test=false",
            f"trainer.max_time=00:00:{args.train_minutes:02d}:00",
        ],
        "evaluate": [
            "-m",
            "recsys.evaluate",
            *[o for o in common if "callbacks" not in o],
            f"ckpt_path={train_dir}/checkpoints/last.ckpt",
            f"paths.output_dir={workdir}/evaluate",
            "trainer.enable_progress_bar=false",
        ],
        "export": [
            "-m",
            "recsys.export",
            f"retrieval_ckpt={train_dir}/checkpoints/last.ckpt",
            "index=hnsw",
            f"bundle_dir={bundle}",
            f"paths.root_dir={workdir}",
            *([f"ranker_ckpt={args.ranker_ckpt}"] if args.ranker_ckpt else []),
        ],
        "serving": [str(REPO / "experiments" / "bench_serving.py"), "--bundle", str(bundle), "--no-record"],
    }
    for name, argv in stages.items():
        if name in state and name not in redo:
            print(f"{name}: done before ({state[name]['wall_s']} s), skipped")
            continue
        log = workdir / f"{name}.log"
        print(f"{name}: python {' '.join(shlex.quote(a) for a in argv)}", flush=True)
        result = run_stage(argv, log)
        result["command"] = "python " + " ".join(shlex.quote(a) for a in argv)
        result["output"] = last_json(log) if name in ("encode_speed", "steps") else {}
        if name == "prepare":
            manifest = json.loads((processed / "manifest.json").read_text())
            result["output"] = {k: manifest[k] for k in ("timings", "n_users", "n_catalog_items", "n_rows")}
        if name == "evaluate":
            metrics = json.loads((workdir / "evaluate/metrics.json").read_text())
            result["output"] = {
                k: metrics[k]
                for k in ("retrieval/recall@10", "retrieval/ndcg@10", "popularity/ndcg@10", "n_users")
            }
        if name == "serving":
            result["output"] = {"log_tail": log.read_text().splitlines()[-12:]}
        state[name] = result
        state_path.write_text(json.dumps(state, indent=1))
        print(f"{name}: {result['wall_s']} s, peak RSS {result['peak_rss_gib']} GiB", flush=True)

    lines = [
        f"`experiment={args.experiment}` {' '.join(args.overrides)}; {THREADS} CPU threads; every stage in its own process "
        "(peak RSS from wait4 of that process).",
        "",
        "| stage | wall s | peak RSS GiB | figures |",
        "|---|---|---|---|",
    ]
    for name, r in state.items():
        figures = r["output"] if name != "serving" else "see below"
        lines.append(f"| {name} | {r['wall_s']} | {r['peak_rss_gib']} | {json.dumps(figures)} |")
    lines += [
        "",
        "Serving benchmark output (tail):",
        "",
        "```",
        *state.get("serving", {}).get("output", {}).get("log_tail", []),
        "```",
        "",
        "Stage commands:",
        "",
    ]
    lines += [f"- {name}: `{r['command']}`" for name, r in state.items()]
    report("Seed-scale pipeline on one machine (issue 6)", "\n".join(lines), record=not args.no_record)


if __name__ == "__main__":
    main()
