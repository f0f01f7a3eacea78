"""MovieLens-100K or -1M -> prepared data set, from the original layouts or RecBole's atomic files.

Run as `python -m data_prep.movielens --raw DIR --out OUT`
(or `python main.py prepare --dataset=movielens ...`), where DIR holds one of

* ML-100K's files: `u.data` (user id, item id, rating, timestamp; tab-
  separated), `u.user` (user id|age|gender|occupation|zip code) and `u.item`
  (movie id|title|release date|video release date|IMDb URL|19 genre flags,
  Latin-1);
* ML-1M's files, `::`-separated: `ratings.dat` (UserID::MovieID::Rating::
  Timestamp), `users.dat` (UserID::Gender::Age::Occupation::Zip-code) and
  `movies.dat` (MovieID::Title::Genres, Latin-1; genres `|`-separated, the
  release year the title's trailing "(1995)");
* RecBole's atomic files of ML-100K: `ml-100k.inter`, `ml-100k.user`,
  `ml-100k.item` (tab-separated with typed headers such as `user_id:token`;
  genres are the space-separated `class:token_seq`).

Tasks: `click` (1 for a rated pair; for every rating, 4 items the user never
rated are drawn as negatives, seeded; a user who rated every item gets none)
and `like` (rating >= 4; 0 for the drawn negatives). Features: user_id,
item_id, age, gender, occupation, release_year and `genres`, a multivalent
feature (a movie has several). An 80/10/10 random split with exact sizes.
A rating outside 1-5 or not a number, and a repeated (user, item) rating,
are bad rows; a user or movie listed twice in its file is an error. The
rows are built in memory (ML-1M: 5 million), then streamed through the
writer like any other data set.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from data_prep.readers import check_unique_ids, read_delimited
from data_prep.writer import (ROWS_PER_RECORD, BadRows, Chunk, DataError, ExactSplit,
                              check_out, check_tasks, prepare)

FEATURES = ["user_id", "item_id", "age", "gender", "occupation", "release_year", "genres"]
TASKS = ("click", "like")
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
          "Romance", "Sci-Fi", "Thriller", "War", "Western"]
NEGATIVES_PER_RATING = 4
LIKE_THRESHOLD = 4
DEFAULT_MIN_COUNT = 1
DEFAULT_SEED = 42
CHUNK_ROWS = 100_000


def _read_all(path: str, **kwargs) -> pd.DataFrame:
  frames = list(read_delimited(path, **kwargs))
  return pd.concat([c.frame for c in frames]) if frames else pd.DataFrame()


RATING_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]


def _original(raw: str, bad_rows: BadRows):
  ratings = _read_all(os.path.join(raw, "u.data"), sep="\t", columns=RATING_COLUMNS,
                      bad_rows=bad_rows)
  users = _read_all(os.path.join(raw, "u.user"), sep="|",
                    columns=["user_id", "age", "gender", "occupation", "zip_code"],
                    bad_rows=bad_rows)
  path = os.path.join(raw, "u.item")
  item_columns = ["item_id", "title", "release_date", "video_release_date", "url"] + GENRES
  items = _read_all(path, sep="|", columns=item_columns, bad_rows=bad_rows, encoding="latin-1")
  flags = items[GENRES].to_numpy() == "1"
  items["genres"] = ["|".join(g for g, on in zip(GENRES, row) if on) for row in flags]
  items["release_year"] = items["release_date"].str[-4:]
  return ratings, users, items


def _one_million(raw: str, bad_rows: BadRows):
  ratings = _read_all(os.path.join(raw, "ratings.dat"), sep="::", columns=RATING_COLUMNS,
                      bad_rows=bad_rows)
  users = _read_all(os.path.join(raw, "users.dat"), sep="::",
                    columns=["user_id", "gender", "age", "occupation", "zip_code"],
                    bad_rows=bad_rows)
  items = _read_all(os.path.join(raw, "movies.dat"), sep="::",
                    columns=["item_id", "title", "genres"], bad_rows=bad_rows,
                    encoding="latin-1")
  items["release_year"] = items["title"].str.extract(r"\((\d{4})\)\s*$", expand=False).fillna("")
  return ratings, users, items


def _atomic(raw: str, bad_rows: BadRows):
  def read(name, required):
    frame = _read_all(os.path.join(raw, name), sep="\t", bad_rows=bad_rows)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
      raise DataError(f"{os.path.join(raw, name)}: missing column(s) {missing}")
    return frame
  ratings = read("ml-100k.inter", ["user_id", "item_id", "rating"])
  users = read("ml-100k.user", ["user_id", "age", "gender", "occupation"])
  items = read("ml-100k.item", ["item_id", "release_year", "class"])
  items["genres"] = items["class"].str.split().str.join("|")
  return ratings, users, items


#: Ratings file -> (reader of that layout, its user file, its item file), in the
#: order they are looked for.
LAYOUTS = {"u.data": (_original, "u.user", "u.item"),
           "ratings.dat": (_one_million, "users.dat", "movies.dat"),
           "ml-100k.inter": (_atomic, "ml-100k.user", "ml-100k.item")}


def _layout(raw: str) -> str:
  """The ratings file of the layout in `raw`."""
  for ratings_file in LAYOUTS:
    if os.path.isfile(os.path.join(raw, ratings_file)):
      return ratings_file
  raise DataError(f"{raw} holds neither u.data (ML-100K), ratings.dat (ML-1M) nor "
                  "ml-100k.inter (RecBole's ML-100K)")


def _usable_ratings(ratings: pd.DataFrame, path: str, bad_rows: BadRows) -> pd.DataFrame:
  """The ratings with a number from 1 to 5, each (user, item) pair's first only."""
  rating = pd.to_numeric(ratings["rating"], errors="coerce")
  for line in ratings.index[rating.isna()]:
    bad_rows.add("unparsable number", path, int(line), f"rating '{ratings.loc[line, 'rating']}'")
  for line in ratings.index[(rating < 1) | (rating > 5)]:
    bad_rows.add("rating outside 1-5", path, int(line), f"rating '{ratings.loc[line, 'rating']}'")
  ratings = ratings[rating.between(1, 5)].assign(rating=rating[rating.between(1, 5)])
  repeated = ratings.duplicated(["user_id", "item_id"])
  for line in ratings.index[repeated]:
    bad_rows.add("repeated rating", path, int(line),
                 f"user {ratings.loc[line, 'user_id']} rated item "
                 f"{ratings.loc[line, 'item_id']} before")
  return ratings[~repeated]


