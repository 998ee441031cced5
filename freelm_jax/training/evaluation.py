"""Zero-shot evaluation: score every candidate proposition, predict the label
whose proposition is most probably true. No fine-tuning.

Templates: by default each candidate label is scored with the template drawn
for the example (`templates='drawn'`, as in training); `templates='average'`
scores every template of every label and averages P(true) over a label's
templates before the argmax (gin: `evaluation.evaluate.templates`).

Each task reports its metrics (`TeacherTask.metrics`, GLUE's per task) through
scikit-learn's and SciPy's functions (the ones t5's GLUE metrics wrap), on a
0-1 scale: `accuracy`; `f1` (of label 1, as GLUE
does for MRPC and QQP); `matthews` (CoLA); `pearson` and `spearman` between the
gold score and the expected label index under P(true) normalised over the
candidates (STS-B: P("same meaning") / (P("same meaning") + P("different"))).

`run_eval` is a run's whole evaluation: the language task's held-out loss,
then the teacher tasks. Given a `stop` callable, it checks it between batches
and raises `errors.Interrupted` once it is true, having written no rows.
"""

import collections
import functools
import math
from typing import Callable, Iterable, Iterator, Optional, Sequence, TypeVar

from absl import logging
import gin
import numpy as np
from scipy import stats
from sklearn import metrics as sk_metrics
import tabulate

from freelm_jax.common import errors
from freelm_jax.data import input_pipeline
from freelm_jax.data import prefetch
from freelm_jax.training import baselines
import tasks

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (tokens, lengths) -> P(true)
StopFn = Callable[[], bool]  # whether the run was asked to stop
_Item = TypeVar('_Item')


def until_stopped(items: Iterable[_Item], stop: Optional[StopFn]) -> Iterator[_Item]:
  """`items`, checking `stop` before each; errors.Interrupted once it is true."""
  iterator = iter(items)
  while True:
    if stop is not None and stop():
      raise errors.Interrupted('stopped between two evaluation batches.')
    try:
      item = next(iterator)
    except StopIteration:
      return
    yield item


def predict(score: ScoreFn, batches: Iterable[tuple[str, dict]]) -> dict[str, dict]:
  """task -> {'labels', 'predicted', 'gold_scores', 'p_true' [examples, candidates]}.

  A candidate scored with several templates gets their mean P(true).
  """
  scores = collections.defaultdict(
      lambda: collections.defaultdict(lambda: collections.defaultdict(list)))
  labels = collections.defaultdict(dict)
  gold = collections.defaultdict(dict)
  for task, batch in batches:
    p_true = np.asarray(score(batch['tokens'], batch['lengths']))
    for i in np.flatnonzero(batch['weights'] > 0):
      example = int(batch['example_id'][i])
      scores[task][example][int(batch['candidate'][i])].append(float(p_true[i]))
      labels[task][example] = int(batch['label'][i])
      gold[task][example] = float(batch['score'][i])
  out = {}
  for task, by_example in scores.items():
    examples = sorted(by_example)
    p_true = np.array([[np.mean(by_example[e][c]) for c in sorted(by_example[e])]
                       for e in examples])
    out[task] = {'labels': [labels[task][e] for e in examples],
                 'predicted': [int(np.argmax(p)) for p in p_true],
                 'gold_scores': [gold[task][e] for e in examples], 'p_true': p_true}
  return out


def _expected_label(p_true: np.ndarray) -> np.ndarray:
  """Expected label index under P(true) normalised over the candidates."""
  weights = p_true / np.maximum(p_true.sum(axis=1, keepdims=True), 1e-12)
  return weights @ np.arange(p_true.shape[1])


# name -> function of predict()'s per-task dict, on a 0-1 scale.
METRICS = {
    'accuracy': lambda p: sk_metrics.accuracy_score(p['labels'], p['predicted']),
    'f1': lambda p: sk_metrics.f1_score(p['labels'], p['predicted']),  # of label 1
    'matthews': lambda p: sk_metrics.matthews_corrcoef(p['labels'], p['predicted']),
    'pearson': lambda p: stats.pearsonr(p['gold_scores'], _expected_label(p['p_true']))[0],
    'spearman': lambda p: stats.spearmanr(p['gold_scores'], _expected_label(p['p_true']))[0],
}


