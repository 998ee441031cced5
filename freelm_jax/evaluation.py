"""Zero-shot evaluation: score every candidate proposition, predict the label
whose proposition is most probably true. No fine-tuning."""

import collections
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from sklearn import metrics as sk_metrics
import tabulate

import tasks
from tasks import baseline as baseline_lib
from freelm_jax import prefetch

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (tokens, lengths) -> P(true)


def predict(score: ScoreFn, batches: Iterable[tuple[str, dict]]) -> dict[str, tuple]:
  """task -> (true label indices, predicted label indices), one per example."""
  scores = collections.defaultdict(lambda: collections.defaultdict(dict))
  labels = collections.defaultdict(dict)
  for task, batch in batches:
    p_true = np.asarray(score(batch['tokens'], batch['lengths']))
    for i in np.flatnonzero(batch['weights'] > 0):
      example = int(batch['example_id'][i])
      scores[task][example][int(batch['candidate'][i])] = float(p_true[i])
      labels[task][example] = int(batch['label'][i])
  out = {}
  for task, by_example in scores.items():
    examples = sorted(by_example)
    out[task] = ([labels[task][e] for e in examples],
                 [max(by_example[e], key=by_example[e].get) for e in examples])
  return out


def shortcut_baseline(task: str, split: str) -> Optional[float]:
  """The no-model shortcut baseline, where the task has a JSONL train split."""
  info = tasks.get_teacher_task(task)
  if not info.split_paths or 'train' not in info.split_paths or split == 'train':
    return None
  return baseline_lib.shortcut_baseline_accuracy(
      list(info.examples('train')), list(info.examples(split)))


def evaluate(score: ScoreFn, task_names: Sequence[str], split: str, seq_len: int,
             batch_size: int, trained_task_types: Sequence[str],
             modules: Sequence[str] = ()) -> list[dict]:
  """One eval row per task: accuracy, num_examples, seen, baseline_accuracy."""
  with prefetch.ProcessIterator(
      'freelm_jax.input_pipeline.eval_batches',
      dict(names=list(task_names), seq_len=seq_len, batch_size=batch_size,
           split=split), modules) as batches:
    predictions = predict(score, batches)
  rows = []
  for name in task_names:
    labels, predicted = predictions.get(name, ([], []))
    rows.append({
        'task': name, 'split': split,
        'accuracy': float(sk_metrics.accuracy_score(labels, predicted)) if labels else None,
        'num_examples': len(labels),
        'seen': tasks.get_teacher_task(name).task_type in trained_task_types,
        'baseline_accuracy': shortcut_baseline(name, split),
    })
  return rows


def format_table(rows: Sequence[dict]) -> str:
  """A plain-text table of eval rows."""
  columns = ('task', 'split', 'seen', 'num_examples', 'accuracy', 'baseline_accuracy')
  return tabulate.tabulate([[r.get(c) for c in columns] for r in rows],
                           headers=columns, floatfmt='.4f')
