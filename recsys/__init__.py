"""recsys: a two-stage neural recommender (two-tower retrieval + FAISS + ranker + LitServe)."""

__version__ = "0.1.0"