def build_rows(raw: str, seed: int, bad_rows: BadRows) -> pd.DataFrame:
  """Ratings and seeded negatives, joined with user and item features."""
  ratings_file = _layout(raw)
  read, user_file, item_file = LAYOUTS[ratings_file]
  ratings, users, items = read(raw, bad_rows)
  check_unique_ids(users, "user_id", os.path.join(raw, user_file))
  check_unique_ids(items, "item_id", os.path.join(raw, item_file))
  ratings = _usable_ratings(ratings, os.path.join(raw, ratings_file), bad_rows)
  if ratings.empty:
    raise DataError(f"{raw}: no usable ratings")

  item_ids = np.array(sorted(items["item_id"].unique()))
  item_index = {v: i for i, v in enumerate(item_ids)}
  rated_items = ratings["item_id"].map(item_index)
  if rated_items.isna().any():
    unknown = ratings["item_id"][rated_items.isna()].iloc[0]
    raise DataError(f"{raw}: rated item '{unknown}' is not in the item file")
  user_codes, user_ids = pd.factorize(ratings["user_id"])
  rated_pairs = np.unique(user_codes * len(item_ids) + rated_items.to_numpy(dtype=np.int64))

  rng = np.random.default_rng(seed)
  # A user who rated every item has no negative to draw.
  unrated = len(item_ids) - np.bincount(rated_pairs // len(item_ids), minlength=len(user_ids))
  with_negatives = user_codes[unrated[user_codes] > 0]
  neg_users = np.repeat(with_negatives, NEGATIVES_PER_RATING)
  neg_items = rng.integers(0, len(item_ids), len(neg_users))
  clash = np.isin(neg_users * len(item_ids) + neg_items, rated_pairs)
  while clash.any():  # redraw items the user rated
    neg_items[clash] = rng.integers(0, len(item_ids), int(clash.sum()))
    clash = np.isin(neg_users * len(item_ids) + neg_items, rated_pairs)

  positives = pd.DataFrame({"user_id": ratings["user_id"].to_numpy(),
                            "item_id": ratings["item_id"].to_numpy(), "click": 1,
                            "like": (ratings["rating"].to_numpy() >= LIKE_THRESHOLD).astype(int)})
  negatives = pd.DataFrame({"user_id": user_ids[neg_users], "item_id": item_ids[neg_items],
                            "click": 0, "like": 0})
  rows = pd.concat([positives, negatives], ignore_index=True)
  rows = rows.merge(users[["user_id", "age", "gender", "occupation"]], on="user_id", how="left")
  rows = rows.merge(items[["item_id", "release_year", "genres"]], on="item_id", how="left")
  rows.index = np.arange(1, len(rows) + 1)  # "line" = row number of the built table
  return rows


def prepare_movielens(raw: str, out_dir: str, *, min_count: int = DEFAULT_MIN_COUNT,
                      seed: int = DEFAULT_SEED, tasks: Optional[Sequence[str]] = None,
                      bad_rows: Optional[BadRows] = None, overwrite: bool = False,
                      rows_per_record: int = ROWS_PER_RECORD) -> dict:
  """Prepares ML-100K or ML-1M from directory `raw` in `out_dir`; returns the stats."""
  tasks = check_tasks("MovieLens", tasks or TASKS, TASKS)
  check_out(out_dir, overwrite, inputs=[raw])  # before the rows are built
  if not os.path.isdir(raw):
    raise DataError(f"--raw {raw} is not a directory holding the ML-100K or ML-1M files")
  bad_rows = bad_rows if bad_rows is not None else BadRows()
  rows = build_rows(raw, seed, bad_rows)
  source = os.path.join(raw, "(ratings + negatives)")
  return prepare(
      lambda: (Chunk(rows.iloc[i:i + CHUNK_ROWS], source)
               for i in range(0, len(rows), CHUNK_ROWS)),
      features=FEATURES, labels=tasks, group_column="user_id", out_dir=out_dir,
      min_count=min_count, seed=seed, split=ExactSplit(test=0.1, valid_of_rest=1 / 9),
      overwrite=overwrite, bad_rows=bad_rows, multivalent={"genres": "|"},
      rows_per_record=rows_per_record, inputs=[raw])


if __name__ == "__main__":
  from data_prep import cli
  cli.run_module("movielens")
