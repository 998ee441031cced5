"""Where a model_dir's metric rows are and how to read them; no TensorFlow.

A local model_dir has one `metrics.jsonl`, appended to. Object stores (gs://,
s3://) cannot append, so there each writer rewrites its own
`metrics_parts/<UTC start time>-<pid>.jsonl` (`training.metrics.MetricsWriter`).
Reading them needs neither the writer's TensorBoard nor JAX, so the plotting
and comparison tools start in a second.
"""

import json

from freelm_jax.common import storage

PARTS_DIR = 'metrics_parts'


def read(model_dir: str) -> list[dict]:
  """All rows of a model_dir: metrics.jsonl's, then each part file's in order."""
  directory = storage.resolve(model_dir)
  files = [directory / 'metrics.jsonl'] if (directory / 'metrics.jsonl').exists() else []
  if (directory / PARTS_DIR).exists():
    files += sorted((directory / PARTS_DIR).glob('*.jsonl'), key=lambda p: p.name)
  if not files:
    raise FileNotFoundError(f'{directory / "metrics.jsonl"}: no such file.')
  return [json.loads(line) for path in files
          for line in path.read_text().splitlines() if line.strip()]
