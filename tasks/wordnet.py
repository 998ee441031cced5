"""The embedded default: WordNet 3.0 language stream and relation tasks.

Registered names:
  wordnet_lm                 glosses and usage examples (language signal)
  wordnet_<relation>         one teacher task per relation type
  wordnet_teacher            mixture of the relation types seen in training
Which relation is held out entirely (never trained on, for zero-shot
evaluation of an unseen task type) is in `data/wordnet/README.md` and
`UNSEEN_TASKS`. Built by `tasks/build_wordnet.py`.
"""

import json
import os

import seqio

from tasks import language
from tasks import propositions
from tasks import sources
from tasks import vocabulary

DATA_DIR = vocabulary.DEMO_DIR
LANGUAGE_TASK = 'wordnet_lm'
# The files are already shuffled; a small buffer keeps start-up quick.
SHUFFLE_BUFFER_SIZE = 2000
TEACHER_MIXTURE = 'wordnet_teacher'


def _path(name: str) -> str:
  return os.path.join(DATA_DIR, name)


def _register_all() -> tuple[list[str], list[str]]:
  """Registers every WordNet task; returns (seen, unseen) task names."""
  language.register_language(LANGUAGE_TASK, {
      split: _path(f'lm.{split}.jsonl.gz') for split in ('train', 'validation')},
      shuffle_buffer_size=SHUFFLE_BUFFER_SIZE)
  with open(_path('proposition_templates.json')) as f:
    templates = json.load(f)
  seen, unseen = [], []
  # Seen types first, so their task-type ids are 0..len(seen)-1.
  for relation, spec in sorted(templates.items(), key=lambda kv: not kv[1]['seen']):
    name = f'wordnet_{relation}'
    propositions.register(
        name,
        source={split: _path(f'{relation}.{split}.jsonl.gz')
                for split in ('train', 'validation')},
        instance=spec['instance'],
        propositions={int(k): v for k, v in spec['propositions'].items()},
        label_field='label',
        task_type=spec['task_type'],
        shuffle_buffer_size=SHUFFLE_BUFFER_SIZE)
    (seen if spec['seen'] else unseen).append(name)
  seqio.MixtureRegistry.add(TEACHER_MIXTURE, seen, default_rate=1.0,
                            sample_fn=sources.sample_from_datasets)
  return seen, unseen


SEEN_TASKS, UNSEEN_TASKS = _register_all()
