"""The embedded default: opinions, tweets, reviews and speeches (real text).

Registered names (data in `data/opinions/`, built by `tools/build_opinions.py`):
  opinions_lm                  the language stream (train texts of every source)
  opinions_<task>              one teacher task per entry of
                               `data/opinions/proposition_templates.json`
  opinions_teacher             the mixture of the trained tasks
Trained: movie and tweet sentiment, subjectivity, genre. Evaluated only:
product-review sentiment (a dataset of a seen type, held out entirely), party
(a task type never trained on) and GLUE SST-2 validation (zero-shot).
"""

import json
import os

import seqio

from tasks import language
from tasks import propositions
from tasks import sources
from tasks import vocabulary

DATA_DIR = vocabulary.DEMO_DIR
PREFIX = 'opinions_'
LANGUAGE_TASK = 'opinions_lm'
TEACHER_MIXTURE = 'opinions_teacher'
SHUFFLE_BUFFER_SIZE = 5000  # the files are shuffled already


def _splits(stem: str) -> dict[str, str]:
  paths = {split: os.path.join(DATA_DIR, f'{stem}.{split}.jsonl.gz')
           for split in ('train', 'validation')}
  return {split: path for split, path in paths.items() if os.path.exists(path)}


def _register_all() -> tuple[list[str], list[str]]:
  """Registers every task; returns (trained, evaluation-only) task names."""
  language.register_language(LANGUAGE_TASK, _splits('lm'),
                             shuffle_buffer_size=SHUFFLE_BUFFER_SIZE)
  with open(os.path.join(DATA_DIR, 'proposition_templates.json')) as f:
    templates = json.load(f)
  trained, held_out = [], []
  for task, spec in templates.items():  # trained tasks first: their type ids are 0..
    propositions.register(
        PREFIX + task, source=_splits(task), instance=spec['instance'],
        propositions={int(k): v for k, v in spec['propositions'].items()},
        label_field='label', task_type=spec['task_type'],
        shuffle_buffer_size=SHUFFLE_BUFFER_SIZE)
    if spec['rate']:
      trained.append((PREFIX + task, spec['rate']))
    else:
      held_out.append(PREFIX + task)
  seqio.MixtureRegistry.add(TEACHER_MIXTURE, trained, sample_fn=sources.sample_from_datasets)
  trained = [name for name, _ in trained]
  return trained, held_out


TRAINED_TASKS, HELD_OUT_TASKS = _register_all()
