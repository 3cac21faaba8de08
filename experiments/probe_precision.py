"""What `precision=auto` resolves to on this CPU, and why: bf16 vs fp32 matmul speed, natively
and under the AVX2 emulation (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``), each in a
fresh process (oneDNN reads the variables once).

    python experiments/probe_precision.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments._measure import report

REPO = Path(__file__).resolve().parents[1]
EMULATE_AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
CHILD = """
import json, time, torch
from recsys.utils.precision import native_bf16, resolve_text_precision, resolve_trainer_precision
a, b = torch.randn(1024, 256), torch.randn(256, 4096)
def best(fn, n=3):
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return min(times)
fp32 = best(lambda: a @ b)
def bf16():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a @ b
print(json.dumps({"native_bf16": native_bf16("cpu"), "trainer": resolve_trainer_precision("auto", "cpu"),
                  "text": resolve_text_precision("auto", "cpu"), "fp32_s": fp32, "bf16_s": best(bf16, 1),
                  "threads": torch.get_num_threads()}))
"""


def probe(extra_env: dict[str, str]) -> dict:
    env = {**os.environ, **extra_env}
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    flags = set(Path("/proc/cpuinfo").read_text().split()) if Path("/proc/cpuinfo").exists() else set()
    isa = (
        ", ".join(sorted(f for f in flags if f.startswith(("avx512_bf16", "amx", "avx512f", "avx2")))) or "?"
    )
    lines = [
        f"CPU flags: {isa}. Matmul 1024×256 @ 256×4096, best of 3 (bf16: one timed call after a warm-up).",
        "",
        "| environment | oneDNN bf16 | trainer auto | text auto | fp32 s | bf16 s | bf16 / fp32 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, env in (("native", {}), ("AVX2 emulation", EMULATE_AVX2)):
        r = probe(env)
        lines.append(
            f"| {name} | {r['native_bf16']} | {r['trainer']} | {r['text']} | {r['fp32_s']:.4f} | "
            f"{r['bf16_s']:.3f} | {r['bf16_s'] / r['fp32_s']:.0f}× |"
        )
    report("precision=auto on this CPU (issue 14)", "\n".join(lines))


if __name__ == "__main__":
    main()
