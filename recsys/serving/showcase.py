"""python -m recsys.serving.showcase [BUNDLE]: a few users' recent titles and their recommendations."""

from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table

from recsys.serving.graph import InferenceGraph


def showcase(bundle: str, n_users: int = 3, seed: int = 0, console: Console | None = None) -> list[dict]:
    console = console or Console()
    graph = InferenceGraph.from_bundle(bundle, threads=None)
    users = graph.bundle.users["user_id"].astype(str).to_numpy()
    picked = np.random.default_rng(seed).choice(len(users), min(n_users, len(users)), replace=False)
    shown = []
    for row in picked:
        user_id = users[row]
        history = graph.history(user_id, limit=5)["items"]
        recs = graph.recommend(user_id=user_id, top_k=10)
        table = Table(title=f"user {user_id} — strategy: {recs['strategy']}", show_lines=False)
        table.add_column("last watched (oldest first)")
        table.add_column("#", justify="right")
        table.add_column("recommended")
        table.add_column("score", justify="right")
        for i in range(10):
            seen = history[i]["title"] if i < len(history) else ""
            rec = recs["items"][i] if i < len(recs["items"]) else None
            table.add_row(
                seen,
                str(i + 1) if rec else "",
                rec["title"] if rec else "",
                f"{rec['score']:.3f}" if rec else "",
            )
        console.print(table)
        shown.append({"user_id": user_id, "history": history, "recommendations": recs})
    console.print(
        f"Serve this bundle:  make serve BUNDLE={bundle}   (or: python -m recsys.serve bundle={bundle})"
    )
    return shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bundle", nargs="?", default="artifacts/demo/bundle")
    parser.add_argument("--users", type=int, default=3)
    args = parser.parse_args()
    showcase(args.bundle, args.users)


if __name__ == "__main__":
    main()
