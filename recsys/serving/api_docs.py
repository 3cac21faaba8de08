"""Write docs/API.md from live calls: every example is a real request and the server's real reply.

    python -m recsys.serving.api_docs [BUNDLE] [--out docs/API.md]

``tests/test_api_docs.py`` replays each example against a fresh server and checks the status
code and the response shape, so the document cannot drift from the code.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

ROUTES = [
    ("GET /health", 'Readiness: 503 `{"status": "loading"}` until the workers have loaded the bundle.'),
    (
        "GET /recommend/{user_id}",
        "Top-N for a known user (history from the bundle). `top_k` in 1..max_top_k.",
    ),
    ("POST /recommend", "Top-N for an anonymous history of item ids (oldest first)."),
    ("GET /user/{user_id}/history", "A known user's most recent items, oldest first (`limit`, default 50)."),
    ("GET /items/{item_id}", "Item metadata."),
    (
        "POST /items",
        "Add an item (admin): embedded from its `text` (default: built from title and categories) "
        "through the item tower's text path, searchable at once. Needs `Authorization: Bearer <token>` "
        "with the token of `serve.admin_token` or `RECSYS_ADMIN_TOKEN`: 401 without it, 403 when wrong or "
        "when no token is configured (catalog changes off), 409 for an id already in the catalog.",
    ),
    (
        "DELETE /items/{item_id}",
        "Delete an item (admin, same token): 204, and it is never recommended or listed again (histories "
        "keep it). Changes are kept in `catalog_changes.json` next to the bundle's files, replayed on "
        "restart; an edited or damaged change log stops the server at start like a tampered bundle.",
    ),
]
ADMIN_EXAMPLE_TOKEN = "docs-example-token"  # the examples run against a copy of the bundle

INTRO = """# HTTP API

Served by `make serve [BUNDLE=dir] [PORT=8000]` (LitServe; OpenAPI UI at `/docs`, schema at
`/openapi.json`). Every example below was produced by `python -m recsys.serving.api_docs` against
the demo bundle, and `tests/test_api_docs.py` replays each one against a live server, checking
the status code and the response shape.

