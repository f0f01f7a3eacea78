"""Fault drill of `prepare`: killed early, mid-write or at the rename, a rerun gives the same data set.

Nothing of the user's is lost: the raw file is untouched, a data set being replaced
(--overwrite) is either the old one or the new one, and no temporary sibling survives
the rerun.
"""

import pytest

from tests.fault_drill import assert_killed, assert_succeeded, files, run, temporaries
from tests.test_logs import write_logs

FLAGS = ["prepare", "--dataset=logs", "--raw=logs.csv", "--features=user_id,item_id,tags",
         "--tasks=click,like", "--group_column=user_id", "--multivalent=tags:|",
         "--min_count=1", "--rows_per_record=8"]
KILL_POINTS = {
    "early, before the first row is read": ("data_prep.writer:_valid_rows", 1),
    "mid-write, in the third shard record": ("data_prep.writer:_RecordWriter._write_record", 3),
    "at the rename that puts the data set in place": ("os:rename@.tmp-", 1),
}


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
  """The raw file, and the data set an uninterrupted run prepares from it."""
  root = tmp_path_factory.mktemp("whole")
  write_logs(root / "logs.csv", 2000, seed=11)
  assert_succeeded(run([*FLAGS, "--out=data"], cwd=root))
  return root


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_prepare_killed_then_rerun_gives_the_uninterrupted_data_set(whole, tmp_path, point):
  raw = (whole / "logs.csv").read_bytes()
  (tmp_path / "logs.csv").write_bytes(raw)
  assert_killed(run([*FLAGS, "--out=data"], cwd=tmp_path, kill_at=KILL_POINTS[point][0],
                    nth=KILL_POINTS[point][1]))
  assert not (tmp_path / "data").exists()  # nothing that training could take for a data set
  assert (tmp_path / "logs.csv").read_bytes() == raw

  assert_succeeded(run([*FLAGS, "--out=data"], cwd=tmp_path))
  assert files(tmp_path / "data") == files(whole / "data")
  assert temporaries(tmp_path) == []
  assert (tmp_path / "logs.csv").read_bytes() == raw


@pytest.mark.slow
@pytest.mark.parametrize("nth", [1, 2], ids=["moving the old set aside", "moving the new in"])
def test_an_overwrite_killed_at_either_rename_keeps_one_whole_data_set(whole, tmp_path, nth):
  (tmp_path / "logs.csv").write_bytes((whole / "logs.csv").read_bytes())
  write_logs(tmp_path / "old.csv", 500, seed=3)
  assert_succeeded(run([*FLAGS, "--raw=old.csv", "--out=data"], cwd=tmp_path))
  old = files(tmp_path / "data")

  assert_killed(run([*FLAGS, "--out=data", "--overwrite"], cwd=tmp_path,
                    kill_at="os:rename", nth=nth))
  left = [files(tmp_path / "data")] if (tmp_path / "data").exists() else []
  left += [files(tmp_path / name / "data") for name in temporaries(tmp_path) if ".old-" in name]
  assert old in left  # the old data set, whole, in place or set aside

  assert_succeeded(run([*FLAGS, "--out=data", "--overwrite"], cwd=tmp_path))
  assert files(tmp_path / "data") == files(whole / "data")
  assert temporaries(tmp_path) == []
