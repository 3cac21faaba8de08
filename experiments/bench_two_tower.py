"""Two-tower training throughput (samples/s) per user encoder, and the DataModule alone.

Times optimizer steps (forward + backward + AdamW) on real batches of a prepared dataset, after
warm-up, with a fixed thread count.

    python experiments/bench_two_tower.py [--data movielens_100k] [--steps 20] [--batch 512]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra
import torch

from experiments._measure import report
from tests.conftest import compose_config


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="movielens_100k")
    parser.add_argument("--encoders", default="lstm,gru,sasrec")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--history", type=int, default=50)
    parser.add_argument("--negatives", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time the LSTM with model.compile=true")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*self.log.*")

    rows = []
    runs = [(e, False) for e in args.encoders.split(",")] + ([("lstm", True)] if args.compile else [])
    for encoder, compiled in runs:
        cfg = compose_config(
            "train",
            [
                "experiment=two_tower",
                f"data={args.data}",
                f"model/user_encoder={encoder}",
                f"data.batch_size={args.batch}",
                f"data.max_history={args.history}",
                f"model.num_global_negatives={args.negatives}",
                "paths.output_dir=logs/recsys-bench-tt",
                f"model.compile={str(compiled).lower()}",
            ],
        )
        dm = hydra.utils.instantiate(cfg.data)
        dm.prepare_data()
        dm.setup("fit")
        model = hydra.utils.instantiate(cfg.model, dataset_dir=str(dm.processed_dir))
        opt = model.configure_optimizers()["optimizer"]
        loader = iter(dm.train_dataloader())
        batches = [next(loader) for _ in range(args.warmup + args.steps)]
        t0 = time.perf_counter()
        for _ in range(3):
            for _ in dm.train_dataloader():
                pass
        data_rate = 3 * len(dm.splits["train"]) / (time.perf_counter() - t0)
        model.train()
        t_start = time.perf_counter()
        for i, batch in enumerate(batches):
            if i == args.warmup:
                t0 = time.perf_counter()
                warmup_s = t0 - t_start
            opt.zero_grad(set_to_none=True)
            loss = model.training_step(batch, i)  # without a trainer, self.log is a no-op
            loss.backward()
            opt.step()
        rate = args.steps * args.batch / (time.perf_counter() - t0)
        name = f"{encoder} + torch.compile" if compiled else encoder
        rows.append((name, rate, data_rate, warmup_s))
        print(
            f"{name}: {rate:,.0f} samples/s (train step), DataModule alone {data_rate:,.0f} rows/s",
            flush=True,
        )

    body = "\n".join(
        [
            f"Dataset `{args.data}`, batch {args.batch}, history ≤ {args.history}, {args.negatives} global negatives, "
            f"d=256, dense AdamW, fp32, {args.threads} torch threads; {args.steps} timed steps after {args.warmup} warm-up.",
            "",
            "| user encoder | train samples/s | DataModule alone rows/s | warm-up s (incl. compile) |",
            "|---|---|---|---|",
            *[f"| {e} | {r:,.0f} | {d:,.0f} | {w:.1f} |" for e, r, d, w in rows],
        ]
    )
    report("Two-tower training throughput (issue 3)", body, record=not args.no_record)


if __name__ == "__main__":
    main()
