"""The embedded default data: a deterministic synthetic log in the TikTok (ICME 2019) schema.

Run as `python -m data_prep.synthetic --out DIR [--rows N --seed S]`.

Generative story. A world of users and items is drawn once from the seed:

* Users have Zipf-distributed activity (a few users produce many rows), a
  city and a device (`device_id`, shared by a few users).
* Items have Zipf-distributed popularity, an author (`author_id`; authors have
  a "likeability"), a music track (`music_id`), a city (`item_city`), a
  `channel` and a duration bucket (`video_duration`; short videos are finished
  more often).
* Preferences are latent vectors of size 8. Every user has a shared taste
  p_u and one taste per task, p_u^finish and p_u^like, and a mix
  alpha_u ~ Beta(0.6, 0.6): the taste that drives task t is
  sqrt(alpha_u) * p_u + sqrt(1 - alpha_u) * p_u^t. Users with alpha_u near 1
  give the two tasks consistent feedback; users with alpha_u near 0 finish and
  like different items. Users also have a bias per task, again a mix of a
  shared and a task-specific part.
* The knob `task_divergence` D in [0, 1] scales how far users' tasks drift
  apart: alpha_u = 1 - D * (1 - a_u) with a_u ~ Beta(0.6, 0.6). At D = 0 every
  user's two tasks share one taste and one bias (the tasks still differ in
  their item-side effects below); at D = 1, the default, alpha_u = a_u. The
  world's other draws do not depend on D, so data sets that differ only in D
  hold the same users, items and impressions.
  `benchmarks/task_divergence.py` trains the models at several D.

Each row is one impression: a user drawn by activity and an item by popularity;

    logit_finish = c_f + user bias + item bias - 1.0 * duration_z
                   + channel effect + 1.2 * <taste_finish, q_item>
    logit_like   = c_l + user bias + item bias + author likeability
                   + 0.5 * [user city == item city] + 1.2 * <taste_like, q_item>

and finish, like ~ Bernoulli(sigmoid(logit)). The offsets c_f, c_l are solved
once so that the positive rates come out near 30% (finish) and 7% (like).
Chunk k of the rows is drawn from its own generator seeded by (seed, k), so any
number of rows streams in constant memory and the same seed gives the same
file on every machine.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Iterator, Optional

from absl import app, flags, logging
import numpy as np
import pandas as pd

from data_prep.writer import ROWS_PER_RECORD, Chunk, prepare

FEATURES = ["uid", "item_id", "author_id", "item_city", "channel", "music_id",
            "device_id", "video_duration"]
LABELS = ["finish", "like"]
GROUP_COLUMN = "uid"
CHUNK_ROWS = 100_000
_LATENT = 8
_TARGET_RATES = {"finish": 0.30, "like": 0.07}


def _check_divergence(value) -> None:
  if not 0.0 <= value <= 1.0:  # also refuses NaN
    raise ValueError(f"task_divergence must be in [0, 1], got {value}")


def _zipf_probs(n: int, exponent: float) -> np.ndarray:
  p = 1.0 / np.arange(1, n + 1) ** exponent
  return p / p.sum()


def _unit_rows(rng, n: int) -> np.ndarray:
  v = rng.normal(size=(n, _LATENT))
  return v / np.linalg.norm(v, axis=1, keepdims=True)


@dataclasses.dataclass
class World:
  """Users, items and their hidden preferences, drawn once from the seed."""
  seed: int
  num_users: int
  num_items: int
  task_divergence: float = 1.0

  def __post_init__(self):
    _check_divergence(self.task_divergence)
    rng = np.random.default_rng([self.seed, 0])
    u, i = self.num_users, self.num_items
    self.user_p = rng.permutation(_zipf_probs(u, 1.0))
    self.item_p = rng.permutation(_zipf_probs(i, 1.1))
    self.user_city = rng.integers(0, 60, u)
    self.user_device = rng.integers(0, max(u // 3, 1), u)
    alpha = rng.beta(0.6, 0.6, u)[:, None]
    if self.task_divergence != 1.0:  # at 1 the draws stay as they are, bit for bit
      alpha = 1.0 - self.task_divergence * (1.0 - alpha)
    shared, own = _unit_rows(rng, u), {t: _unit_rows(rng, u) for t in LABELS}
    self.taste = {t: np.sqrt(alpha) * shared + np.sqrt(1 - alpha) * own[t] for t in LABELS}
    shared_bias = rng.normal(0, 0.9, u)
    self.user_bias = {t: np.sqrt(alpha[:, 0]) * shared_bias
                      + np.sqrt(1 - alpha[:, 0]) * rng.normal(0, 0.9, u) for t in LABELS}
    self.item_vec = _unit_rows(rng, i) * 1.5
    num_authors = max(i // 8, 1)
    self.item_author = rng.integers(0, num_authors, i)
    self.author_like = rng.normal(0, 0.9, num_authors)
    self.item_music = rng.integers(0, max(i // 4, 1), i)
    self.item_city = rng.integers(0, 60, i)
    self.item_channel = rng.integers(0, 5, i)
    self.item_duration = rng.integers(5, 65, i)
    self.channel_finish = rng.normal(0, 0.3, 5)
    self.item_bias = {t: rng.normal(0, 0.8, i) for t in LABELS}
    self.offset = {t: 0.0 for t in LABELS}
    logits = self._logits(*self._draw_pairs(np.random.default_rng([self.seed, 1]), 50_000))
    for task, target in _TARGET_RATES.items():  # bisection on the offset
      lo, hi = -10.0, 10.0
      for _ in range(50):
        mid = (lo + hi) / 2
        rate = np.mean(1 / (1 + np.exp(-(logits[task] + mid))))
        lo, hi = (mid, hi) if rate < target else (lo, mid)
      self.offset[task] = (lo + hi) / 2

  def _draw_pairs(self, rng, n: int):
    users = rng.choice(self.num_users, size=n, p=self.user_p)
    items = rng.choice(self.num_items, size=n, p=self.item_p)
    return users, items

  def _logits(self, users, items):
    affinity = {t: np.einsum("nd,nd->n", self.taste[t][users], self.item_vec[items])
                for t in LABELS}
    duration_z = (self.item_duration[items] - 35.0) / 17.0
    return {
        "finish": (self.offset["finish"] + self.user_bias["finish"][users]
                   + self.item_bias["finish"][items] - 1.0 * duration_z
                   + self.channel_finish[self.item_channel[items]]
                   + 1.6 * affinity["finish"]),
        "like": (self.offset["like"] + self.user_bias["like"][users]
                 + self.item_bias["like"][items]
                 + self.author_like[self.item_author[items]]
                 + 0.5 * (self.user_city[users] == self.item_city[items])
                 + 1.6 * affinity["like"]),
    }

  def rows(self, chunk_index: int, n: int) -> pd.DataFrame:
    """Chunk `chunk_index` of the log: `n` impressions with raw ids and labels."""
    rng = np.random.default_rng([self.seed, 2, chunk_index])
    users, items = self._draw_pairs(rng, n)
    logits = self._logits(users, items)
    frame = pd.DataFrame({
        "uid": users, "item_id": items, "author_id": self.item_author[items],
        "item_city": self.item_city[items], "channel": self.item_channel[items],
        "music_id": self.item_music[items], "device_id": self.user_device[users],
        "video_duration": self.item_duration[items]}).astype(str)
    for task in LABELS:
      p = 1 / (1 + np.exp(-logits[task]))
      frame[task] = (rng.random(n) < p).astype(np.int64)
    return frame


def generate(rows: int, seed: int, task_divergence: float = 1.0) -> Iterator[Chunk]:
  """Yields the synthetic log as chunks; the same rows for the same arguments."""
  world = World(seed=seed, num_users=max(rows // 80, 50), num_items=max(rows // 40, 100),
                task_divergence=task_divergence)
  for k, start in enumerate(range(0, rows, CHUNK_ROWS)):
    n = min(CHUNK_ROWS, rows - start)
    frame = world.rows(k, n)
    frame.index = range(start + 1, start + n + 1)
    yield Chunk(frame, source="synthetic")


def prepare_synthetic(out_dir: str, rows: int = 400_000, seed: int = 2023,
                      min_count: int = 2, overwrite: bool = False,
                      rows_per_record: int = ROWS_PER_RECORD,
                      processes: Optional[int] = None,
                      task_divergence: float = 1.0) -> dict:
  """Generates and prepares the synthetic data set in `out_dir`; returns its stats.

  `task_divergence` (in [0, 1]) scales how far each user's tasks drift apart; see the
  module's docstring.
  """
  if rows < 1:
    raise ValueError(f"rows must be >= 1, got {rows}")
  _check_divergence(task_divergence)
  return prepare(lambda: generate(rows, seed, task_divergence), features=FEATURES, labels=LABELS,
                 group_column=GROUP_COLUMN, out_dir=out_dir, min_count=min_count,
                 seed=seed, overwrite=overwrite, rows_per_record=rows_per_record,
                 processes=processes)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command-line flags of `python -m data_prep.synthetic`."""
  flags.DEFINE_string("out", None, "Output directory of the prepared data set.")
  flags.DEFINE_integer("rows", 400_000, "Rows to generate (all splits together).")
  flags.DEFINE_integer("seed", 2023, "Seed of the world, the rows and the split.")
  flags.DEFINE_integer("min_count", 2, "Values seen fewer times in train map to OOV.")
  flags.DEFINE_float("task_divergence", 1.0, "How far each user's tasks drift apart, in [0, 1]: "
                     "0 gives every user one taste and bias for both tasks, 1 (the embedded "
                     "data) a per-user mix.")
  flags.DEFINE_bool("overwrite", False, "Replace an existing --out directory.")
  flags.DEFINE_integer("rows_per_record", ROWS_PER_RECORD,
                       "Rows a TFRecord record holds; 1 writes one tf.train.Example per row.",
                       lower_bound=1)
  flags.DEFINE_integer("processes", os.cpu_count() or 1, "Worker threads validating, counting "
                       "and encoding blocks of rows (default: the machine's cores); the data set "
                       "is the same for any number.", lower_bound=1)
  flags.mark_flag_as_required("out")


def main(argv):
  del argv
  try:
    stats = prepare_synthetic(FLAGS.out, rows=FLAGS.rows, seed=FLAGS.seed,
                              min_count=FLAGS.min_count, overwrite=FLAGS.overwrite,
                              rows_per_record=FLAGS.rows_per_record, processes=FLAGS.processes,
                              task_divergence=FLAGS.task_divergence)
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  logging.info("wrote %s: %s", FLAGS.out, stats)
  print(f"wrote {FLAGS.out}: " + ", ".join(
      f"{split} {s['rows']:,} rows" for split, s in stats.items()))
  return 0


if __name__ == "__main__":
  define_flags()
  app.run(main)
