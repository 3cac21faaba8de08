"""recsys: a two-stage neural recommender (two-tower retrieval + FAISS + ranker + LitServe)."""

from recsys.utils.config_resolvers import register as _register_resolvers

__version__ = "0.1.0"

_register_resolvers()  # the configs interpolate ${split_dir_suffix:…} whichever entry point loads them
