"""Property-based fuzzing of every route (hypothesis): no generated request may produce a 5xx."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.serving.api import build_server
from recsys.serving.litserve_adapter import in_process

pytestmark = pytest.mark.slow  # end-to-end: servers, processes, fuzzing (make test-fast skips them)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5),
    max_leaves=20,
)
ids = st.text(max_size=40) | st.sampled_from(["", " ", "..", "%00", "0", "-1", "x" * 300])
top_k = st.integers(-10, 10_000).map(str) | st.text(max_size=6)
bodies = (
    st.fixed_dictionaries(
        {"history": st.lists(st.text(max_size=12), max_size=60)}, optional={"top_k": st.integers(-5, 500)}
    )
    | json_values
)


@pytest.fixture(scope="module")
def client(tiny_bundle):
    with in_process(build_server(tiny_bundle, max_top_k=50)) as server, TestClient(server.app) as c:
        while c.get("/health").status_code != 200:
            time.sleep(0.2)
        yield c


@pytest.fixture(scope="module")
def real_ids(tiny_bundle) -> dict[str, list[str]]:
    from recsys.serving.bundle import Bundle

    bundle = Bundle.load(tiny_bundle)
    return {
        "users": bundle.users["user_id"].astype(str).tolist(),
        "items": bundle.items["item_id"].astype(str).tolist(),
    }


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    route=st.sampled_from(["recommend_user", "recommend_post", "history", "item", "health"]),
    entity=ids,
    k=top_k,
    body=bodies,
    known=st.none() | st.integers(0, 10**6),
)
def test_no_request_produces_a_server_error(client, real_ids, route, entity, k, body, known):
    if known is not None:  # real ids too, so the success paths are fuzzed, not only the 404s
        pool = real_ids["items"] if route == "item" else real_ids["users"]
        entity = pool[known % len(pool)]
        if isinstance(body, dict) and isinstance(body.get("history"), list):
            items = real_ids["items"]
            body = {
                **body,
                "history": [items[(known + j) % len(items)] for j in range(known % 12)] + body["history"],
            }
    path_id = quote(entity, safe="") or "%20"
    if route == "recommend_user":
        response = client.get(f"/recommend/{path_id}", params={"top_k": k})
    elif route == "recommend_post":
        response = client.post("/recommend", json=body)
    elif route == "history":
        response = client.get(f"/user/{path_id}/history", params={"limit": k})
    elif route == "item":
        response = client.get(f"/items/{path_id}")
    else:
        response = client.get("/health")
    assert response.status_code < 500, (route, entity, k, body, response.text)
