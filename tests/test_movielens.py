"""data_prep.movielens in its three layouts, and genres as a multivalent feature end to end."""

import numpy as np
import pytest
import tensorflow as tf

from data_prep.movielens import GENRES, prepare_movielens
from data_prep.writer import BadRows, DataError
from stem_tfrs import TrainConfig, training
from stem_tfrs.data.records import parse_records
from stem_tfrs.data.schema import Schema

from tests.support import tiny_model_config

USERS, ITEMS = 30, 60


def ratings(seed=0, n=400):
  rng = np.random.default_rng(seed)
  pairs = set()
  while len(pairs) < n:
    pairs.add((int(rng.integers(1, USERS + 1)), int(rng.integers(1, ITEMS + 1))))
  return [(u, i, int(rng.integers(1, 6)), 880000000 + k) for k, (u, i) in enumerate(sorted(pairs))]


def item_genres(i):
  return [g for k, g in enumerate(GENRES) if (i + k) % 7 == 0] or ["Drama"]


def write_original(directory, extra_data_lines=()):
  lines = [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in ratings()] + list(extra_data_lines)
  (directory / "u.data").write_text("\n".join(lines) + "\n")
  (directory / "u.user").write_text("".join(
      f"{u}|{20 + u}|{'MF'[u % 2]}|job{u % 4}|0{u:04d}\n" for u in range(1, USERS + 1)))
  (directory / "u.item").write_bytes("".join(
      f"{i}|Movie é {i} (1995)|01-Jan-{1990 + i % 8}||http://x|"
      + "|".join("1" if g in item_genres(i) else "0" for g in GENRES) + "\n"
      for i in range(1, ITEMS + 1)).encode("latin-1"))


