"""Catalog changes over HTTP (POST /items, DELETE /items/{id}): the admin token, the change log
next to the bundle (replayed on restart, refused when tampered), and what recommendations see."""

from __future__ import annotations

import contextlib
import json
import pickle
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from recsys.serving.api import RecsysAPI, build_server, change_log
from recsys.serving.catalog_changes import FILE
from recsys.serving.graph import InferenceGraph
from recsys.serving.litserve_adapter import in_process
from recsys.utils.artifacts import ManifestError

TOKEN = "test-admin-token-7f3a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def bundle(tiny_bundle, tmp_path) -> Path:
    """A copy: catalog changes are written next to the bundle."""
    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


@contextlib.contextmanager
def serving(bundle: Path, token: str | None = TOKEN) -> Iterator[TestClient]:
    server = build_server(bundle, max_top_k=100, admin_token=token)
    with in_process(server) as started, TestClient(started.app) as client:
        deadline = time.monotonic() + 120
        while client.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "the worker never became ready"
            time.sleep(0.1)
        yield client


def a_cold_twin(bundle: Path, trained) -> tuple[str, str, dict]:
    """(user, catalog item C never trained on and in the user's top 100, C's text as POST fields):
    an item posted with C's text gets C's vector, so it must be recommended where C is."""
    from recsys.data.dataset import PreparedDataset

    ckpt = torch.load(trained["retrieval"], weights_only=True)
    items = PreparedDataset.load(ckpt["hyper_parameters"]["dataset_dir"]).items.set_index("item_id")
    graph = InferenceGraph.from_bundle(bundle, max_top_k=100)
    cold = set(items.index[~items["is_warm"]].astype(str))
    for user_id in graph.bundle.users["user_id"]:
        ranked = [x["item_id"] for x in graph.recommend(user_id=user_id, top_k=100)["items"]]
        hits = [i for i in ranked if i in cold]
        if hits:
            twin = items.loc[hits[0]]
            return str(user_id), hits[0], {"title": "A new release", "text": twin["text"]}
    pytest.fail("no user of the tiny bundle has a cold item among its top 100")


def ranked(client: TestClient, user_id: str) -> list[str]:
    response = client.get(f"/recommend/{user_id}", params={"top_k": 100})
    assert response.status_code == 200, response.text
    return [x["item_id"] for x in response.json()["items"]]


@pytest.mark.slow  # server processes started and restarted
def test_add_recommend_delete_and_a_restart_keeps_both(bundle, trained):
    user_id, twin, fields = a_cold_twin(bundle, trained)
    with serving(bundle) as client:
        added = client.post("/items", json={"item_id": "NEW-TWIN", **fields}, headers=AUTH)
        assert added.status_code == 201, added.text
        assert added.json() == {"item_id": "NEW-TWIN", "change": "added", "seq": 1}
        assert client.post("/items", json={"item_id": "NEW-TWIN", **fields}, headers=AUTH).status_code == 409
        after = ranked(client, user_id)  # searchable at once, next to the item whose text it has
        assert "NEW-TWIN" in after and abs(after.index("NEW-TWIN") - after.index(twin)) == 1
        info = client.get("/items/NEW-TWIN").json()
        assert info["title"] == fields["title"] and info["is_warm"] is False
        # delete the twin (a catalog item): never returned again, by retrieval or the item route
        gone = client.delete(f"/items/{twin}", headers=AUTH)
        assert gone.status_code == 204 and gone.content == b""
        assert twin not in ranked(client, user_id) and client.get(f"/items/{twin}").status_code == 404
        assert client.delete(f"/items/{twin}", headers=AUTH).status_code == 404
        plain = {"item_id": "NEW-2", "title": "Plain", "categories": ["Drama"]}  # text built from these
        assert client.post("/items", json=plain, headers=AUTH).json()["seq"] == 3
    log = json.loads((bundle / FILE).read_text())
    assert [(e["seq"], e["op"], e["item_id"]) for e in log["entries"]] == [
        (1, "add", "NEW-TWIN"),
        (2, "delete", twin),
        (3, "add", "NEW-2"),
    ]
    with serving(bundle) as client:  # a restart replays the log
        again = ranked(client, user_id)
        assert "NEW-TWIN" in again and twin not in again
        assert (
            client.get("/items/NEW-TWIN").status_code == 200
            and client.get(f"/items/{twin}").status_code == 404
        )
        np.testing.assert_array_equal(again, ranked(client, user_id))


