"""The HTTP API in-process (LitServe + TestClient) on a tiny bundle."""

from __future__ import annotations

import os
import threading
import time

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from recsys.serving.api import build_server
from recsys.serving.graph import InferenceGraph
from recsys.serving.litserve_adapter import in_process

MAX_TOP_K = 50


def wait_ready(client: TestClient, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/health")
        if response.status_code == 200:
            return response.json()
        assert response.status_code == 503 and response.json() == {"status": "loading"}
        time.sleep(0.2)
    raise TimeoutError("the server never became ready")


@pytest.fixture(scope="module")
def client(tiny_bundle):
    server = build_server(tiny_bundle, max_top_k=MAX_TOP_K, max_payload_bytes=64_000)
    with in_process(server) as started, TestClient(started.app) as test_client:
        wait_ready(test_client)
        yield test_client


@pytest.fixture(scope="module")
def graph(tiny_bundle) -> InferenceGraph:
    return InferenceGraph.from_bundle(tiny_bundle, max_top_k=MAX_TOP_K)


def test_health_reports_the_bundle(client, graph):
    body = client.get("/health").json()
    assert body["status"] == "ok"
    assert body["n_items"] == len(graph.item_ids) and body["n_users"] == len(graph.user_rows)
    assert body["bundle"]["index"] == "flat" and body["bundle"]["ranker"] is True


def test_recommend_known_user_matches_the_graph(client, graph):
    user_id = graph.bundle.users["user_id"].iat[3]
    response = client.get(f"/recommend/{user_id}", params={"top_k": 7})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"user_id", "strategy", "items"} and body["user_id"] == user_id
    expected = graph.recommend(user_id=user_id, top_k=7)
    assert [x["item_id"] for x in body["items"]] == [x["item_id"] for x in expected["items"]]
    assert [x["rank"] for x in body["items"]] == list(range(1, 8))
    assert set(body["items"][0]) == {"item_id", "title", "score", "rank"}


def test_post_recommend_anonymous(client, graph):
    history = list(graph.bundle.users["history"].iat[5])[-8:]
    response = client.post("/recommend", json={"history": [*history, "nope"], "top_k": 5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["strategy"] == "two_stage" and body["unknown_items"] == ["nope"]
    expected = graph.recommend(history=history, top_k=5)
    assert [x["item_id"] for x in body["items"]] == [x["item_id"] for x in expected["items"]]
    assert not set(history) & {x["item_id"] for x in body["items"]}


@pytest.mark.parametrize("n_known", [0, 1, 2])
def test_cold_users_are_served_popular(client, graph, n_known):
    history = list(graph.bundle.users["history"].iat[0])[:n_known]
    body = client.post("/recommend", json={"history": history}).json()
    assert body["strategy"] == "popular" and len(body["items"]) == 10


def test_history_and_items(client, graph):
    user_id = graph.bundle.users["user_id"].iat[2]
    body = client.get(f"/user/{user_id}/history", params={"limit": 4}).json()
    assert body == graph.history(user_id, limit=4)
    item_id = body["items"][0]["item_id"]
    assert client.get(f"/items/{item_id}").json() == graph.item(item_id)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("get", "/recommend/no-such-user", {}, 404),
        ("get", "/user/no-such-user/history", {}, 404),
        ("get", "/items/no-such-item", {}, 404),
        ("get", "/recommend/{user}", {"params": {"top_k": 0}}, 422),
        ("get", "/recommend/{user}", {"params": {"top_k": MAX_TOP_K + 1}}, 422),
        ("get", "/recommend/{user}", {"params": {"top_k": "many"}}, 422),
        ("post", "/recommend", {"json": {"history": "not-a-list"}}, 422),
        ("post", "/recommend", {"json": {"history": [], "top_k": 1000}}, 422),
        ("post", "/recommend", {"json": {"history": [], "extra": 1}}, 422),
        (
            "post",
            "/recommend",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
        ),
        ("post", "/recommend", {"json": {"history": ["x" * 100] * 2000}}, 413),
    ],
)
def test_errors(client, graph, method, path, kwargs, status):
    path = path.format(user=graph.bundle.users["user_id"].iat[0])
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status, response.text
    assert "detail" in response.json()
    if status == 404:
        assert "unknown" in str(response.json()["detail"])


def test_api_key_required_when_configured(tiny_bundle, monkeypatch):
    from recsys.serving import litserve_adapter

    monkeypatch.setattr(litserve_adapter.litserve_server, "LIT_SERVER_API_KEY", "s3cret")
    server = build_server(tiny_bundle, max_top_k=MAX_TOP_K)
    with in_process(server) as started, TestClient(started.app) as c:
        for path in ("/health", "/recommend/x", "/items/x", "/user/x/history"):
            assert c.get(path).status_code == 401, path
        assert c.post("/recommend", json={"history": []}).status_code == 401
        headers = {"X-API-Key": "s3cret"}
        deadline = time.monotonic() + 60
        while c.get("/health", headers=headers).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert c.post("/recommend", json={"history": []}, headers=headers).status_code == 200