def task_metrics(names: Sequence[str], prediction: Optional[dict]) -> dict:
  """{metric: value} for the named metrics (None without examples)."""
  if not prediction or not prediction['labels']:
    return {name: None for name in names}
  return {name: float(METRICS[name](prediction)) for name in names}


@functools.lru_cache(maxsize=None)
def reference_accuracies(task: str, split: str, trained_tasks: tuple[str, ...],
                         probe: bool) -> dict:
  """No-model references for a task's split, where it has JSONL splits:
  `baseline_accuracy`, the shortcut rule fitted on the task's train split (or,
  without one, the split's majority label); with `probe`, `probe_accuracy`, a
  bag-of-words logistic regression fitted on the task's train split (or,
  without one, on the trained tasks of its type, labels by index)."""
  info = tasks.get_teacher_task(task)
  if not info.split_paths or split not in info.split_paths or split == 'train':
    return {'baseline_accuracy': None}
  evaluated = list(info.examples(split))
  train = list(info.examples('train')) if 'train' in info.split_paths else []
  out = {'baseline_accuracy': baselines.shortcut_baseline_accuracy(train, evaluated)
         if train else baselines.majority_accuracy(evaluated)}
  if probe:
    if not train:
      same_type = [tasks.get_teacher_task(t) for t in trained_tasks]
      train = [ex for t in same_type if t.task_type == info.task_type and t.split_paths
               and 'train' in t.split_paths for ex in t.examples('train')]
    out['probe_accuracy'] = baselines.bow_probe_accuracy(train, evaluated)
  return out


TEMPLATES = ('drawn', 'average')


# gin's `evaluation.evaluate.*` settings. Not `evaluate` itself: gin would
# append "In call to configurable ..." to every error raised while it runs,
# and the CLIs print a data error as one clean line.
@gin.configurable('evaluate', module='evaluation')
def _settings(templates: str = 'drawn') -> dict:
  return dict(templates=templates)


def evaluate(score: ScoreFn, task_names: Sequence[str], split: str, seq_len: int,
             batch_size: int, trained_task_types: Sequence[str],
             setup: prefetch.WorkerSetup = prefetch.WorkerSetup(),
             task_types: Optional[Sequence[str]] = None,
             max_examples: Optional[int] = None,
             templates: Optional[str] = None,
             trained_tasks: Sequence[str] = (), probe: bool = False,
             stop: Optional[StopFn] = None) -> list[dict]:
  """One eval row per task: accuracy (plus the task's other metrics),
  num_examples, trained (the task is in `trained_tasks`), seen (its type is
  in `trained_task_types`), baseline_accuracy (and, with `probe`, the
  bag-of-words probe's probe_accuracy: `reference_accuracies`).

  `setup`: what the input worker does to register the tasks
  (`prefetch.worker_setup()`); `task_types`: the task-type id order (a
  checkpoint's; default: this process's registration order); `max_examples`: score
  only each task's first examples; `templates`: 'drawn' (each label with the
  example's drawn template) or 'average' (every template, P(true) averaged
  per label); default: gin's `evaluation.evaluate.templates`, else 'drawn';
  `stop`: checked between batches (`until_stopped`).
  """
  templates = templates or _settings()['templates']
  if templates not in TEMPLATES:
    raise errors.ConfigError(f'evaluation.evaluate.templates = {templates!r}: expected one of '
                             f'{", ".join(map(repr, TEMPLATES))}.')
  with prefetch.ProcessIterator(
      'freelm_jax.data.input_pipeline.eval_batches',
      dict(names=list(task_names), seq_len=seq_len, batch_size=batch_size,
           split=split, task_types=list(tasks.task_types() if task_types is None
                                        else task_types),
           max_examples=max_examples, every_template=templates == 'average'),
      setup) as batches:
    predictions = predict(score, until_stopped(batches, stop))
  rows = []
  for name in task_names:
    prediction = predictions.get(name)
    names = dict.fromkeys(('accuracy',) + tasks.get_teacher_task(name).metrics)
    rows.append({
        'task': name, 'split': split,
        **task_metrics(list(names), prediction),
        'num_examples': len(prediction['labels']) if prediction else 0,
        'trained': name in trained_tasks,
        'seen': tasks.get_teacher_task(name).task_type in trained_task_types,
        **reference_accuracies(name, split, tuple(trained_tasks), probe),
    })
  return rows


