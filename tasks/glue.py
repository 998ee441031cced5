"""The GLUE teacher suite as FreeLM propositions: from TFDS, or a local twin.

Registered names (`prefix` + task):
  TFDS (`register_tfds`, `glue/<task>:2.0.0`, prepared in `data_dir`):
    glue_sst2 glue_cola glue_mnli glue_mnli_matched glue_mnli_mismatched
    glue_qnli glue_qqp glue_rte glue_mrpc glue_wnli glue_stsb
    (`glue_mnli_matched`/`_mismatched` are MNLI's two validation splits under
    the split name `validation`.)
  local (`register_local`): `glue_local_<task>` for every `<task>.<split>.jsonl`
    in a directory (TFDS field names; `DEFAULT_GLUE_DIR`, written by
    `python -m freelm_jax.build_glue`); each file's `<split>` becomes a split, and
    `train_split` names the file split that serves as `train`.
  mixtures: `<prefix>train`, the tasks with a train split, examples-proportional
    with a cap (T5 style; `DEFAULT_CAP`).

SST-2's propositions are the FreeLM authors' wording (`AUTHORS_WORDING`), one
per label; every other task's label has two templates of this project's own,
one drawn per example with a fixed seed. STS-B (similarity 0-5) becomes a
truth judgement: "the two sentences mean roughly the same" is true when the
gold score is >= 3 (STS
annotation guideline: 3 = "roughly equivalent, but some important information
differs"), else false. Its evaluation reports GLUE's Pearson and Spearman
correlations between the gold score and the model's P(same meaning), plus the
binary accuracy.

These functions are called from gin (paths are known only at run time);
`tasks.gin_configurables` records those calls for the input workers to repeat.
"""

import functools
import glob
import os
import re
from typing import Optional, Sequence

import seqio

from freelm_jax.common import errors
from tasks import propositions
from tasks import sources
from tasks import vocabulary as vocabulary_lib

DEFAULT_CAP = 2**16  # examples-proportional mixing: rates capped at this many examples.
TFDS_VERSION = '2.0.0'
DEFAULT_GLUE_DIR = '~/.cache/freelm_jax/glue'  # the local twin's files; tasks/build_glue.py


def _nli(hypothesis: str) -> dict:
  """Entailment (0) / neutral (1) / contradiction (2) templates."""
  return {
      0: [f'"{{{hypothesis}}}" follows from the text.',
          f'The text implies that "{{{hypothesis}}}" is true.'],
      1: [f'"{{{hypothesis}}}" may or may not be true, given the text.',
          f'The text neither implies nor contradicts "{{{hypothesis}}}".'],
      2: [f'"{{{hypothesis}}}" contradicts the text.',
          f'The text implies that "{{{hypothesis}}}" is false.'],
  }


def _entails(hypothesis: str, entailed: int) -> dict:
  """Two-way entailment templates; `entailed` is the label value meaning yes."""
  return {
      entailed: [f'"{{{hypothesis}}}" follows from the text.',
                 f'The text implies that "{{{hypothesis}}}" is true.'],
      1 - entailed: [f'"{{{hypothesis}}}" does not follow from the text.',
                     f'The text does not imply that "{{{hypothesis}}}" is true.'],
  }


def _same_meaning(other: str, yes: int, what: str) -> dict:
  return {
      yes: [f'"{{{other}}}" means the same as the {what}.',
            f'The {what} is a paraphrase of "{{{other}}}".'],
      1 - yes: [f'"{{{other}}}" means something different from the {what}.',
                f'The {what} is not a paraphrase of "{{{other}}}".'],
  }


