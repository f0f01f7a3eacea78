"""Every flagfile in experiments/ parses against the CLI's own flags and builds valid configs."""

import copy
import glob
import os

import pytest
from absl import flags

from tests.support import REPO
import stem_tfrs.cli  # noqa: F401  (defines every command's flags)
from stem_tfrs.cli import train as train_cli
from stem_tfrs.models import MODEL_NAMES

FLAGFILES = sorted(glob.glob(os.path.join(REPO, "experiments", "*", "*.flags")))


def test_every_data_set_has_a_flagfile_per_model():
  found = {(os.path.basename(os.path.dirname(f)), os.path.basename(f)[:-6]) for f in FLAGFILES}
  assert found == {(d, m) for d in ("tiktok", "kuairand", "kuairand_pure", "qkvideo")
                   for m in MODEL_NAMES}


@pytest.mark.parametrize("flagfile", FLAGFILES, ids=lambda f: os.path.relpath(f, REPO))
def test_flagfile_parses_and_builds_configs(flagfile, monkeypatch):
  monkeypatch.chdir(REPO)
  parsed = flags.FlagValues()
  for name, flag in flags.FLAGS._flags().items():  # a private copy of the CLI's flags
    if name == flag.name:
      parsed[name] = copy.deepcopy(flag)
  parsed.unparse_flags()
  # An unknown flag raises UnrecognizedFlagError: the test fails.
  parsed(["main.py", f"--flagfile={flagfile}"])
  monkeypatch.setattr(train_cli, "FLAGS", parsed)
  model_config, train_config = train_cli.configs_from_flags()
  assert train_config.model == os.path.basename(flagfile)[:-6]
  assert train_config.data_dir == f"data/{os.path.basename(os.path.dirname(flagfile))}"
  assert model_config.embedding_dim == 16 and train_config.batch_size == 4096
  assert model_config.initialization == "fuxictr"  # the authors' initializers
