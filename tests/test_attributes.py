"""Item and user attribute tables: declared in the data config, prepared, encoded, read by the
ranker, carried by the bundle and served with the same codes and statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recsys.data.attributes import AttributeSpec, attribute_table, declared_attributes, source_frame
from recsys.data.sources.jsonl import DataFormatError
from recsys.data.sources.movielens import MovieLensSource
from recsys.features.attribute_features import MIN_COUNT, AttributeLayout, Attributes, AttributeTable
from recsys.features.ranker_features import FEATURES
from recsys.models.ranker_module import numeric_statistics
from recsys.models.ranker_net import ATTRIBUTE_DIM, RankerNet
from tests.conftest import compose_config

OCCUPATIONS = ("artist", "doctor", "lawyer", "writer")


def test_declared_attributes_are_checked():
    specs = declared_attributes({"item": {"numeric": ["price"]}, "user": None})
    assert specs == {"item": AttributeSpec((), ("price",)), "user": AttributeSpec()}
    assert not specs["user"] and specs["item"].columns == ("price",)
    with pytest.raises(ValueError, match=r"unknown kind\(s\) \['shop'\]"):
        declared_attributes({"shop": {}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['numbers'\]"):
        declared_attributes({"item": {"numbers": ["price"]}})
    with pytest.raises(ValueError, match=r"\['price'\] declared more than once"):
        declared_attributes({"item": {"categorical": ["price"], "numeric": ["price"]}})
    with pytest.raises(ValueError, match="user_id is the key"):
        declared_attributes({"user": {"categorical": ["user_id"]}})


def test_attribute_table_keeps_declared_columns_and_counts_what_is_absent():
    frame = pd.DataFrame(
        {
            "item_id": ["a", " b", "a", "c"],
            "brand": ["Acme", "  ", "Other", None],
            "price": ["9.5", "cheap", "1", 3],
            "unused": [1, 2, 3, 4],
        }
    )
    spec = AttributeSpec(("brand",), ("price",))
    ids, rows = np.array(["c", "a", "b", "z"]), np.array([2, 3, 4, 5])
    table, stats = attribute_table(frame, "item", spec, ids, rows)
    assert list(table.columns) == ["item_idx", "brand", "price"]
    assert table["item_idx"].tolist() == [2, 3, 4, 5]
    assert table["brand"].tolist() == [None, "Acme", None, None]  # blank reads as absent
    np.testing.assert_array_equal(table["price"].to_numpy(), [3.0, 9.5, np.nan, np.nan])
    assert stats == {
        "repeated_ids": 1,  # the second "a" (its first row wins)
        "ids_without_record": 1,  # "z"
        "absent": {"brand": 3, "price": 2},
        "unparseable": {"price": 1},  # "cheap"
    }


@pytest.mark.parametrize(
    "data", sorted(p.stem for p in (Path(__file__).parents[1] / "configs" / "data").glob("*.yaml"))
)
def test_every_data_config_declares_only_what_its_source_reads(data):
    """A data config inherits its parent's declaration (sequences and tables from movielens_100k):
    each declared kind must have a reader on the config's own source."""
    import hydra

    from recsys.data.attributes import READERS

    cfg = compose_config("train", [f"data={data}"]).data
    if "preparer" not in cfg:  # the ranker's candidate lists
        return
    source = hydra.utils.get_class(cfg.preparer.source._target_)
    for kind, spec in declared_attributes(cfg.preparer.get("attributes")).items():
        assert not spec or hasattr(source, READERS[kind]), f"data={data}: {kind} attributes declared"


def test_a_declared_column_the_source_lacks_is_named():
    class Source:
        name = "mine"

        def read_item_attributes(self) -> pd.DataFrame:
            return pd.DataFrame({"item_id": ["a"], "brand": ["x"]})

    lacking = r"declares \['price'\].*gives item attribute columns \['brand'\]"
    with pytest.raises(DataFormatError, match=lacking):
        source_frame(Source(), "item", AttributeSpec(("brand",), ("price",)))
    with pytest.raises(DataFormatError, match="source 'mine' has no user attributes"):
        source_frame(Source(), "user", AttributeSpec(("gender",)))


