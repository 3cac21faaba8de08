"""The embedded default source: synthetic Amazon-format files (``synthetic_generator``), read
through the real Amazon reader."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from recsys.data.sources.amazon import AmazonReviewsSource
from recsys.data.sources.synthetic_generator import SyntheticConfig, generate
from recsys.utils.artifacts import write_json_atomic


@dataclass
class SyntheticAmazonSource(AmazonReviewsSource):
    """Generate Amazon-format files (once per generator config), then read them as Amazon data."""

    generator: SyntheticConfig | dict = field(default_factory=SyntheticConfig)
    reviews_file: str = "Movies_and_TV.jsonl.gz"
    meta_file: str = "meta_Movies_and_TV.jsonl.gz"
    name: str = "synthetic"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.generator, SyntheticConfig):  # a dict or Hydra DictConfig
            self.generator = SyntheticConfig(**dict(self.generator))

    def ensure_generated(self) -> None:
        marker = Path(self.raw_dir) / "generator.json"
        wanted = asdict(self.generator)
        files_there = marker.is_file() and self.reviews_path.is_file() and self.meta_path.is_file()
        if files_there and json.loads(marker.read_text()).get("config") == wanted:
            return
        written = generate(self.generator, self.raw_dir, self.reviews_file, self.meta_file)
        write_json_atomic(marker, {"config": wanted, "written": written})

    def iter_interactions(self):
        self.ensure_generated()
        yield from super().iter_interactions()

    def read_items(self) -> pd.DataFrame:
        self.ensure_generated()
        return super().read_items()
