"""The embedded default's data: no evaluation text is ever trained on."""

import collections
import glob
import gzip
import json
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, 'tasks', 'data', 'opinions')
SHARED_SST2 = os.path.join(REPO, '..', 'shared', 'data', 'glue', 'sst2.validation.jsonl')


def _rows(path):
  with gzip.open(path, 'rt', encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def _key(text):
  """Case, punctuation, spaces and the PTB brackets of SST-2 aside."""
  return re.sub(r'[^a-z0-9]', '', re.sub(r'-[lr][rcs]b-', '', text.lower()))


def _texts(split):
  """file stem -> normalised texts of every file of that split."""
  out = {}
  for path in glob.glob(os.path.join(DATA, f'*.{split}.jsonl.gz')):
    stem = os.path.basename(path).split('.')[0]
    out[stem] = [_key(r.get('text') or r.get('sentence')) for r in _rows(path)]
  return out


@pytest.fixture(scope='module')
def sst2_keys():
  rows = _rows(os.path.join(DATA, 'sst2.validation.jsonl.gz'))
  assert len(rows) == 872
  return {_key(r['sentence']) for r in rows}


def test_no_training_text_matches_or_contains_an_sst2_sentence(sst2_keys):
  train = _texts('train')
  assert set(train) == {'lm', 'movie_sentiment', 'tweet_sentiment', 'subjectivity', 'genre'}
  by_prefix = collections.defaultdict(list)  # SST-2 sentences of 20+ characters
  for k in sst2_keys:
    if len(k) >= 20:
      by_prefix[k[:20]].append(k)
  for stem, keys in train.items():
    exact = [k for k in keys if k in sst2_keys]
    contained = [k for k in keys if any(k.startswith(s, i) for i in range(len(k) - 19)
                                        for s in by_prefix.get(k[i:i + 20], ()))]
    assert not exact and not contained, (stem, exact[:3], contained[:3])


def test_sst2_is_evaluation_only_and_the_glue_copy(sst2_keys):
  for stem, keys in _texts('validation').items():
    if stem != 'sst2':
      assert not sst2_keys & set(keys), stem
  if os.path.exists(SHARED_SST2):
    with open(SHARED_SST2) as f:
      assert {_key(json.loads(line)['sentence']) for line in f} == sst2_keys


def test_validation_texts_are_never_trained_on():
  trained = set().union(*_texts('train').values())
  for stem, keys in _texts('validation').items():
    assert not trained & set(keys), stem


def test_held_out_dataset_and_type_have_no_train_split():
  assert not glob.glob(os.path.join(DATA, 'product_sentiment.train*'))
  assert not glob.glob(os.path.join(DATA, 'party.train*'))


def test_trained_tasks_are_balanced_or_nearly():
  for stem in ('subjectivity', 'genre'):
    counts = collections.Counter(r['label'] for r in _rows(os.path.join(DATA, f'{stem}.train.jsonl.gz')))
    assert max(counts.values()) == min(counts.values()), (stem, counts)


def test_templates_name_three_trained_types_and_an_unseen_one():
  with open(os.path.join(DATA, 'proposition_templates.json')) as f:
    templates = json.load(f)
  trained = {s['task_type'] for s in templates.values() if s['rate']}
  evaluated_only = {s['task_type'] for s in templates.values() if not s['rate']}
  assert len(trained) >= 3 and evaluated_only - trained == {'party'}