def run_eval(trainer, params, data, step: int, trained: Sequence[str], writer,
             task_types: Optional[Sequence[str]] = None,
             stop: Optional[StopFn] = None) -> list[dict]:
  """Held-out language loss, then zero-shot evaluation of the held-out tasks,
  written as eval rows of `step` once all are done.

  `data`: a `train_lib.DataConfig`; `trained`: the trained task types;
  `stop`: checked between batches (`until_stopped`).
  Multi-host: every process reads every eval batch, feeds its own rows and
  gets all the results back, so every process computes the same table.
  """
  lm_row = run_lm_eval(trainer, params, data, stop)
  rows = [lm_row] if lm_row else []
  score = lambda tokens, lengths: trainer.score(params, tokens, lengths)
  if data.eval_tasks:
    rows += evaluate(score, data.eval_tasks, data.eval_split, data.teacher_seq_len,
                     data.eval_batch_size, trained, prefetch.worker_setup(),
                     task_types=task_types, max_examples=data.eval_max_examples,
                     trained_tasks=tasks.mixture_tasks(data.teacher_mixture),
                     probe=data.eval_probe, stop=stop)
  for row in rows:
    writer.write({'step': step, 'kind': 'eval', **row})
  logging.info('Evaluation at step %d:\n%s', step, format_table(rows))
  return rows


def run_lm_eval(trainer, params, data, stop: Optional[StopFn] = None) -> Optional[dict]:
  """The eval row of the language task's `eval_split` (its first
  `lm_eval_batches` batches): lm_loss (per token), perplexity, num_tokens.
  None when `lm_eval_batches` is 0 or the task has no such split."""
  if not data.lm_eval_batches:
    return None
  loss_sum = tokens = 0.0
  # In this process: a worker takes ~10 s to start.
  batches = input_pipeline.lm_eval_batches(data.lm_task, data.lm_seq_len, data.lm_batch_size,
                                           data.eval_split, data.lm_eval_batches)
  for batch in until_stopped(batches, stop):
    loss, count = trainer.eval_loss(params, batch, 'lm')
    loss_sum, tokens = loss_sum + loss * count, tokens + count
  if not tokens:
    logging.info('No %r split of %s: no held-out LM loss.', data.eval_split, data.lm_task)
    return None
  loss = loss_sum / tokens
  return {'task': data.lm_task, 'split': data.eval_split, 'lm_loss': loss,
          'perplexity': math.exp(loss) if loss < 700 else math.inf,
          'num_tokens': int(tokens)}


LM_COLUMNS = ['task', 'split', 'num_tokens', 'lm_loss', 'perplexity']


def format_table(rows: Sequence[dict]) -> str:
  """Plain-text tables of eval rows: the teacher tasks', then the language's."""
  lm_rows = [r for r in rows if 'lm_loss' in r]
  rows = [r for r in rows if 'lm_loss' not in r]
  tables = []
  if rows or not lm_rows:
    columns = ['task', 'split', 'trained', 'seen', 'num_examples', 'accuracy']
    columns += [m for m in METRICS if m != 'accuracy' and any(m in r for r in rows)]
    columns += ['baseline_accuracy'] + ['probe_accuracy'] * any('probe_accuracy' in r for r in rows)
    tables.append(tabulate.tabulate([[r.get(c) for c in columns] for r in rows],
                                    headers=columns, floatfmt='.4f'))
  if lm_rows:
    tables.append(tabulate.tabulate([[r.get(c) for c in LM_COLUMNS] for r in lm_rows],
                                    headers=LM_COLUMNS, floatfmt='.4f'))
  return '\n\n'.join(tables)
