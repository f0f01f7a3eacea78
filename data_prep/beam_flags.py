"""`--runner` and `--beam_options`: prepare on Apache Beam instead of this machine.

Imported by `data_prep.cli`, so `python -m data_prep.<name>` and `python main.py
prepare` both take them. Without `--runner` the local path runs and this
module changes nothing. With it, `loader` hands the loader's arguments to
`data_prep.beam`, which runs the same preparation as a Beam pipeline on that
runner.

Design decision: the pipeline options are one flag holding a Beam command
line (`--beam_options="--direct_num_workers=2 --direct_running_mode=
multi_processing"`), split as a shell splits it and given to Beam's own
`PipelineOptions`: Beam's options keep Beam's names and Beam's checks, and
none of them can collide with an absl flag of ours. Apache Beam is an
optional extra (`pip install -e ".[beam]"`); it is imported only when a
runner is asked for, so the local path never pays for it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

from absl import flags
from stem_tfrs.errors import BeamUnavailableError  # noqa: F401  (raised here; defined with the others)

#: Runners the docs cover; Beam's others (PortableRunner, PrismRunner, ...) are accepted too.
RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner")

flags.DEFINE_string("runner", None, "Run the preparation as an Apache Beam pipeline on this "
                    f"runner ({', '.join(RUNNERS)}; docs/beam.md). Default: none, prepare on "
                    "this machine. Needs the beam extra: pip install -e \".[beam]\".")
flags.DEFINE_string("beam_options", "", "With --runner: Beam pipeline options, as one string "
                    "of Beam's own flags (\"--project=P --region=R --temp_location=gs://B/tmp\"; "
                    "\"--direct_num_workers=2 --direct_running_mode=multi_processing\").")


def loader(name: str, local: Any, runner: Optional[str] = None,
           beam_options: Optional[str] = None) -> Any:
  """The loader `data_prep.cli.prepare_from_flags` runs: `local` itself without a runner, else
  one whose `prepare` runs loader `name`'s preparation on Beam with the same arguments.

  Args:
    name: The loader's name (`data_prep.cli.loaders`).
    local: Its `data_prep.cli.Loader`.
    runner, beam_options: By default, the flags'.
  """
  runner = flags.FLAGS.runner if runner is None else runner
  options = flags.FLAGS.beam_options if beam_options is None else beam_options
  if not runner:
    if options:
      return dataclasses.replace(local, prepare=_refuse(
          "--beam_options applies only with --runner (a Beam runner; docs/beam.md)"))
    return local

  def prepare(raw: str, out_dir: str, **kwargs) -> dict:
    try:
      from data_prep import beam  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      if not (e.name or "").startswith("apache_beam"):
        raise
      raise BeamUnavailableError(
          f"--runner={runner} needs Apache Beam, which is not installed: "
          "pip install -e \".[beam]\"") from None
    return beam.prepare_on_beam(name, raw, out_dir, runner=runner, beam_options=options,
                                **kwargs)

  return dataclasses.replace(local, prepare=prepare)


def _refuse(message: str) -> Callable[..., dict]:
  def prepare(*args, **kwargs) -> dict:
    del args, kwargs
    raise ValueError(message)
  return prepare