# task -> register() arguments (TFDS field names; the local files use the same).
SPECS = {
    # The authors' wording (FreeLM's README), the only GLUE template known from them.
    'sst2': dict(instance='{sentence}', task_type='sentiment', propositions={
        0: ['Here, the movie review is emotionally negative.'],
        1: ['Here, the movie review is emotionally positive.']}),
    'cola': dict(instance='{sentence}', task_type='acceptability', metrics=('matthews', 'accuracy'),
                 propositions={
        0: ['The text is not an acceptable English sentence.',
            'The text is ungrammatical.'],
        1: ['The text is an acceptable English sentence.',
            'The text is grammatical.']}),
    'mnli': dict(instance='{premise}', task_type='nli', propositions=_nli('hypothesis')),
    'qnli': dict(instance='{sentence}', task_type='question_answering', propositions={
        0: ['The text answers the question "{question}"',
            'The answer to "{question}" is in the text.'],
        1: ['The text does not answer the question "{question}"',
            'The answer to "{question}" is not in the text.']}),
    'qqp': dict(instance='{question1}', task_type='paraphrase', metrics=('f1', 'accuracy'),
                propositions=_same_meaning('question2', 1, 'question')),
    'rte': dict(instance='{sentence1}', task_type='nli', propositions=_entails('sentence2', 0)),
    'mrpc': dict(instance='{sentence1}', task_type='paraphrase', metrics=('f1', 'accuracy'),
                 propositions=_same_meaning('sentence2', 1, 'text')),
    'wnli': dict(instance='{sentence1}', task_type='nli', propositions=_entails('sentence2', 1)),
    'stsb': dict(instance='{sentence1}', task_type='similarity', label_thresholds=(3.0,),
                 metrics=('pearson', 'spearman', 'accuracy'),
                 propositions=_same_meaning('sentence2', 1, 'text')),
}
# Tasks whose propositions are the FreeLM authors' own wording; the rest are ours.
AUTHORS_WORDING = ('sst2',)
# Task types in a fixed order (ids in checkpoints are recorded anyway).
TASK_TYPES = ('sentiment', 'acceptability', 'nli', 'question_answering', 'paraphrase',
              'similarity')
# Local file stem -> spec; MNLI's validation splits are files of their own.
LOCAL_TASKS = {**{t: t for t in SPECS}, 'mnli_matched': 'mnli', 'mnli_mismatched': 'mnli'}
# TFDS task -> (config, split name -> TFDS split).
TFDS_TASKS = {
    **{t: (t, ('train', 'validation')) for t in SPECS if t != 'mnli'},
    'mnli': ('mnli', ('train', 'validation_matched', 'validation_mismatched')),
    'mnli_matched': ('mnli', {'validation': 'validation_matched'}),
    'mnli_mismatched': ('mnli', {'validation': 'validation_mismatched'}),
}
_REGISTERED: dict[str, dict] = {}  # task name -> the arguments it was registered with.


def _register_task(name: str, task: str, source, vocab_dir: Optional[str],
                   source_key) -> None:
  """Registers one GLUE task unless it is registered already with the same arguments."""
  key = dict(task=task, source=source_key, vocab_dir=vocab_dir)
  if name in _REGISTERED:
    if _REGISTERED[name] != key:
      raise errors.ConfigError(f'GLUE task {name!r} is already registered with other '
                               f'arguments ({_REGISTERED[name]} vs {key}).')
    return
  propositions.register(name, source=source, label_field='label',
                        vocabulary=vocabulary_lib.from_dir(vocab_dir),
                        **SPECS[LOCAL_TASKS[task]])
  _REGISTERED[name] = key


def _mixture(name: str, task_names: Sequence[str], cap: Optional[int]) -> str:
  """An examples-proportional mixture (rate = min(train examples, cap))."""
  if not task_names:
    raise errors.ConfigError(f'Mixture {name!r}: no task has a train split.')
  if name not in seqio.MixtureRegistry.names():
    rate = functools.partial(seqio.mixing_rate_num_examples, maximum=cap)
    seqio.MixtureRegistry.add(name, [(t, rate) for t in task_names],
                              sample_fn=sources.sample_from_datasets)
  return name


def _types_first() -> None:
  for task_type in TASK_TYPES:
    propositions.declare_task_type(task_type)


def register_tfds(vocab_dir: Optional[str] = None, data_dir: Optional[str] = None,
                  prefix: str = 'glue_', cap: Optional[int] = DEFAULT_CAP) -> str:
  """Registers the TFDS GLUE tasks and their train mixture; returns its name.

  Args:
    vocab_dir: directory (local or gs://) of GPT-2's vocab.json + merges.txt
      (default: the embedded demo BPE).
    data_dir: the TFDS data_dir holding the prepared `glue/*` datasets.
    prefix: prepended to task names; the mixture is `<prefix>train`.
    cap: examples-proportional cap (None: proportional without cap).
  """
  _types_first()
  for task, (config, splits) in TFDS_TASKS.items():
    name = f'glue/{config}:{TFDS_VERSION}'
    source = sources.tfds_source(name, splits=splits, data_dir=data_dir)
    _register_task(prefix + task, task, source, vocab_dir,
                   source_key=(name, str(splits), data_dir))
  train = [prefix + t for t, (_, splits) in TFDS_TASKS.items() if 'train' in splits]
  return _mixture(prefix + 'train', train, cap)