@pytest.mark.slow  # server processes with and without a token
def test_missing_or_wrong_token_is_refused_and_without_one_changes_are_off(bundle):
    body = {"item_id": "NEW-1", "title": "A new film"}
    with serving(bundle) as client:
        missing = client.post("/items", json=body)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert (
            client.post("/items", json=body, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        )
        assert client.post("/items", json=body, headers={"Authorization": "Bearer nope"}).status_code == 403
        assert client.delete("/items/NEW-1").status_code == 401
        assert client.delete("/items/NEW-1", headers={"Authorization": "Bearer nope"}).status_code == 403
        assert client.get("/items/NEW-1").status_code == 404
        paths = client.app.openapi()["paths"]  # both routes documented with the bearer scheme
        assert {"201", "401", "403", "409"} <= set(paths["/items"]["post"]["responses"])
        assert {"204", "401", "403", "404"} <= set(paths["/items/{item_id}"]["delete"]["responses"])
        assert paths["/items"]["post"]["security"] == [{"HTTPBearer": []}]
        # a 405 names every method the path answers (GET and DELETE are two routes)
        allow = client.request("OPTIONS", "/items/NEW-1").headers["allow"]
        assert client.request("OPTIONS", "/items/NEW-1").status_code == 405 and allow == "DELETE, GET"
    with serving(bundle, token=None) as client:
        off = client.post("/items", json=body, headers=AUTH)
        assert off.status_code == 403 and "disabled" in off.json()["detail"]
        assert client.post("/items", json=body).status_code == 401  # no credentials: told to send them
    assert not (bundle / FILE).exists()  # nothing was recorded


def test_the_token_never_reaches_the_workers(tiny_bundle):
    api = RecsysAPI(tiny_bundle, admin_token=TOKEN)
    assert api.spec._admin_token == TOKEN
    assert TOKEN.encode() not in pickle.dumps(api.spec)  # what a spawned worker receives


def test_the_change_log_round_trips_and_a_tampered_one_is_refused(bundle, tmp_path):
    log = change_log(bundle)
    vector = np.linspace(-1, 1, log.dim, dtype=np.float32)
    text = np.linspace(0, 1, log.text_dim, dtype=np.float32)
    first = log.append(
        {
            "op": "add",
            "item_id": "N1",
            "title": "T",
            "categories": ["x"],
            "vector": vector,
            "text_vector": text,
        }
    )
    second = log.append({"op": "delete", "item_id": "N1"})
    assert (first.seq, second.seq) == (1, 2)
    replayed = change_log(bundle).changes_since(0)  # what a restart (a fresh reader) sees
    assert [(c.seq, c.op, c.item_id) for c in replayed] == [(1, "add", "N1"), (2, "delete", "N1")]
    np.testing.assert_array_equal(replayed[0].vector, vector)
    np.testing.assert_array_equal(replayed[0].text_vector, text)
    assert [c.seq for c in change_log(bundle).changes_since(1)] == [2]
    # an edited entry
    payload = json.loads((bundle / FILE).read_text())
    payload["entries"][0]["title"] = "edited"
    (bundle / FILE).write_text(json.dumps(payload))
    with pytest.raises(ManifestError, match="edited or damaged"):
        change_log(bundle).changes_since(0)
    with pytest.raises(ManifestError, match=FILE):
        build_server(bundle)
    # a log written for another bundle
    other = Path(shutil.copytree(bundle, tmp_path / "other"))
    (other / FILE).unlink()
    change_log(other).append({"op": "delete", "item_id": "N1"})
    manifest = json.loads((bundle / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps({**manifest, "created_at": "another"}))
    with pytest.raises(ManifestError, match="another bundle"):
        change_log(other).changes_since(0)
