"""What machine a benchmark ran on, recorded beside its figures, and the file they go to."""

from __future__ import annotations

import json
import os
import platform

#: CPU features that decide which kernels TensorFlow can use.
_ISA = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


def describe() -> dict:
  """CPU model, cores, memory, instruction-set extensions and software versions."""
  cpu, flags = platform.processor() or platform.machine(), set()
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        if key.strip() == "model name":
          cpu = value.strip()
        elif key.strip() == "flags":
          flags = set(value.split())
  except OSError:  # not Linux
    pass
  memory_gib = None
  try:
    memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
  except (ValueError, OSError, AttributeError):
    pass
  description = {"cpu": cpu, "cpus": os.cpu_count(), "memory_gib": memory_gib,
                 "isa": [isa for isa in _ISA if isa in flags],
                 "os": platform.platform(), "python": platform.python_version()}
  try:
    import tensorflow as tf
    description["tensorflow"] = tf.__version__
    description["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
  except ImportError:
    pass
  return description


def write_report(path: str, report: dict) -> None:
  """Writes a benchmark's `report` as indented JSON to `path`, making its directory."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    json.dump(report, f, indent=2)
