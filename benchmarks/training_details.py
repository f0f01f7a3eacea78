"""Which of the authors' training details move the KuaiRand slice's test AUC: each one, measured.

    python benchmarks/training_details.py [--data_dir data/kuairand_pure_slice]
        [--variants ours,full_reshuffle,no_embedding_l2,fuxictr_init] [--models stem,mmoe]
        [--seeds 5] [--work benchmark/kuairand_details] [--output FILE.json] [--flags '...']

Our trainer and the authors' (FuxiCTR) differ in details the model does not name: they
reshuffle the whole train split every epoch (we shuffle through a buffer unless
`--in_memory`), apply the embedding L2 to whole tables every step (we apply it to the rows a
batch gathers), and start from normal(1e-4) embeddings and Xavier-normal dense layers (we
from a truncated normal and Glorot-uniform). Each variant changes one detail of the slice
study's configuration (`experiments/kuairand_pure/slice_study.md`; prepare the slice as it
says) and runs `python main.py benchmark` on it; `no_embedding_l2` bounds what the form of
the L2 can matter by removing it. The JSON holds, per variant, model and task, the mean and
sample std of the test AUC over seeds, and the difference from `ours` with its 95% interval
paired by seed (`stem_tfrs.evaluation.intervals.seed_interval`). Runs are kept under
`--work/<variant>`, so a rerun resumes, and finished runs copied there are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)  # the checkout

from stem_tfrs.evaluation.intervals import seed_interval  # noqa: E402

from machine import describe, write_report  # noqa: E402  (benchmarks/)

#: The slice study's configuration (experiments/kuairand_pure/slice_study.md), over each
#: model's flagfile.
STUDY_FLAGS = ["--model_flags_dir=experiments/kuairand_pure", "--embedding_dim=16",
               "--num_shared_experts=4", "--num_specific_experts=1",
               "--expert_hidden_units=256,128", "--gate_hidden_units=64",
               "--tower_hidden_units=64", "--batch_size=1024", "--learning_rate=1e-3",
               "--embedding_l2=1e-6", "--epochs=8", "--early_stop_patience=1",
               "--initialization=keras"]
#: Each variant's one change.
VARIANTS = {"ours": [], "full_reshuffle": ["--in_memory"],
            "no_embedding_l2": ["--embedding_l2=0"],
            "fuxictr_init": ["--initialization=fuxictr"],
            "no_gradient_clip": ["--gradient_clip_norm=0"]}


def run_variant(name: str, args) -> dict:
  """Runs (or resumes) the benchmark of one variant; returns its results.json."""
  out = os.path.join(args.work, name)
  command = [sys.executable, os.path.join(REPO, "main.py"), "benchmark",
             f"--data_dir={args.data_dir}", f"--models={args.models}",
             f"--seeds={args.seeds}", *STUDY_FLAGS, *VARIANTS[name], *args.flags.split(),
             f"--output_dir={out}", "--verbose=0"]
  print(" ".join(command[1:]), flush=True)
  result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
  if result.returncode != 0:
    lines = result.stderr.strip().splitlines() or ["(no message)"]
    raise SystemExit(f"error: variant {name}: {lines[-1]}")
  with open(os.path.join(out, "results.json")) as f:
    return json.load(f)


def test_aucs(report: dict) -> dict:
  """{(model, task): {seed: test AUC}} of a benchmark's results.json."""
  aucs = {}
  for run in report["runs"]:
    for task, m in run["metrics"]["test"].items():
      aucs.setdefault((run["model"], task), {})[run["seed"]] = m["auc"]
  return aucs


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default="data/kuairand_pure_slice")
  parser.add_argument("--variants", default="ours,full_reshuffle,no_embedding_l2,fuxictr_init",
                      help=f"Comma-separated, of {', '.join(VARIANTS)}; the first is the "
                           "reference.")
  parser.add_argument("--models", default="stem,mmoe")
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--work", default="benchmark/kuairand_details")
  parser.add_argument("--output", default="benchmarks/results/training_details.json")
  parser.add_argument("--flags", default="",
                      help="More `benchmark` flags, after the study's and the variant's (a "
                           "smoke test shrinks the model and the epochs with them).")
  args = parser.parse_args()
  names = args.variants.split(",")
  unknown = sorted(set(names) - set(VARIANTS))
  if unknown:
    parser.error(f"unknown --variants {unknown}; choose from {', '.join(VARIANTS)}")

  reports = {name: run_variant(name, args) for name in names}
  reference = test_aucs(reports[names[0]])
  rows = []
  for name in names:
    aucs = test_aucs(reports[name])
    # Mean and sample std over seeds as the benchmark aggregated them (results.json).
    for result in sorted(reports[name]["results"], key=lambda r: (r["model"], r["task"])):
      model, task = result["model"], result["task"]
      by_seed = aucs[(model, task)]
      row = {"variant": name, "flags": VARIANTS[name], "model": model, "task": task,
             "seeds": result["seeds"], "auc_mean": result["auc_mean"],
             "auc_std": result["auc_std"]}
      paired = sorted(set(by_seed) & set(reference.get((model, task), {})))
      if name != names[0] and len(paired) > 1:
        diff = seed_interval([by_seed[s] for s in paired],
                             [reference[(model, task)][s] for s in paired])
        row.update(diff_mean=diff["mean"], diff_low=diff["low"], diff_high=diff["high"])
      rows.append(row)
  data = reports[names[0]]["data"]
  write_report(args.output, {
      "machine": describe(), "data": data["name"], "data_rows": data["rows"],
      "variants": names, "models": args.models.split(","), "seeds": args.seeds,
      "study_flags": STUDY_FLAGS, "flags": args.flags, "rows": rows})
  for row in rows:
    diff = (f"  {row['diff_mean']:+.4f} [{row['diff_low']:+.4f}, {row['diff_high']:+.4f}]"
            if "diff_mean" in row else "")
    print(f"{row['variant']:>16} {row['model']:>6} {row['task']:>10} "
          f"AUC {row['auc_mean']:.4f}{diff}")
  print(f"-> {args.output}")


if __name__ == "__main__":
  main()
