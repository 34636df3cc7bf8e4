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
signal), and noise ε.  The cut points are quantiles of s over a pilot draw of about 200,000
(user, item) pairs taken the way the ratings are (whole users, repeats dropped), from the
seed's own stream.

Streaming: users are generated in chunks (their items sampled by popularity, a user's
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
DRAWS_PER_RATING = 3  # draws per wanted rating before repeats are dropped (see _sample_items)
ALPHA, BETA, NOISE, QUALITY = 1.0, 0.8, 0.6, 0.5


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
    item_cdf: np.ndarray  # float64 [I], popularity
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
    cdf = np.cumsum(weights)
    quality = QUALITY * (popularity - popularity.mean()) / (popularity.std() or 1.0) + rng.normal(0, 0.5, spec.items)
    primary = cal.genre.draw(rng, spec.items)
    # genre taste: a gender effect and an age-band effect per genre, plus the user's own
    gender_effect = rng.normal(0.0, 0.7, (2, genres))
    age_effect = rng.normal(0.0, 0.5, (8, genres))
    taste = gender_effect[gender] + age_effect[age_band] + rng.normal(0.0, 0.5, (spec.users, genres))
    return _World(rng.standard_normal((spec.users, FACTORS), dtype=np.float32),
                  rng.standard_normal((spec.items, FACTORS), dtype=np.float32), cdf / cdf[-1],
                  quality.astype(np.float32), primary.astype(np.int64), taste.astype(np.float32),
                  _counts(rng, spec, cal))


def _scores(world: _World, users: np.ndarray, items: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    affinity = np.einsum("nd,nd->n", world.user_factors[users], world.item_factors[items]) / math.sqrt(FACTORS)
    taste = world.taste[users, world.primary_genre[items]]
    return ALPHA * affinity + world.item_quality[items] + BETA * taste + rng.normal(0.0, NOISE, users.size)


def _sample_items(world: _World, users: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) pairs: each user's count of distinct items, drawn by popularity.

    ``DRAWS_PER_RATING`` times the draws a user needs, repeats dropped (first draw wins), then the first
    ``count`` in draw order kept: a heavy user does not lose ratings to popular repeats.
    One sort per chunk, no per-user loop.
    """
    n_items = world.item_cdf.size
    draws = np.repeat(users, DRAWS_PER_RATING)
    items = np.searchsorted(world.item_cdf, rng.random(draws.size), side="right").clip(max=n_items - 1)
    keys = draws.astype(np.int64) * n_items + items
    _, first = np.unique(keys, return_index=True)
    first.sort()  # distinct pairs in draw order (draws are grouped by user)
    kept_users = draws[first]
    starts = np.searchsorted(kept_users, kept_users, side="left")
    rank = np.arange(first.size) - starts
    keep = rank < world.counts[kept_users]
    return kept_users[keep], items[first][keep]


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
    pilot_users, pilot_items = _sample_items(world, np.repeat(chosen, world.counts[chosen]), pilot_rng)
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
            users = np.repeat(np.arange(start, stop), world.counts[start:stop])
            users, items = _sample_items(world, users, chunk_rng)
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
               "model": {"factors": FACTORS, "alpha": ALPHA, "beta": BETA, "noise": NOISE, "quality": QUALITY},
               "cuts": cuts.round(5).tolist()}
    (out / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
