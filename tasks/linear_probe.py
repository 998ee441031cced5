r"""How much of a two-option teacher task a linear model over word pairs learns.

`tasks/baseline.py` scores the no-model shortcuts (target prior, word
overlap). This probe asks the next question: what does a learner that sees
only word-level features, trained to convergence on the whole train split,
reach on held-out examples? It fits scikit-learn's logistic regression on the
difference of hashed features of the two options (so only what tells the
options apart counts) with three feature sets:

* `option`:      the option's words and the whole option string (target priors);
* `word_pairs`:  plus (word of the instance's `word`, option word) pairs and
                 (3-letter suffix, option word) pairs (memorised facts, morphology);
* `gloss_pairs`: plus (context word, option word) pairs (reading the gloss as a
                 bag of words).

A small transformer trained for a few hundred steps learns at most about what
these learners reach; a task near 0.5 with every feature set needs knowledge
beyond word co-occurrence in the teacher data.

  python -m tasks.linear_probe [--data_dir=tasks/data/wordnet]
"""

import gzip
import json
import os
import re
from typing import Sequence

from absl import app
from absl import flags
import numpy as np
from sklearn import feature_extraction
from sklearn import linear_model

FEATURE_SETS = ('option', 'word_pairs', 'gloss_pairs')
_WORD_RE = re.compile(r'[a-z0-9]+')


def _words(text: str) -> list[str]:
  return _WORD_RE.findall(text.lower())


def option_features(example: dict, option: str, feature_set: str) -> list[str]:
  """Hashed-feature names of one option of `example` under `feature_set`."""
  target = _words(option)
  features = [f'option:{option}'] + [f'o:{t}' for t in target]
  if feature_set in ('word_pairs', 'gloss_pairs'):
    for w in _words(example['word']):
      features += [f'w:{w}|{t}' for t in target] + [f'suffix:{w[-3:]}|{t}' for t in target]
  if feature_set == 'gloss_pairs':
    for g in _words(example.get('gloss', '')):
      features += [f'g:{g}|{t}' for t in target]
  return features


def _design(examples: Sequence[dict], feature_set: str):
  hasher = feature_extraction.FeatureHasher(2**20, input_type='string')
  first, second = (hasher.transform(option_features(e, e[f'option{i}'], feature_set)
                                    for e in examples) for i in (0, 1))
  return second - first, np.array([e['label'] for e in examples])


def probe_accuracy(train: Sequence[dict], evaluation: Sequence[dict],
                   feature_set: str) -> tuple[float, float]:
  """(train, evaluation) accuracy of the logistic-regression probe.

  Examples are dicts with `word`, optional `gloss`, `option0`, `option1` and
  `label` (the index of the true option).
  """
  x_train, y_train = _design(train, feature_set)
  x_eval, y_eval = _design(evaluation, feature_set)
  model = linear_model.LogisticRegression(max_iter=2000).fit(x_train, y_train)
  return model.score(x_train, y_train), model.score(x_eval, y_eval)


def _read(path: str) -> list[dict]:
  with gzip.open(path, 'rt') as f:
    return [json.loads(line) for line in f]


_DATA_DIR = flags.DEFINE_string('data_dir', 'tasks/data/wordnet',
                                'Directory with <type>.{train,validation}.jsonl.gz.')


def main(argv):
  del argv
  with open(os.path.join(_DATA_DIR.value, 'proposition_templates.json')) as f:
    types = json.load(f)
  for name, spec in types.items():
    train, evaluation = (_read(os.path.join(_DATA_DIR.value, f'{name}.{split}.jsonl.gz'))
                         for split in ('train', 'validation'))
    row = {'type': name, 'seen': spec['seen']}
    for feature_set in FEATURE_SETS:
      fit, held_out = probe_accuracy(train, evaluation, feature_set)
      row[feature_set] = {'train': round(fit, 3), 'validation': round(held_out, 3)}
    print(json.dumps(row), flush=True)


if __name__ == '__main__':
  app.run(main)