Errors always have the body `{"detail": ...}` (except `/health`'s 503, `{"status": "loading"}`),
and `/openapi.json` lists every status each route can return with that body's schema:

| status | when |
|---|---|
| 400 | `POST /recommend`: the body could not be read |
| 401 | `LIT_SERVER_API_KEY` is set and the `X-API-Key` header is missing or wrong (every route); |
|  | `POST /items`, `DELETE /items/{item_id}`: no `Authorization: Bearer` token |
| 403 | `POST /items`, `DELETE /items/{item_id}`: wrong token, or catalog changes are off (no token set) |
| 404 | unknown `user_id` / `item_id` (the message names it) |
| 409 | `POST /items`: the `item_id` is already in the catalog |
| 413 | request body larger than `max_payload_bytes` (default 1 MB) |
| 422 | invalid input: `top_k` outside 1..`max_top_k` (default 100), a malformed or non-JSON body, |
|  | unknown body fields, more than 10,000 posted items, ids longer than 256 characters |
| 503 | no inference worker can answer: the bundle is loading, or a worker died while handling |
|  | the request; with `serve.standby_workers=0`, also while the dead worker is restarted (new |
|  | requests are refused until it is back, and `/health` answers 503). `Retry-After: 1`. |

Faults and stops: a killed inference worker (e.g. by the OOM killer) is replaced at once by a
standby worker that has the bundle loaded (`serve.standby_workers`, 1 by default) and restarted in
the background (`serve.restart_workers`); its in-flight requests get the 503 above, never a hang
or a dropped connection. SIGTERM or
Ctrl+C stops the server with exit code 0 and one log line once in-flight requests have finished
(at most `serve.drain_s`, default 10 s). With `serve.restart_workers=false` a dead worker stops
the server with a one-line reason and exit code 1, for a supervisor to restart it. LitServe's own
routes answer plain text (`GET /` and `GET /livez`, documented as `text/plain`) or JSON (`/info`).

Behaviour: seen items are never recommended; a history longer than the bundle's `max_history`
uses its most recent part; fewer than `min_history` (3) known items returns
`"strategy": "popular"` (popular items of the given items' categories, else overall);
posted ids not in the catalog are ignored and listed in `unknown_items`.
"""


def examples(client, users: list[str], items: list[str]) -> list[dict[str, Any]]:
    """(method, path, body) examples covering success and error cases of every route."""
    user, item = users[0], items[0]
    admin = {"Authorization": "Bearer $RECSYS_ADMIN_TOKEN"}
    new_item = {"item_id": "NEW-0001", "title": "A new release", "categories": ["Drama"]}
    calls = [
        ("GET /health", "GET", "/health", None),
        ("GET /recommend/{user_id}", "GET", f"/recommend/{user}?top_k=3", None),
        ("GET /recommend/{user_id}", "GET", "/recommend/no-such-user?top_k=3", None),
        ("GET /recommend/{user_id}", "GET", f"/recommend/{user}?top_k=0", None),
        ("POST /recommend", "POST", "/recommend", {"history": [*items[:4], "unknown-item"], "top_k": 3}),
        ("POST /recommend", "POST", "/recommend", {"history": items[:1], "top_k": 3}),
        ("POST /recommend", "POST", "/recommend", {"history": "not-a-list"}),
        ("GET /user/{user_id}/history", "GET", f"/user/{user}/history?limit=3", None),
        ("GET /items/{item_id}", "GET", f"/items/{item}", None),
        ("GET /items/{item_id}", "GET", "/items/no-such-item", None),
        ("POST /items", "POST", "/items", new_item, admin),
        ("POST /items", "POST", "/items", new_item, {}),
        ("POST /items", "POST", "/items", new_item, admin),
        ("DELETE /items/{item_id}", "DELETE", "/items/NEW-0001", None, admin),
        ("DELETE /items/{item_id}", "DELETE", "/items/no-such-item", None, admin),
    ]
    out = []
    for route, method, path, body, *headers in calls:
        shown = headers[0] if headers else {}
        sent = {k: v.replace("$RECSYS_ADMIN_TOKEN", ADMIN_EXAMPLE_TOKEN) for k, v in shown.items()}
        response = client.request(method, path, json=body, headers=sent)
        out.append(
            {
                "route": route,
                "method": method,
                "path": path,
                "headers": shown,
                "body": body,
                "status": response.status_code,
                "response": response.json() if response.content else None,
            }
        )
    return out


def render(records: list[dict[str, Any]]) -> str:
    parts = [INTRO]
    for route, text in ROUTES:
        parts.append(f"\n## `{route}`\n\n{text}\n")
        for r in (r for r in records if r["route"] == route):
            request = f"{r['method']} {r['path']}"
            request += "".join(f"\n{k}: {v}" for k, v in r["headers"].items())
            if r["body"] is not None:
                request += "\n\n" + json.dumps(r["body"], indent=2)
            answer = f"Response `{r['status']}`"
            if r["response"] is None:
                parts.append(f"```http\n{request}\n```\n\n{answer}, no body.\n")
                continue
            response = json.dumps(r["response"], indent=2)
            parts.append(f"```http\n{request}\n```\n\n{answer}:\n\n```json\n{response}\n```\n")
    return "\n".join(parts)


def main() -> None:
    from fastapi.testclient import TestClient

    from recsys.serving.api import build_server
    from recsys.serving.bundle import Bundle
    from recsys.serving.litserve_adapter import in_process

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bundle", nargs="?", default="artifacts/demo/bundle")
    parser.add_argument("--out", default="docs/API.md")
    args = parser.parse_args()
    bundle = Bundle.load(args.bundle)
    users = bundle.users["user_id"].astype(str).tolist()
    items = [str(i) for i in bundle.users["history"].iat[0]]
    with tempfile.TemporaryDirectory() as tmp:  # the catalog changes go to a copy of the bundle
        copy = shutil.copytree(
            args.bundle, Path(tmp) / "bundle", ignore=shutil.ignore_patterns("catalog_changes*")
        )
        server = build_server(copy, admin_token=ADMIN_EXAMPLE_TOKEN)
        with in_process(server) as started, TestClient(started.app) as client:
            while client.get("/health").status_code != 200:
                time.sleep(0.2)
            # /health reports the served path: the bundle's, not the temporary copy's
            text = render(examples(client, users, items)).replace(str(copy), args.bundle)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