def tfds_eval_tasks(prefix: str = 'glue_') -> list[str]:
  """The TFDS tasks scored on `validation` (MNLI as its two validation splits)."""
  return [prefix + t for t in TFDS_TASKS if t != 'mnli']


def build_command(glue_dir: str) -> str:
  """The command that writes the local twin's files into `glue_dir`."""
  default = os.path.expanduser(DEFAULT_GLUE_DIR)
  flag = '' if os.path.expanduser(glue_dir) == default else f' --glue_dir={glue_dir}'
  return f'python -m freelm_jax.build_glue{flag}'


def _missing(glue_dir: str, what: str) -> sources.DataError:
  """The one-line error for a GLUE_DIR without `what`, naming the command that builds it."""
  return sources.DataError(
      f'GLUE_DIR {glue_dir!r} has no {what}: build the GLUE files with '
      f'`{build_command(glue_dir)}` (docs/data.md).')


def _local_splits(glue_dir: str, train_split: str) -> dict[str, dict[str, str]]:
  """task -> {split: file} for every `<task>.<split>.jsonl` in `glue_dir`."""
  found: dict[str, dict[str, str]] = {}
  for path in sorted(glob.glob(os.path.join(glue_dir, '*.jsonl'))):
    match = re.fullmatch(r'(\w+)\.([\w-]+)\.jsonl', os.path.basename(path))
    if match and match.group(1) in LOCAL_TASKS:
      found.setdefault(match.group(1), {})[match.group(2)] = os.path.abspath(path)
  if not found:
    raise _missing(glue_dir, '<task>.<split>.jsonl file of a GLUE task (such as '
                   'sst2.validation.jsonl)')
  for splits in found.values():
    if train_split in splits:
      splits['train'] = splits[train_split]
  return found


def register_local(glue_dir: str, train_split: str = 'train',
                   vocab_dir: Optional[str] = None, prefix: str = 'glue_local_',
                   cap: Optional[int] = DEFAULT_CAP) -> dict[str, list[str]]:
  """Registers the local twin; returns {split: task names having it}.

  Also registers the mixture `<prefix>train` of the tasks that have a train
  split (their `<task>.<train_split>.jsonl`), if any. `glue_dir` may start
  with `~`.
  """
  glue_dir = os.path.expanduser(glue_dir)
  _types_first()
  by_split: dict[str, list[str]] = {}
  for task, splits in _local_splits(glue_dir, train_split).items():
    _register_task(prefix + task, task, splits, vocab_dir, source_key=splits)
    for split in splits:
      by_split.setdefault(split, []).append(prefix + task)
  if by_split.get('train'):
    _mixture(prefix + 'train', by_split['train'], cap)
  return by_split


def local_mixture(glue_dir: str, train_split: str = 'train',
                  vocab_dir: Optional[str] = None, prefix: str = 'glue_local_',
                  cap: Optional[int] = DEFAULT_CAP) -> str:
  """The local twin's train mixture name (registers the twin)."""
  if not register_local(glue_dir, train_split, vocab_dir, prefix, cap).get('train'):
    raise _missing(os.path.expanduser(glue_dir),
                   f'<task>.{train_split}.jsonl to train on (such as sst2.{train_split}.jsonl; '
                   f'GLUE_TRAIN_SPLIT={train_split!r})')
  return prefix + 'train'


def local_eval_tasks(glue_dir: str, split: str = 'paper1k', train_split: str = 'train',
                     vocab_dir: Optional[str] = None, prefix: str = 'glue_local_',
                     cap: Optional[int] = DEFAULT_CAP) -> list[str]:
  """The local twin's tasks that have `split` (registers the twin)."""
  names = register_local(glue_dir, train_split, vocab_dir, prefix, cap).get(split)
  if not names:
    raise _missing(os.path.expanduser(glue_dir),
                   f'<task>.{split}.jsonl file (such as sst2.{split}.jsonl)')
  return names