def test_openapi_documents_every_route(client):
    paths = client.get("/openapi.json").json()["paths"]
    for route in (
        "/health",
        "/recommend/{user_id}",
        "/recommend",
        "/user/{user_id}/history",
        "/items/{item_id}",
    ):
        assert route in paths, route
    assert client.get("/docs").status_code == 200


def test_openapi_lists_every_error_status_with_its_body(client, graph):
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    expected = {
        ("/health", "get"): {"200", "503"},
        ("/recommend/{user_id}", "get"): {"200", "404", "422", "503"},
        ("/recommend", "post"): {"200", "400", "413", "422", "503"},
        ("/user/{user_id}/history", "get"): {"200", "404", "422", "503"},
        ("/items/{item_id}", "get"): {"200", "404", "422", "503"},
    }
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert set(responses) == statuses, (path, sorted(responses))  # no API key here: no 401
        for status in statuses - {"200", "422"}:
            ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/Loading" if path == "/health" else "/Error")
    assert paths["/recommend/{user_id}"]["get"]["responses"]["503"]["headers"]["Retry-After"]
    assert schema["components"]["schemas"]["Error"]["required"] == ["detail"]
    for path in ("/", "/livez"):  # LitServe's plain-text routes, documented and answered as text
        assert "text/plain" in paths[path]["get"]["responses"]["200"]["content"]
        assert client.get(path).headers["content-type"].startswith("text/plain")
    user = paths["/recommend/{user_id}"]["get"]["parameters"][0]
    assert user["name"] == "user_id" and user["example"] in set(graph.user_rows)


def test_serve_asks_glibc_for_huge_pages_without_dropping_other_tunables():
    from recsys.serving.process_setup import HUGEPAGE_MALLOC, use_hugepage_malloc

    env: dict[str, str] = {}
    use_hugepage_malloc(env)
    assert env["GLIBC_TUNABLES"] == HUGEPAGE_MALLOC
    env = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
    use_hugepage_malloc(env)
    assert env["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{HUGEPAGE_MALLOC}"
    env = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}  # the user's own choice wins
    use_hugepage_malloc(env)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=0"


def test_cpu_split_gives_workers_their_own_cpus():
    from recsys.serving.cpu_affinity import split_cpus

    assert split_cpus(1, 1, {0, 1}) == ({1}, {0})
    assert split_cpus(2, 2, set(range(16))) == ({12, 13, 14, 15}, set(range(12)))
    assert split_cpus(2, 1, {3, 5, 9}) == ({5, 9}, {3})
    assert split_cpus(1, 2, {0, 1}) is None  # nothing left for the HTTP side: no pinning
    assert split_cpus(2, 1, {0, 1}) == ({1}, {0})  # two workers share the inference CPU
    assert split_cpus(3, 1, {0, 1, 2, 3}) == ({1, 2, 3}, {0})
    assert split_cpus(4, 1, {0, 1, 2, 3}) == ({1, 2, 3}, {0})
    assert split_cpus(1, 1, None) is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_http_side_pins_itself_and_hands_the_rest_to_workers():
    from recsys.serving.cpu_affinity import pin_http_side, split_cpus

    expected = split_cpus(1, 1, set(os.sched_getaffinity(0)))
    seen = {}

    def in_thread() -> None:  # affinity is per thread: leave the test runner's alone
        seen["workers"] = pin_http_side(1, 1)
        seen["http"] = os.sched_getaffinity(0)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    if expected is None:  # a 1-CPU machine: nothing pinned
        assert seen["workers"] is None and seen["http"] == os.sched_getaffinity(0)
    else:
        assert (seen["workers"], seen["http"]) == expected


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_worker_setup_pins_itself_to_its_cpus(tiny_bundle):
    from recsys.serving.api import RecsysAPI

    target = {max(os.sched_getaffinity(0))}
    first = pd.read_parquet(tiny_bundle / "items.parquet").iloc[0]
    seen = {}

    def setup_in_thread() -> None:  # affinity is per thread: leave the test runner's alone
        api = RecsysAPI(tiny_bundle, cpus=target)
        api.setup("cpu")
        seen["cpus"] = os.sched_getaffinity(0)
        seen["title"] = api.predict({"op": "item", "item_id": first["item_id"]})["title"]

    thread = threading.Thread(target=setup_in_thread)
    thread.start()
    thread.join()
    assert seen["cpus"] == target and seen["title"] == first["title"]
