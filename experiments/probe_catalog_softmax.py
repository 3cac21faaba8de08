"""The recipe's exact softmax on a real batch: the blocked kernel against the unfused loss.

Takes the recipe's (``experiment=two_tower``) batches of a prepared dataset, runs the user tower
once per batch, and times forward + backward of the loss over the whole catalog with each row's
earlier items masked, two ways, interleaved: ``exact_softmax_loss`` (``catalog_cross_entropy``:
row blocks, the gradient written out) and ``all_positions_loss`` with the catalog as its shared
columns (the same value through the [positions × items] logits, ``F.logsumexp`` and autograd).
Then whole training steps (forward, backward, AdamW) with the recipe's loss. Under the recipe's
precision (``auto``: bf16 autocast where the CPU has it) or fp32 (``--fp32``).

    python experiments/probe_catalog_softmax.py [--data sports] [--batches 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra
import torch

from experiments._measure import report
from experiments.benchmark import cpu_info
from recsys.data.derived_settings import prepared_datamodule
from recsys.models.losses import all_positions_loss, earlier_items, exact_softmax_loss
from recsys.utils.precision import native_bf16
from tests.conftest import compose_config


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def blocked_loss(user, columns, target_ids, catalog, catalog_ids, seen, autocast) -> None:
    with autocast():
        exact_softmax_loss(user, columns, catalog, 1.0, seen_ids=seen, catalog_ids=catalog_ids).backward()


def unfused_loss(user, columns, target_ids, catalog, catalog_ids, seen, autocast) -> None:
    with autocast():
        loss = all_positions_loss(
            user, catalog[columns], target_ids, catalog, catalog_ids, 1.0, seen_ids=seen
        )
        loss.backward()


def training_step(model, optimizer, batch, autocast) -> None:
    with autocast():
        model.training_step(batch, 0).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="sports")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fp32", action="store_true", help="no autocast, whatever the CPU")
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = compose_config("train", ["experiment=two_tower", f"data={args.data}", "paths.output_dir=logs/x"])
    dm, _ = prepared_datamodule(cfg, set)
    dm.setup("fit")
    model = hydra.utils.instantiate(cfg.model, dataset_dir=str(Path(dm.processed_dir).resolve()))
    model.log = lambda *a, **k: None  # no trainer here
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = iter(dm.train_dataloader())
    batches = [next(loader) for _ in range(args.batches + 3)]
    bf16 = not args.fp32 and native_bf16()
    catalog_ids = model.loss.pool.ids

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    fused, unfused, steps, positions = [], [], [], []
    for i, batch in enumerate(batches):
        history, lengths, targets = batch["history"], batch["lengths"], batch["targets"]
        valid = torch.arange(targets.shape[1])[None, :] < lengths[:, None]
        target_ids = targets[valid]
        with autocast():
            vectors = model.item_tower(catalog_ids)
            user = model.user_tower.forward_all(model.item_tower(history), lengths).detach()
        user.requires_grad_(True)
        catalog = vectors.detach().requires_grad_(True)
        seen = earlier_items(history)[valid]
        columns = model.loss.pool.column[target_ids]

        loss_inputs = (user, columns, target_ids, catalog, catalog_ids, seen)
        times = (
            timed(blocked_loss, *loss_inputs, autocast),
            timed(unfused_loss, *loss_inputs, autocast),
            timed(training_step, model, optimizer, batch, autocast),
        )
        if i >= 3:  # warm-up
            for store, t in zip((fused, unfused, steps), times, strict=True):
                store.append(t * 1e3)
            positions.append(len(target_ids))

    med = statistics.median
    cpu = cpu_info()
    body = "\n".join(
        [
            f"Dataset `{args.data}`, the recipe's batches ({med(positions):.0f} positions a batch (median) × "
            f"{len(catalog_ids):,} items), {'bf16 autocast' if bf16 else 'fp32'}, {args.threads} torch "
            f"thread(s), CPU {cpu['model']} ({', '.join(cpu['flags'])}, {cpu['cores']} cores); medians over {args.batches} batches after 3 warm-up.",
            "",
            "| what | ms |",
            "|---|---|",
            f"| loss forward + backward, unfused (`all_positions_loss` over the catalog) | {med(unfused):.1f} |",
            f"| loss forward + backward, blocked (`exact_softmax_loss`) | {med(fused):.1f} |",
            f"| a whole training step with the blocked loss (forward, backward, AdamW) | {med(steps):.1f} |",
        ]
    )
    report("Exact softmax: blocked against unfused (issue 30)", body, record=not args.no_record)


if __name__ == "__main__":
    main()