def write_atomic(directory):
  (directory / "ml-100k.inter").write_text(
      "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
      + "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings()))
  (directory / "ml-100k.user").write_text(
      "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
      + "".join(f"{u}\t{20 + u}\t{'MF'[u % 2]}\tjob{u % 4}\t0{u:04d}\n"
                for u in range(1, USERS + 1)))
  (directory / "ml-100k.item").write_text(
      "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
      + "".join(f"{i}\tMovie {i}\t{1990 + i % 8}\t{' '.join(item_genres(i))}\n"
                for i in range(1, ITEMS + 1)))


def read_all(schema):
  paths = sum((schema.shard_paths(s) for s in ("train", "valid", "test")), [])
  return parse_records(schema, next(iter(tf.data.TFRecordDataset(paths).batch(100_000))))


@pytest.mark.parametrize("layout", ["original", "atomic"])
def test_ratings_become_clicks_and_likes_with_four_negatives_each(tmp_path, layout):
  raw = tmp_path / "raw"
  raw.mkdir()
  (write_original if layout == "original" else write_atomic)(raw)
  stats = prepare_movielens(str(raw), str(tmp_path / "out"))
  assert sum(s["rows"] for s in stats.values()) == 400 * 5
  schema = Schema.load(str(tmp_path / "out"))
  assert schema.tasks == ["click", "like"]
  assert schema.feature("genres").multivalent and not schema.feature("item_id").multivalent
  rows = read_all(schema)
  click, like = rows["click"].numpy(), rows["like"].numpy()
  assert click.sum() == 400 and like[click == 0].sum() == 0
  assert like.sum() == sum(r >= 4 for _, _, r, _ in ratings())
  genres = set((tmp_path / "out" / "vocab" / "genres.txt").read_text().split("\n")) - {""}
  assert genres == {g for i in range(1, ITEMS + 1) for g in item_genres(i)}
  assert (tmp_path / "out" / "vocab" / "gender.txt").read_text().split() in (["M", "F"], ["F", "M"])
  lengths = rows["genres"].row_lengths().numpy()
  assert lengths.max() > 1 and lengths.min() >= 1
  first = rows["item_id"].numpy()[0].decode()
  assert sorted(v.decode() for v in rows["genres"][0].numpy()) == sorted(item_genres(int(first)))


def test_negatives_are_seeded_and_never_rated_items(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  write_original(raw)
  from data_prep.movielens import build_rows
  a = build_rows(str(raw), seed=1, bad_rows=BadRows())
  b = build_rows(str(raw), seed=1, bad_rows=BadRows())
  assert a.equals(b)
  rated = {(str(u), str(i)) for u, i, _, _ in ratings()}
  negatives = a[a.click == 0]
  assert len(negatives) == 1600
  assert not any((u, i) in rated for u, i in zip(negatives.user_id, negatives.item_id))


def test_bad_rating_lines_are_reported(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  write_original(raw, extra_data_lines=["1\t2\t3", "5\t6\tfive\t0"])
  bad = BadRows()
  prepare_movielens(str(raw), str(tmp_path / "out"), bad_rows=bad)
  assert bad.counts == {"wrong column count": 1, "unparsable number": 1}
  with pytest.raises(DataError, match="wrong column count: .*u.data line 401"):
    prepare_movielens(str(raw), str(tmp_path / "o2"), bad_rows=BadRows(strict=True))
  with pytest.raises(DataError, match="neither u.data"):
    prepare_movielens(str(tmp_path), str(tmp_path / "o3"))


def test_out_of_range_and_repeated_ratings_are_bad_rows(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  first = ratings()[0]
  write_original(raw, extra_data_lines=["1\t2\t9\t0", "1\t3\t-1\t0",
                                        "\t".join(map(str, first))])
  bad = BadRows()
  stats = prepare_movielens(str(raw), str(tmp_path / "out"), bad_rows=bad)
  assert bad.counts == {"rating outside 1-5": 2, "repeated rating": 1}
  assert bad.examples["rating outside 1-5"][0].endswith("u.data line 401: rating '9'")
  assert bad.examples["repeated rating"][0].endswith(
      f"u.data line 403: user {first[0]} rated item {first[1]} before")
  assert sum(s["rows"] for s in stats.values()) == 400 * 5


def test_an_id_listed_twice_is_an_error_naming_file_and_id(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  write_original(raw)
  with open(raw / "u.user", "a") as f:
    f.write("3|99|F|job0|00003\n")
  with pytest.raises(DataError, match=r"u.user: user_id '3' has more than one row"):
    prepare_movielens(str(raw), str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()


def test_a_user_who_rated_every_item_gets_no_negatives(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  write_original(raw, extra_data_lines=[f"{USERS}\t{i}\t3\t0" for i in range(1, ITEMS + 1)
                                        if (USERS, i) not in {(u, j) for u, j, _, _ in ratings()}])
  from data_prep.movielens import build_rows
  rows = build_rows(str(raw), seed=0, bad_rows=BadRows())  # used to redraw forever
  assert rows[rows.user_id == str(USERS)].click.min() == 1
  others = rows[rows.user_id != str(USERS)]
  assert (others.click == 0).sum() == 4 * (others.click == 1).sum()


def test_the_one_million_layout(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  (raw / "ratings.dat").write_text("".join(f"{u}::{i}::{r}::{t}\n" for u, i, r, t in ratings()))
  (raw / "users.dat").write_text("".join(f"{u}::{'MF'[u % 2]}::{(18, 25, 35)[u % 3]}::{u % 21}"
                                         f"::{48000 + u}\n" for u in range(1, USERS + 1)))
  (raw / "movies.dat").write_bytes("".join(
      f"{i}::Movie é {i} ({1990 + i % 8})::{'|'.join(item_genres(i))}\n"
      for i in range(1, ITEMS + 1)).encode("latin-1"))
  stats = prepare_movielens(str(raw), str(tmp_path / "out"))
  assert sum(s["rows"] for s in stats.values()) == 400 * 5
  rows = read_all(Schema.load(str(tmp_path / "out")))
  item = int(rows["item_id"].numpy()[0].decode())
  assert rows["release_year"].numpy()[0].decode() == str(1990 + item % 8)
  assert sorted(v.decode() for v in rows["genres"][0].numpy()) == sorted(item_genres(item))
  assert set((tmp_path / "out" / "vocab" / "age.txt").read_text().split()) == {"18", "25", "35"}


@pytest.mark.slow
def test_multivalent_genres_train_and_serve_padded(tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  write_original(raw)
  prepare_movielens(str(raw), str(tmp_path / "data"))
  config = TrainConfig(data_dir=str(tmp_path / "data"), run_dir=str(tmp_path / "run"),
                       export_dir=str(tmp_path / "export"), epochs=1, batch_size=128,
                       in_memory=True)  # the records path pads genres in test_kuairand
  result = training.train(tiny_model_config(), config, verbose=0)
  assert result.metrics["test"]["click"]["auc"] > 0.5
  serve = tf.saved_model.load(result.export_path).signatures["serving_default"]
  _, inputs = serve.structured_input_signature
  assert inputs["genres"].shape.as_list() == [None, None]
  request = {"user_id": ["1", "999"], "item_id": ["2", "nope"], "age": ["21", "?"],
             "gender": ["F", "F"], "occupation": ["job1", "x"], "release_year": ["1992", "?"],
             "genres": [["Action", "Comedy", ""], ["", "", ""]]}
  served = serve(**{k: tf.constant(v) for k, v in request.items()})
  expected = result.model({k: tf.constant(v) for k, v in request.items()})
  for task in ("click", "like"):
    np.testing.assert_allclose(served[task].numpy(), expected[task].numpy(), atol=1e-6)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r"Shape of tensor genres \[2\] is not compatible with expected shape "
                           r"\[\?,\?\]"):
    serve(**{k: tf.constant(v) for k, v in dict(request, genres=["Action", "Comedy"]).items()})
