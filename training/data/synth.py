"""``ratingctr data synth``: a MovieLens-like RecBole atomic dataset of any size, deterministic per seed.

Why: every measured number came from ML-100k (100k ratings); teams bring 25M-rating logs
and million-item catalogues, and no such data may be downloaded here.  The generator
keeps what makes CTR data hard and learnable, calibrated on ML-100k
(``synth_calibration.calibrate``): lognormal user activity and item popularity with
ML-100k's spread, ML-100k's demographic and genre marginals, and ordinal 1–5 ratings cut
from a latent score so the star histogram (and so the click rate) matches.  The score is

    s = α · <u, v> / √d + b_item + β · g[user, primary genre] + ε

with latent factors u, v ~ N(0, 1), an item quality b_item that grows with popularity, a
genre taste g that depends on the user's gender and age band (the side features carry
signal), and noise ε.

Which items a user rates is personal too, as in real logs (people rate what they chose to
watch): the catalogue is cut into ``CLUSTERS`` taste clusters (each item joins the cluster
centre its factor v points at most), and user u draws an item with probability

    P(i | u) ∝ popularity(i) · exp(γ · <u, c_cluster(i)> / √d)

so a retriever has something to learn beyond the popularity list, and what a user rates
leans toward what the same factors make them rate highly.  γ (``SELECTION``) is chosen so a
draw of ML-100k's shape gives EASE the lift over most-popular it has on ML-100k (Recall@20
2.04× there; ``tests/training/data/test_synth.py`` checks the lift on a small draw).
Averaged over users, the cluster weights are close to the clusters' popularity mass, so the
item popularity marginal stays ML-100k's.  The cut points are quantiles of s over a pilot draw of about 200,000
(user, item) pairs taken the way the ratings are (whole users, repeats dropped), from the
seed's own stream.

Streaming: users are generated in chunks (their items sampled as above, a user's
repeated items dropped), each chunk appended to ``NAME.inter``; memory is the catalogue's
arrays plus one chunk, whatever the number of ratings.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ratingctr.errors import UserError
from ratingctr.training.data.synth_calibration import Calibration

FACTORS = 8
PILOT_PAIRS = 200_000
CHUNK_USERS = 20_000
DRAWS_PER_RATING = 3  # draws per missing rating in a round, before repeats are dropped (see _sample_items)
TOP_UP_ROUNDS = 8
ALPHA, BETA, NOISE, QUALITY = 1.0, 0.8, 0.6, 0.5
CLUSTERS = 32  # taste clusters of the catalogue (who-rates-what)
SELECTION = 1.4  # γ: how strongly a user's factor steers which clusters they rate from


@dataclass(frozen=True)
class SynthSpec:
    users: int
    items: int
    ratings: int
    seed: int = 0
    name: str = "synth"

    def check(self) -> None:
        if self.users < 1 or self.items < 2 or self.ratings < self.users:
            raise UserError("data synth needs --users >= 1, --items >= 2 and --ratings >= --users")
        if self.ratings > self.users * self.items // 2:
            raise UserError(f"{self.ratings:,} ratings do not fit {self.users:,} users × {self.items:,} items at "
                            f"most half full; ask for fewer ratings or a larger catalogue")


@dataclass
class _World:
    """The per-user and per-item arrays every chunk draws from."""

    user_factors: np.ndarray  # float32 [U, d]
    item_factors: np.ndarray  # float32 [I, d]
    cluster_logits: np.ndarray  # float32 [U, K], γ · <u, c_k> / √d
    cluster_mass: np.ndarray  # float64 [K], popularity mass of each cluster
    item_order: np.ndarray  # int64 [I], items grouped by cluster
    item_cdf: np.ndarray  # float64 [I], k + (popularity CDF within cluster k), in item_order
    item_quality: np.ndarray  # float32 [I]
    primary_genre: np.ndarray  # int64 [I]
    taste: np.ndarray  # float32 [U, genres]
    counts: np.ndarray  # int64 [U], ratings per user


def _counts(rng: np.random.Generator, spec: SynthSpec, cal: Calibration) -> np.ndarray:
    """Ratings per user: lognormal activity with ML-100k's width, clipped to [ML-100k's floor
    (where it fits), half the catalogue], its scale solved (bisection, monotone) so the total
    is ``spec.ratings`` (before a user's repeated items are dropped)."""
    floor = min(cal.min_user_ratings, spec.ratings // spec.users)
    cap = max(spec.items // 2, floor)
    weights = rng.lognormal(0.0, cal.user_log_std, spec.users)

    def counts_for(scale: float) -> np.ndarray:
        return np.clip(np.floor(scale * weights), floor, cap).astype(np.int64)

    low, high = 0.0, float(spec.ratings) / weights.min()
    for _ in range(60):
        mid = (low + high) / 2
        if counts_for(mid).sum() < spec.ratings:
            low = mid
        else:
            high = mid
    return counts_for(low)


def _world(rng: np.random.Generator, spec: SynthSpec, cal: Calibration, age_band: np.ndarray,
           gender: np.ndarray, genres: int) -> _World:
    popularity = rng.normal(0.0, cal.item_log_std, spec.items)
    weights = np.exp(popularity - popularity.max())
    quality = QUALITY * (popularity - popularity.mean()) / (popularity.std() or 1.0) + rng.normal(0, 0.5, spec.items)
    primary = cal.genre.draw(rng, spec.items)
    # genre taste: a gender effect and an age-band effect per genre, plus the user's own
    gender_effect = rng.normal(0.0, 0.7, (2, genres))
    age_effect = rng.normal(0.0, 0.5, (8, genres))
    taste = gender_effect[gender] + age_effect[age_band] + rng.normal(0.0, 0.5, (spec.users, genres))
    user_factors = rng.standard_normal((spec.users, FACTORS), dtype=np.float32)
    item_factors = rng.standard_normal((spec.items, FACTORS), dtype=np.float32)
    centres = rng.standard_normal((CLUSTERS, FACTORS), dtype=np.float32)
    cluster = np.argmax(item_factors @ centres.T, axis=1)
    order = np.argsort(cluster, kind="stable")
    mass = np.bincount(cluster, weights=weights, minlength=CLUSTERS)
    return _World(user_factors, item_factors,
                  (SELECTION / math.sqrt(FACTORS)) * (user_factors @ centres.T), mass, order,
                  _within_cluster_cdf(cluster[order], weights[order], mass),
                  quality.astype(np.float32), primary.astype(np.int64), taste.astype(np.float32),
                  _counts(rng, spec, cal))


def _within_cluster_cdf(cluster: np.ndarray, weights: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """``k + CDF within cluster k`` for items sorted by cluster: one ``searchsorted`` of ``k + r``
    (r uniform in [0, 1)) then draws an item of cluster k by popularity.  Each cluster's last
    item is set to exactly k + 1 so rounding never spills a draw into the next cluster."""
    before = np.cumsum(mass) - mass  # popularity of the clusters ahead of each one
    cdf = cluster + (np.cumsum(weights) - before[cluster]) / mass[cluster]
    last = np.r_[cluster[1:] != cluster[:-1], True]
    cdf[last] = cluster[last] + 1.0
    return cdf


def _draw_clusters(world: _World, draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One cluster per draw from its user's P(k | u) ∝ mass_k · exp(logit_uk).

    ``draws`` is grouped by user; each distinct user gets one CDF row offset by its position,
    so one ``searchsorted`` over the flattened rows serves every draw (no per-user loop)."""
    local = np.r_[0, np.cumsum(draws[1:] != draws[:-1])]
    users = draws[np.r_[True, draws[1:] != draws[:-1]]]
    logits = world.cluster_logits[users].astype(np.float64)
    weights = world.cluster_mass * np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(weights, axis=1) / weights.sum(axis=1, keepdims=True)
    cdf[:, -1] = 1.0
    flat = (cdf + np.arange(users.size)[:, None]).ravel()
    position = np.searchsorted(flat, local + rng.random(draws.size), side="right")
    return np.clip(position - local * CLUSTERS, 0, CLUSTERS - 1)


def _scores(world: _World, users: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    affinity = np.einsum("nd,nd->n", world.user_factors[users], world.item_factors[items]) / math.sqrt(FACTORS)
    taste = world.taste[users, world.primary_genre[items]]
    return ALPHA * affinity + world.item_quality[items] + BETA * taste + rng.normal(0.0, NOISE, users.size)


def _draw_items(world: _World, draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One item per draw (``draws``: user of each draw, grouped by user): a cluster by the user's
    affinity, then an item of that cluster by popularity."""
    clusters = _draw_clusters(world, draws, rng)
    position = np.searchsorted(world.item_cdf, clusters + rng.random(draws.size), side="right")
    return world.item_order[position.clip(max=world.item_cdf.size - 1)]


def _sample_items(world: _World, users: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) pairs, grouped by user: ``world.counts[u]`` distinct items for each of the distinct,
    sorted ``users``, drawn by popularity × the user's cluster affinity.

    Round r draws ``DRAWS_PER_RATING · 2^r`` times what every user still lacks, drops repeats (the
    earliest draw wins) and keeps each user's first ``count`` in draw order; users still short
    (heavy users whose taste concentrates on a few clusters) draw again, for at most
    ``TOP_UP_ROUNDS`` rounds.  One sort per round, no per-user loop.
    """
    n_items = world.item_cdf.size
    want = world.counts[users]
    kept_users, kept_items = np.zeros(0, np.int64), np.zeros(0, np.int64)
    short = users
    for round_ in range(TOP_UP_ROUNDS):
        have = np.bincount(np.searchsorted(users, kept_users), minlength=users.size)
        lacking = want - have
        short = users[lacking > 0]
        if short.size == 0:
            break
        draws = np.repeat(short, lacking[lacking > 0] * (DRAWS_PER_RATING << round_))
        all_users = np.concatenate([kept_users, draws])
        all_items = np.concatenate([kept_items, _draw_items(world, draws, rng)])
        _, first = np.unique(all_users * n_items + all_items, return_index=True)
        first = first[np.lexsort((first, all_users[first]))]  # by user, then in draw order (kept ones first)
        grouped = all_users[first]
        rank = np.arange(first.size) - np.searchsorted(grouped, grouped, side="left")
        keep = first[rank < world.counts[grouped]]
        kept_users, kept_items = all_users[keep], all_items[keep]
    return kept_users, kept_items


def synthesize(spec: SynthSpec, cal: Calibration, out: Path, chunk_users: int = CHUNK_USERS) -> dict:
    """Write ``out/NAME.{inter,user,item}`` and ``out/synth.json``; returns what was written."""
    spec.check()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(spec.seed)
    genres = len(cal.genre.tokens)
    age = np.asarray(cal.age.tokens)[cal.age.draw(rng, spec.users)]
    age_band = np.clip(age.astype(np.int64) // 10, 0, 7)
    gender = cal.gender.draw(rng, spec.users)
    occupation = cal.occupation.draw(rng, spec.users)
    world = _world(rng, spec, cal, age_band, gender, genres)
    # cut points from a pilot draw taken the way ratings are (activity × popularity), own stream
    pilot_rng = np.random.default_rng([spec.seed, 1])
    chosen = np.sort(pilot_rng.choice(spec.users, min(spec.users, max(1, int(PILOT_PAIRS / world.counts.mean()))),
                                      replace=False))
    pilot_users, pilot_items = _sample_items(world, chosen, pilot_rng)
    pilot = _scores(world, pilot_users, pilot_items, pilot_rng)
    cuts = np.quantile(pilot, np.cumsum(cal.rating_probs)[:-1])
    user_ids = np.char.add("u", np.arange(1, spec.users + 1).astype(str))
    item_ids = np.char.add("i", np.arange(1, spec.items + 1).astype(str))
    inter_path = out / f"{spec.name}.inter"
    written, histogram = 0, np.zeros(len(cal.rating_probs), dtype=np.int64)
    low, high = cal.time_range
    with open(inter_path.with_suffix(".inter.tmp"), "w", encoding="utf-8") as fh:
        fh.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for start in range(0, spec.users, chunk_users):
            stop = min(start + chunk_users, spec.users)
            chunk_rng = np.random.default_rng([spec.seed, 2, start])  # per chunk: same seed, same files
            users, items = _sample_items(world, np.arange(start, stop), chunk_rng)
            rating = np.searchsorted(cuts, _scores(world, users, items, chunk_rng)) + 1
            stamps = chunk_rng.integers(low, high + 1, users.size)
            pd.DataFrame({"u": user_ids[users], "i": item_ids[items], "r": rating, "t": stamps}).to_csv(
                fh, sep="\t", header=False, index=False)
            written += users.size
            histogram += np.bincount(rating - 1, minlength=histogram.size)
    inter_path.with_suffix(".inter.tmp").replace(inter_path)
    genre_tokens = np.asarray([g.replace(" ", "_") or "unknown" for g in cal.genre.tokens])
    pd.DataFrame({"user_id:token": user_ids, "age:token": age, "gender:token": np.asarray(cal.gender.tokens)[gender],
                  "occupation:token": np.asarray(cal.occupation.tokens)[occupation]}).to_csv(
        out / f"{spec.name}.user", sep="\t", index=False)
    second = cal.genre.draw(rng, spec.items)
    two = rng.random(spec.items) < (1.0 - cal.genres_per_item[0])
    genre_text = np.where(two & (second != world.primary_genre),
                          np.char.add(np.char.add(genre_tokens[world.primary_genre], " "), genre_tokens[second]),
                          genre_tokens[world.primary_genre])
    pd.DataFrame({"item_id:token": item_ids,
                  "release_year:token": np.asarray(cal.release_year.tokens)[cal.release_year.draw(rng, spec.items)],
                  "genre:token_seq": genre_text}).to_csv(out / f"{spec.name}.item", sep="\t", index=False)
    summary = {"spec": asdict(spec), "ratings_written": int(written),
               "rating_probs": (histogram / max(written, 1)).round(5).tolist(),
               "model": {"factors": FACTORS, "alpha": ALPHA, "beta": BETA, "noise": NOISE, "quality": QUALITY,
                         "clusters": CLUSTERS, "selection": SELECTION},
               "cuts": cuts.round(5).tolist()}
    (out / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
