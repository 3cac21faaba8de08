"""python -m recsys.serve bundle=DIR [port=8000] [host=127.0.0.1]: serve a bundle with LitServe."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from recsys.utils.hydra_helpers import CONFIG_PATH, exit_on_user_error


def serve(cfg: DictConfig) -> None:
    from recsys.serving.api import build_server
    from recsys.serving.cpu_affinity import pin_http_side
    from recsys.serving.process_setup import use_hugepage_malloc

    bundle = Path(cfg.bundle)
    if not (bundle / "manifest.json").is_file():
        print(
            f"No serving bundle at {bundle}.\n"
            "Make one with `make demo` (small synthetic data, ~10 min on 2 cores), or export your own:\n"
            "  python -m recsys.export retrieval_ckpt=<two-tower ckpt> ranker_ckpt=<ranker ckpt> "
            "bundle_dir=DIR\n"
            "then `make serve BUNDLE=DIR`.",
            file=sys.stderr,
        )
        raise SystemExit(1)
    use_hugepage_malloc()
    worker_cpus = pin_http_side(cfg.workers, cfg.threads) if cfg.pin_cpus else None
    server = build_server(
        bundle,
        max_top_k=cfg.max_top_k,
        min_history=cfg.min_history,
        workers=cfg.workers,
        threads=cfg.threads,
        standby_workers=cfg.standby_workers,
        timeout=cfg.timeout,
        max_payload_bytes=cfg.max_payload_bytes,
        worker_cpus=worker_cpus,
        restart_workers=cfg.restart_workers,
        drain_s=cfg.drain_s,
        admin_token=cfg.admin_token,
    )
    server.run(host=cfg.host, port=cfg.port, generate_client_file=False, log_level=cfg.log_level)
    code, message = server.outcome()  # one line; non-zero when a worker failure stopped it
    print(f"recsys.serve: {message}", file=sys.stderr)
    if code:
        raise SystemExit(code)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="serve")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    serve(cfg)


if __name__ == "__main__":
    main()
