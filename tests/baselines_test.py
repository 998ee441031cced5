"""The no-model shortcut baseline and the bag-of-words probe."""

import numpy as np

from freelm_jax.training import baselines


def test_shortcut_baseline_uses_prior_and_overlap():
  train = [('a', ['dog', 'cat'], 0)] * 5
  assert baselines.shortcut_baseline_accuracy(train, [('b', ['cat', 'dog'], 1)]) == 1.0
  assert baselines.shortcut_baseline_accuracy([], [('sheepdog', ['tree', 'dog'], 1)]) == 1.0


def _planted_word_examples(count, seed):
  """Label 1 iff the instance holds 'great'; the rest is random words."""
  rng = np.random.default_rng(seed)
  words = [f'w{i}' for i in range(50)]
  examples = []
  for _ in range(count):
    label = int(rng.integers(2))
    text = ' '.join(rng.choice(words, 6)) + (' great' if label else ' awful')
    examples.append((text, ['negative', 'positive'], label))
  return examples


def test_bag_of_words_probe_reads_words_and_majority_counts_labels():
  train, held_out = _planted_word_examples(200, 0), _planted_word_examples(100, 1)
  assert baselines.bow_probe_accuracy(train, held_out) > 0.95
  assert baselines.bow_probe_accuracy([t for t in train if t[2] == 1], held_out) is None
  assert baselines.majority_accuracy([('a', [], 1), ('b', [], 1), ('c', [], 0)]) == 2 / 3
