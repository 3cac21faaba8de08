"""Serving cut off from training (issue 16): same recommendations, lighter server, old bundles refused.

Exports the same checkpoints twice, with a checkout of the code *before* the split
(``--before-root``) and with this one, then in fresh processes (each with its own code) loads the
bundle the way a server worker does (import the serving API, ``InferenceGraph.from_bundle``) and
records: time to import and load, peak RSS, which training libraries got imported, and the top-10
of the first ``--users`` known users. Also loads the old bundle with the new code (format check).

    python experiments/check_serving_split.py --before-root ../main-before \\
        --retrieval-ckpt RUN/checkpoints/epoch_034.ckpt --ranker-ckpt RANKER/checkpoints/epoch_003.ckpt
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import report

REPO = Path(__file__).resolve().parents[1]
PROBE = """
import json, resource, sys, time
t0 = time.perf_counter()
from recsys.serving.api import build_server
from recsys.serving.graph import InferenceGraph
imported = time.perf_counter() - t0
try:
    graph = InferenceGraph.from_bundle(sys.argv[1])
except Exception as err:
    print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
    raise SystemExit(0)
loaded = time.perf_counter() - t0
users = list(graph.bundle.users["user_id"][: int(sys.argv[2])])
tops = [[x["item_id"] for x in graph.recommend(user_id=u, top_k=10)["items"]] for u in users]
stack = sorted({m.split(".")[0] for m in sys.modules} & {"lightning", "torchmetrics", "hydra"})
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"import_s": imported, "load_s": loaded, "rss_mib": rss, "stack": stack, "tops": tops}))
"""


def export(root: Path, bundle: Path, args) -> None:
    cmd = [
        sys.executable,
        "-m",
        "recsys.export",
        f"retrieval_ckpt={args.retrieval_ckpt}",
        f"ranker_ckpt={args.ranker_ckpt}",
        "index=flat",  # exact search: both bundles must rank identically
        f"bundle_dir={bundle}",
        f"paths.root_dir={bundle.parent}",
    ]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"export with {root} failed:\n{out.stderr[-3000:]}")


def probe(root: Path, bundle: Path, users: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(bundle), str(users)], cwd=root, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(f"probe with {root} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before-root", required=True, type=Path)
    parser.add_argument("--retrieval-ckpt", required=True)
    parser.add_argument("--ranker-ckpt", required=True)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="serving-split-"))
    bundles = {"before": work / "before" / "bundle", "after": work / "after" / "bundle"}
    export(args.before_root.resolve(), bundles["before"], args)
    export(REPO, bundles["after"], args)
    runs = {
        name: [probe(root, bundles[name], args.users) for _ in range(args.repeats)]
        for name, root in (("before", args.before_root.resolve()), ("after", REPO))
    }
    old_with_new = probe(REPO, bundles["before"], args.users)
    same = runs["before"][0]["tops"] == runs["after"][0]["tops"]
    lines = [
        f"Checkpoints: `{args.retrieval_ckpt}`, `{args.ranker_ckpt}`; both bundles exported with `index=flat`. "
        f"Each probe is a fresh process that imports the serving API, loads the bundle "
        f"(`InferenceGraph.from_bundle`) and recommends for {args.users} known users; best of {args.repeats}.",
        "",
        "| code | import s | import + load s | peak RSS MiB | training libraries imported |",
        "|---|---|---|---|---|",
    ]
    for name, results in runs.items():
        best = min(results, key=lambda r: r["load_s"])
        lines.append(
            f"| {name} | {min(r['import_s'] for r in results):.2f} | {best['load_s']:.2f} | "
            f"{min(r['rss_mib'] for r in results):.0f} | {', '.join(best['stack']) or 'none'} |"
        )
    lines += [
        "",
        f"Top-10 of the first {args.users} users, before vs after: **{'identical' if same else 'DIFFERENT'}**.",
        f"The bundle exported before, loaded by this code: `{old_with_new.get('error', 'loaded')}`.",
    ]
    report(
        "Serving cut off from training: before/after (issue 16)", "\n".join(lines), record=not args.no_record
    )
    if not same:
        raise SystemExit("top-10 lists differ")


if __name__ == "__main__":
    main()
