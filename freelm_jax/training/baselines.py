"""No-model shortcut baseline for multiple-choice teacher tasks.

Every teacher-signal task in FreeLM can be viewed as: given an instance text
and a few candidate targets (the text that differs between the candidate
propositions, e.g. the option), pick the one that makes the true proposition.
This module scores how far one can get WITHOUT a model, using two surface
shortcuts learned from the training split only:

* prior(t):      (times t was the TRUE target in train + 1)
                 / (times t appeared as any candidate in train + 2)
                 i.e. a Laplace-smoothed "how often is this target the answer".
* overlap(i, t): fraction of t's lowercase word tokens (alphanumeric runs of
                 length >= 3) that occur as a substring of the lowercased
                 instance text i; 0 if t has no such token.

score(t) = prior(t) + overlap(instance, t). The highest-scoring candidate is
predicted; exact ties are broken with a `random.Random(seed)` choice. A task
whose validation accuracy under this rule is close to chance (1 / number of
candidates) cannot be solved by target frequency or word overlap alone.

The shortcut rule is pure Python; the bag-of-words probe uses scikit-learn.
"""

from __future__ import annotations

import collections
import random
import re
from typing import Optional, Sequence

from sklearn import feature_extraction
from sklearn import linear_model
from sklearn import pipeline

# (instance_text, candidate_target_texts, index_of_true_candidate)
Example = tuple[str, Sequence[str], int]

_TOKEN_RE = re.compile(r"[a-z0-9]+")
_MIN_TOKEN_LEN = 3


def target_tokens(text: str) -> list[str]:
  """Lowercase alphanumeric tokens of `text` with at least 3 characters."""
  return [t for t in _TOKEN_RE.findall(text.lower()) if len(t) >= _MIN_TOKEN_LEN]


def overlap(instance: str, target: str) -> float:
  """Fraction of the target's tokens found as substrings of the instance."""
  tokens = target_tokens(target)
  if not tokens:
    return 0.0
  lowered = instance.lower()
  return sum(tok in lowered for tok in tokens) / len(tokens)


def target_priors(train: Sequence[Example]) -> dict[str, float]:
  """Laplace-smoothed P(true | target) for every target seen in `train`."""
  seen = collections.Counter()
  true = collections.Counter()
  for _, candidates, label in train:
    seen.update(candidates)
    true[candidates[label]] += 1
  return {t: (true[t] + 1) / (seen[t] + 2) for t in seen}


def predict(instance: str, candidates: Sequence[str],
            priors: dict[str, float], rng: random.Random) -> int:
  """Index of the candidate with the highest prior + overlap score."""
  scores = [priors.get(t, 0.5) + overlap(instance, t) for t in candidates]
  best = max(scores)
  tied = [i for i, s in enumerate(scores) if s == best]
  return tied[0] if len(tied) == 1 else rng.choice(tied)


def shortcut_baseline_accuracy(train: Sequence[Example],
                               evaluation: Sequence[Example],
                               seed: int = 0) -> float:
  """Accuracy of the prior + overlap shortcut rule on `evaluation`.

  Args:
    train: examples used only to estimate target priors.
    evaluation: examples to score.
    seed: seed of the tie-breaking `random.Random`.

  Each example is (instance_text, candidate_target_texts, index_of_true_candidate).
  Targets never seen in `train` get the uninformed prior (0 + 1) / (0 + 2) = 0.5.
  """
  if not evaluation:
    return 0.0
  priors = target_priors(train)
  rng = random.Random(seed)
  correct = sum(predict(instance, candidates, priors, rng) == label
                for instance, candidates, label in evaluation)
  return correct / len(evaluation)


def majority_accuracy(evaluation: Sequence[Example]) -> float:
  """Accuracy of always predicting the split's most frequent label (a
  no-model reference for tasks without a train split; it peeks at the labels)."""
  counts = collections.Counter(label for _, _, label in evaluation)
  return max(counts.values()) / len(evaluation) if evaluation else 0.0


def bow_probe_accuracy(train: Sequence[Example],
                       evaluation: Sequence[Example]) -> Optional[float]:
  """Accuracy of a bag-of-words logistic regression (word uni- and bigrams,
  tf-idf) fitted on `train`'s instances and label indices; None without two
  labels to learn. A reference for what the teacher data alone can teach."""
  if len({label for _, _, label in train}) < 2 or not evaluation:
    return None
  probe = pipeline.make_pipeline(
      feature_extraction.text.TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
      linear_model.LogisticRegression(max_iter=2000))
  probe.fit([text for text, _, _ in train], [label for _, _, label in train])
  predicted = probe.predict([text for text, _, _ in evaluation])
  return float(sum(int(p) == label for p, (_, _, label) in zip(predicted, evaluation))
               / len(evaluation))