def write_movielens(root: Path, n_users: int = 60, n_items: int = 40, per_user: int = 16) -> Path:
    """A miniature ML-100K (u.data, u.item, u.user) whose users' occupations are in their tastes:
    each occupation prefers its own quarter of the catalog."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    ratings = []
    for user in range(1, n_users + 1):
        group = user % len(OCCUPATIONS)
        liked = [i for i in range(1, n_items + 1) if i % len(OCCUPATIONS) == group]
        other = [i for i in range(1, n_items + 1) if i % len(OCCUPATIONS) != group]
        items = rng.permutation(liked)[: per_user - 4].tolist() + rng.permutation(other)[:4].tolist()
        for step, item in enumerate(rng.permutation(items)):
            ratings.append(f"{user}\t{item}\t{rng.integers(1, 6)}\t{880000000 + 1000 * user + step}")
    (root / "u.data").write_text("\n".join(ratings) + "\n")
    flags = "|".join(["0"] * 18)
    items = [
        f"{i}|Film {i} ({1950 + i})|01-Jan-{1950 + i}||http://x|1|{flags}" for i in range(1, n_items + 1)
    ]
    items[0] = f"1|Film without a year|||http://x|1|{flags}"
    (root / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    users = [
        f"{u}|{18 + u % 40}|{'MF'[u % 2]}|{OCCUPATIONS[u % len(OCCUPATIONS)]}|0{u:04d}"
        for u in range(1, n_users + 1)
    ]
    users.append("broken line")
    (root / "u.user").write_text("\n".join(users) + "\n")
    return root


def test_movielens_item_and_user_attributes(tmp_path):
    source = MovieLensSource(str(write_movielens(tmp_path / "ml")))
    items = source.read_item_attributes().set_index("item_id")
    assert items.loc["2", "year"] == "1952" and pd.isna(items.loc["1", "year"])
    users = source.read_user_attributes().set_index("user_id")
    assert list(users.columns) == ["age", "gender", "occupation", "zip"]
    assert users.loc["3"].tolist() == ["21", "F", "writer", "00003"]
    assert len(users) == 60 and source.stats["users_malformed_lines"] == 1


class _Dataset:
    """What the feature layer reads of a prepared dataset."""

    def __init__(self, tables: dict, n_items: int, n_users: int):
        self.tables, self.n_items, self.n_users, self.path = tables, n_items, n_users, Path("fake")

    def attributes(self, kind: str):
        return self.tables.get(kind)


def test_codes_and_values_by_hand():
    brands = ["big"] * MIN_COUNT + ["small"] * (MIN_COUNT - 1) + [None]
    items = pd.DataFrame({"item_idx": np.arange(2, 12), "brand": brands, "price": np.arange(10.0)})
    items.loc[9, "price"] = np.nan
    users = pd.DataFrame({"user_idx": [0, 1, 2], "job": ["a", "a", "b"], "age": [20.0, 30.0, 40.0]})
    dataset = _Dataset(
        {
            "item": (items, {"categorical": ["brand"], "numeric": ["price"]}),
            "user": (users, {"categorical": ["job"], "numeric": ["age"]}),
        },
        n_items=10,
        n_users=3,
    )
    layout = AttributeLayout.from_dataset(dataset)
    # "small" is on fewer than MIN_COUNT rows: no code of its own; the user table has 3 rows in all
    assert layout.categorical == {"item": {"brand": ["big"]}, "user": {"job": []}}
    assert layout.names == ["item.brand", "item.price", "user.job", "user.age"]
    assert layout.vocab_sizes("item") == [3] and AttributeLayout.from_dict(layout.as_dict()) == layout
    attributes = Attributes.from_dataset(dataset, layout)
    values = attributes.values(torch.tensor([[2, 7, 11, 0, 40]]), torch.tensor([1]))
    expected_items = [[2, 0.0], [1, 5.0], [0, np.nan], [0, np.nan], [0, np.nan]]  # big, small (rare),
    for k, (code, price) in enumerate(expected_items):  # absent, padding, beyond the table
        assert values[0, k, 0] == code
        np.testing.assert_equal(values[0, k, 1].item(), np.float32(price))
    assert values[0, :, 2].tolist() == [1.0] * 5 and values[0, :, 3].tolist() == [30.0] * 5  # "a": rare
    unknown = attributes.values(torch.tensor([[2]]), torch.tensor([-1]))[0, 0]
    assert unknown[2] == 0 and unknown[3].isnan()  # a user the tables do not know: absent


def _net(layout: AttributeLayout, use_embeddings: bool = False) -> RankerNet:
    return RankerNet(
        8,
        [0, 1],
        use_embeddings=use_embeddings,
        hidden=[16],
        dropout=0.0,
        cold_candidates="rank",
        prior_scale=0.0,
        attributes=layout.as_dict(),
    )


LAYOUT = AttributeLayout(
    {"item": {"brand": ["big", "huge"]}, "user": {"job": ["a"]}}, {"item": ["price"], "user": ["age"]}
)


def test_ranker_net_embeds_codes_and_standardizes_numbers():
    torch.manual_seed(0)
    net = _net(LAYOUT).eval()
    assert net.mlp[0].in_features == 2 + 2 * ATTRIBUTE_DIM + 2
    net.set_numeric_statistics(torch.tensor([10.0, 30.0]), torch.tensor([2.0, 0.0]))  # a constant column
    assert net.numeric_std.tolist() == [2.0, 1.0]
    base = torch.randn(1, 3, len(FEATURES))
    attrs = torch.tensor([[[3, 14.0, 2, 31.0], [0, float("nan"), 2, 31.0], [1, 10.0, 0, float("nan")]]])
    features = torch.cat([base, attrs], dim=-1)
    _, inputs = net._inputs(features)
    table = net.attribute_embedding.weight  # brand's 4 codes, then job's 3
    assert table.shape == (4 + 3, ATTRIBUTE_DIM)
    expected = torch.cat(
        [
            base[..., [0, 1]],
            table[attrs[..., 0].long()],
            table[4 + attrs[..., 2].long()],
            torch.tensor([[[2.0, 1.0], [0.0, 1.0], [0.0, 0.0]]]),  # (14 − 10) / 2, (31 − 30) / 1; absent: 0
        ],
        dim=-1,
    )
    torch.testing.assert_close(inputs, expected)
    net_emb = _net(LAYOUT, use_embeddings=True).eval()
    user, items = torch.randn(8), torch.randn(3, 8)
    torch.testing.assert_close(
        net_emb.score_user(user, items, features[0]), net_emb(user[None], items[None], features)[0]
    )


def test_numeric_statistics_skip_padding_and_absent_values():
    class Lists:
        candidates = torch.tensor([[5, 6, 0], [7, 0, 0]])
        features = torch.zeros(2, 3, len(FEATURES) + 4)

    Lists.features[..., len(FEATURES) + 1] = torch.tensor([[1.0, 3.0, 99.0], [float("nan"), 99.0, 99.0]])
    Lists.features[..., len(FEATURES) + 3] = torch.tensor([[20.0, 20.0, 99.0], [40.0, 99.0, 99.0]])
    mean, std = numeric_statistics(Lists, _net(LAYOUT))
    torch.testing.assert_close(mean, torch.tensor([2.0, 80 / 3]))
    torch.testing.assert_close(std, torch.tensor([1.0, float(np.std([20, 20, 40]))]))


def test_rankers_and_bundles_without_attributes_keep_their_state_keys():
    plain = _net(AttributeLayout())
    assert not plain.has_attributes and set(plain.state_dict()) == {"feature_columns"} | {
        k for k in plain.state_dict() if k.startswith(("mlp.", "wide."))
    }


# ---------------------------------------------------------------- prepare -> ranker -> bundle -> serving
@pytest.fixture(scope="module")
def attribute_run(tmp_path_factory) -> dict:
    from recsys.export import export
    from recsys.train import train

    root = tmp_path_factory.mktemp("attributes")
    raw = write_movielens(root / "raw")
    common = [
        f"paths.root_dir={root}",
        "text_encoder=hashing",
        "trainer=fast_dev",
        "~callbacks.rich_progress_bar",
    ]
    train(
        compose_config(
            "train",
            [
                *common,
                "data=movielens_100k",
                f"data.raw_dir={raw}",
                f"paths.output_dir={root}/tt",
                "data.batch_size=16",
                "data.max_history=20",
                "model.dim=16",
                "trainer.max_epochs=2",
            ],
        )
    )
    retrieval = root / "tt" / "checkpoints" / "last.ckpt"
    ranker_dir = root / "ranker"
    train(
        compose_config(
            "train",
            [
                *common,
                "experiment=ranker",
                f"retrieval_ckpt={retrieval}",
                "holdout_ckpt=null",  # the served model's val lists: no twin to fit here
                "model.use_embeddings=true",
                "model.attributes=true",
                f"paths.output_dir={ranker_dir}",
                "data.num_candidates=20",
                "data.batch_size=16",
                "model.hidden=[16]",
            ],
        )
    )
    bundle = root / "bundle"
    export(
        compose_config(
            "export",
            [
                f"paths.root_dir={root}",
                f"retrieval_ckpt={retrieval}",
                f"ranker_ckpt={ranker_dir / 'checkpoints' / 'last.ckpt'}",
                "index=flat",
                f"bundle_dir={bundle}",
            ],
        )
    )
    return {"retrieval": retrieval, "ranker": ranker_dir / "checkpoints" / "last.ckpt", "bundle": bundle}


def test_prepared_dataset_holds_the_declared_tables(attribute_run):
    from recsys.data.dataset import PreparedDataset
    from recsys.models.two_tower_module import TwoTowerModule

    model = TwoTowerModule.load_from_checkpoint(attribute_run["retrieval"], weights_only=True)
    dataset = PreparedDataset.load(model.hparams.dataset_dir)
    users, columns = dataset.attributes("user")
    assert columns == {"categorical": ["gender", "occupation"], "numeric": ["age"]}
    assert users["user_idx"].tolist() == list(range(dataset.n_users))
    ids = dataset.read_split("test", ["user_idx", "user_id"]).to_pandas().set_index("user_idx")["user_id"]
    row = users.set_index("user_idx").loc[ids[ids == "3"].index[0]]
    assert row.tolist() == ["F", "writer", 21.0]
    items, _ = dataset.attributes("item")
    assert len(items) == dataset.n_items and items["year"].isna().sum() == 1  # "Film without a year"
    stats = dataset.manifest["attributes"]
    assert stats["item"]["absent"] == {"year": 1} and stats["user"]["ids_without_record"] == 0


def test_ranker_bundle_and_graph_read_the_same_attributes(attribute_run):
    from recsys.candidates.datamodule import CandidateDataModule
    from recsys.data.dataset import PreparedDataset
    from recsys.models.ranker_module import RankerModule
    from recsys.serving.graph import InferenceGraph

    ranker = RankerModule.load_from_checkpoint(attribute_run["ranker"], weights_only=True)
    layout = AttributeLayout.from_dict(ranker.hparams.attribute_layout)
    assert layout.names == ["item.year", "user.gender", "user.occupation", "user.age"]
    assert layout.categorical["user"]["occupation"] == sorted(OCCUPATIONS)
    # standardized with its training lists' statistics, recomputed here from the same lists
    lists = CandidateDataModule.for_ranker(attribute_run["ranker"], attribute_run["retrieval"])
    lists.setup("fit")
    mean, std = numeric_statistics(lists.splits["train"].candidates, ranker.net)
    torch.testing.assert_close(ranker.net.numeric_mean, mean)
    torch.testing.assert_close(ranker.net.numeric_std, std)
    assert 1950 < mean[0] < 1990 and 18 <= mean[1] <= 58

    graph = InferenceGraph.from_bundle(attribute_run["bundle"], max_top_k=10)
    assert graph.bundle.manifest["ranker"]["attributes"] == layout.as_dict()
    torch.testing.assert_close(graph.bundle.ranker.numeric_mean, mean)
    dataset = PreparedDataset.load(ranker.hparams.dataset_dir)
    trained = Attributes.from_dataset(dataset, layout)
    candidates = torch.arange(2, dataset.n_items + 2)[None]
    users = graph.bundle.users
    for row in (0, 7, len(users) - 1):
        served = graph.bundle.attributes.values(candidates, torch.tensor([row]))
        listed = trained.values(candidates, torch.tensor([int(users["user_idx"].iat[row])]))
        torch.testing.assert_close(served, listed, equal_nan=True)
    user_id = str(users["user_id"].iat[0])
    assert graph.recommend(user_id=user_id, top_k=5)["strategy"] == "two_stage"
    anonymous = graph.recommend(history=list(users["history"].iat[0])[-5:], top_k=5)
    assert anonymous["strategy"] == "two_stage" and len(anonymous["items"]) == 5


def test_the_served_scores_depend_on_the_user_attributes(attribute_run, monkeypatch):
    """Another occupation code for the same user, history and candidates moves the ranker's scores:
    the attribute columns reach the served net."""
    from recsys.serving.graph import InferenceGraph

    graph = InferenceGraph.from_bundle(attribute_run["bundle"], max_top_k=10)
    # the ranker run per request (the export stored these logits, computed with the bundle's codes)
    monkeypatch.setattr(graph.bundle.candidates, "logits", None)
    user_id = str(graph.bundle.users["user_id"].iat[0])
    before = graph.recommend(user_id=user_id, top_k=10)["items"]
    table = graph.bundle.attributes.user
    occupation = list(graph.bundle.attributes.layout.categorical["user"]).index("occupation")
    codes = table.codes.clone()
    codes[0, occupation] = (codes[0, occupation] % 4) + 2
    monkeypatch.setattr(graph.bundle.attributes, "user", AttributeTable(codes, table.values))
    after = graph.recommend(user_id=user_id, top_k=10)["items"]
    assert [x["score"] for x in before] != [x["score"] for x in after]
