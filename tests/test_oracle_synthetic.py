"""The generator-aware ceiling on `synthetic` (experiments/oracle_synthetic.py): its step
probabilities are a distribution that matches the generator's own draws."""

from __future__ import annotations

import numpy as np

from experiments.oracle_synthetic import generator_tables, hidden_state, step_probabilities
from recsys.data.sources import synthetic_vocab as vocab
from recsys.data.sources.synthetic_generator import SyntheticConfig, _genre_sampler, fresh_weights


def test_step_probabilities_are_the_generators_draws():
    cfg = SyntheticConfig(n_items=400, n_users=300, mean_length=20, seed=3)
    cat, favourites, n_fav, inter, _ = hidden_state(cfg)
    p_regular, p_fresh, regular_has, fresh_has = generator_tables(cat)
    n_genres = len(vocab.GENRES)  # the genres the generator's own samplers can draw from
    assert (regular_has == _genre_sampler(cat, cat.weights, n_genres)[1]).all()
    assert (fresh_has == _genre_sampler(cat, fresh_weights(cat), n_genres)[1]).all()
    assert np.allclose(p_regular[regular_has].sum(1), 1.0)
    assert (p_regular[:, cat.fresh] == 0).all() and (p_fresh[:, ~cat.fresh] == 0).all()

    log_likelihood, n_steps, n_duplicates = 0.0, 0, int(inter["duplicate"].sum())
    for user, steps in inter[~inter["duplicate"]].groupby("user"):
        items = steps["item"].to_numpy()
        favs = favourites[user, : n_fav[user]]
        for t, item in enumerate(items):
            prev = int(items[t - 1]) if t else -1
            final = t == len(items) - 1
            tables = (p_regular, p_fresh, regular_has, fresh_has)
            probs = step_probabilities(cfg, cat, *tables, favs, prev, final)
            assert np.isclose(probs.sum(), 1.0)
            assert probs[item] > 0  # every step the generator took has probability under the formula
            log_likelihood += np.log(probs[item])
            n_steps += 1
    # the duplicate reviews told apart: about 1% of the rows (p_duplicate)
    assert abs(n_duplicates - cfg.p_duplicate * n_steps) < 4 * np.sqrt(cfg.p_duplicate * n_steps)
    # the formula predicts the draws far better than the catalog at random
    assert log_likelihood / n_steps > -np.log(cfg.n_items) + 1.5
