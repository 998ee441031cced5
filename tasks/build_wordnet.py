r"""Builds the embedded FreeLM demo dataset from the WordNet 3.0 database files.

Usage (from the repository root; about a minute on 2 cores):

  python tasks/build_wordnet.py --wordnet_dir=/usr/share/wordnet \
      --out_dir=tasks/data/wordnet --seed=0

Reads the documented `data.*`, `index.*` and `cntlist.rev` files directly
(formats: wndb(5WN), cntlist(5WN)) and writes, under --out_dir:

* lm.{train,validation}.jsonl.gz: {"text": "poodle, poodle dog: <definition>.
  Example: <usage>."}, one line per noun/verb/adjective synset.
* R.{train,validation}.jsonl.gz for every relation type R in `RELATIONS`:
  {"word": w, "gloss": g, "option0": a, "option1": b, "label": i}, exactly one
  option true. The instance is "{word}: {gloss}" (reading comprehension): `g`
  is the short definition of the sense the relation uses ("poodle: an
  intelligent dog with a heavy curly coat"), or, for `definition` (whose
  options are definitions), a usage example of that sense.
* proposition_templates.json, LICENSE and README.md (counts and shortcut
  baselines). vocab.json + merges.txt (byte-level BPE) are REUSED from
  --tokenizer_dir (token ids stay fixed) unless --train_tokenizer is given.

Pipeline: parse WordNet -> per relation, candidate (word, true target, gloss)
triples, most common senses first, split by held-out word -> false options
and labels, glosses shortened so that "word: gloss [sep] proposition [cls]"
fits in --max_proposition_tokens -> LM stream (glosses of the examples'
synsets first) -> files.

How shortcuts are defeated (the README reports the measured baselines):
* False options are drawn without replacement from the true targets of the
  same relation, split and part of speech, so every target is the true option
  about as often as the false one (its prior of being true is ~0.5).
* Equal overlap: the false option overlaps the instance text exactly as much
  as the true one (tasks/baseline.py `overlap`). If the true target occurs in
  the gloss ("dog" in the poodle gloss), the false one is another valid target
  found in the gloss ("coat"); if not, the false one is not in it either.
* A false option is never true for the word under any of its senses (checked
  against WordNet closures, e.g. all hypernym ancestors of all senses).
* Pairs that share spelling (a >= 3-letter token of one inside the other,
  "sheepdog"/"dog", or a shared stem, "painful"/"painless") are dropped and
  false options are drawn without such overlap with the word.
* Validation words never occur as a train word, nor do their synsets; for the
  symmetric relations (synonym, antonym) train rows whose target is a
  validation word are dropped too.

All randomness comes from --seed; gzip headers use mtime=0, so two runs write
identical bytes.
"""

import argparse
import collections
import dataclasses
import functools
import gzip
import importlib.util
import io
import json
import os
import random
import re
import shutil
import sys
from typing import Callable, Iterable, Optional

POS_FILES = {'n': 'noun', 'v': 'verb', 'a': 'adj', 'r': 'adv'}
SS_TYPE_NUMBER = {'n': 1, 'v': 2, 'a': 3, 'r': 4, 's': 5}
LM_POS = ('n', 'v', 'a')  # adverbs are left out of the LM stream.
SPECIAL_TOKENS = ['[pad]', '<|endoftext|>', '[sep]', '[cls]']  # ids 0..3.
VOCAB_SIZE = 8192
DEFINITION_MAX_WORDS = 12  # definition options.
GLOSS_MAX_WORDS = 14  # context glosses (instance "{word}: {gloss}").
HELD_OUT_TYPE = 'instance_hypernym'
MAX_PER_WORD = 3  # examples per word and relation (more distinct words).
SLACK = 1.6  # candidates per wanted example, for failed false-option draws.
VAL_SLACK = 1.5  # validation candidates (held-out words) per wanted example.
FALSE_TRIES = 128  # random draws from the target pool per false option.
MAX_PASSES = 6  # false-option reassignments until no example is dropped.
MAX_POSTINGS = 200  # tokens in more pool targets are not looked up (sampled).

# Natural-language templates (python str.format with word / option0 / option1).
RELATIONS = {
    'hypernym': ('A {word} is a kind of {option}.', True),
    'meronym': ('A {word} is a part of a {option}.', True),
    'synonym': ('{word} means the same as {option}.', True),
    'antonym': ('{word} is the opposite of {option}.', True),
    'definition': ('The definition of {word} is: {option}.', True),
    'instance_hypernym': ('{word} is an instance of a {option}.', False),
}

INSTANCE_TEMPLATE = '{word}: {gloss}'

_GOOD_LEMMA = re.compile(r"[A-Za-z][A-Za-z' .-]*")
_ADJ_MARKER = re.compile(r'\((a|p|ip)\)$')
_TOKEN = re.compile(r'[a-z0-9]+')
_DANGLING = frozenset(
    'a an the of or and as to in on at by for from with that which who whose '
    'into than such its their his her your'.split())


# ----------------------------------------------------------------------------
# Parsing the WordNet database.
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Synset:
  """One line of a data.* file."""
  key: tuple  # (pos, offset); pos in n/v/a/r ('s' satellites live under 'a').
  ss_type: str
  lex_filenum: int
  words: list  # lemmas, underscores turned into spaces, adjective marker cut.
  lex_ids: list
  pointers: list  # (symbol, target_key, source_word_number, target_word_number)
  definition: str
  examples: list


def split_gloss(gloss: str) -> tuple:
  """Splits a gloss into its definition and its quoted usage examples."""
  definition, _, rest = gloss.partition('; "')
  examples = re.findall(r'"([^"]+)"', '"' + rest) if rest else []
  return definition.strip().rstrip(';').strip(), [e.strip() for e in examples]


def parse_data_line(line: str, pos: str) -> Synset:
  """Parses one synset line of data.<pos> as documented in wndb(5WN)."""
  fields, _, gloss = line.partition(' | ')
  tok = fields.split()
  offset, lex_filenum, ss_type = int(tok[0]), int(tok[1]), tok[2]
  w_cnt = int(tok[3], 16)
  words, lex_ids = [], []
  for i in range(w_cnt):
    word = _ADJ_MARKER.sub('', tok[4 + 2 * i])
    words.append(word.replace('_', ' '))
    lex_ids.append(int(tok[5 + 2 * i], 16))
  at = 4 + 2 * w_cnt
  p_cnt = int(tok[at])
  pointers = []
  for i in range(p_cnt):
    symbol, target, target_pos, source_target = tok[at + 1 + 4 * i:
                                                    at + 5 + 4 * i]
    target_pos = 'a' if target_pos == 's' else target_pos
    pointers.append((symbol, (target_pos, int(target)),
                     int(source_target[:2], 16), int(source_target[2:], 16)))
  definition, examples = split_gloss(gloss.strip())
  return Synset((pos, offset), ss_type, lex_filenum, words, lex_ids, pointers,
                definition, examples)


def load_synsets(wordnet_dir: str) -> dict:
  """All synsets of the four data.* files, keyed by (pos, offset)."""
  synsets = {}
  for pos, name in POS_FILES.items():
    with open(os.path.join(wordnet_dir, 'data.' + name), encoding='utf-8') as f:
      for line in f:
        if not line.startswith(' '):  # lines starting with spaces: license.
          synset = parse_data_line(line, pos)
          synsets[synset.key] = synset
  return synsets


def load_sense_index(wordnet_dir: str) -> dict:
  """(pos, lowercase lemma) -> its synset keys, most frequent sense first."""
  index = {}
  for pos, name in POS_FILES.items():
    with open(os.path.join(wordnet_dir, 'index.' + name), encoding='utf-8') as f:
      for line in f:
        if line.startswith(' '):
          continue
        tok = line.split()
        synset_cnt = int(tok[2])
        lemma = tok[0].replace('_', ' ')
        index[(pos, lemma)] = [(pos, int(o)) for o in tok[-synset_cnt:]]
  return index


def load_tag_counts(wordnet_dir: str) -> dict:
  """(lemma, ss_type number, lex_filenum, lex_id) -> semantic-concordance count."""
  counts = {}
  with open(os.path.join(wordnet_dir, 'cntlist.rev'), encoding='utf-8') as f:
    for line in f:
      sense_key, _, count = line.split()
      lemma, _, lex_sense = sense_key.partition('%')
      ss_type, lex_filenum, lex_id = lex_sense.split(':')[:3]
      counts[(lemma.replace('_', ' '), int(ss_type), int(lex_filenum),
              int(lex_id))] = int(count)
  return counts


@dataclasses.dataclass
class WordNet:
  """The parsed database plus the lookups the relation builders need."""
  synsets: dict
  index: dict
  tag_counts: dict

  def senses(self, pos: str, word: str) -> list:
    """Synset keys of `word` in `pos`, most frequent first."""
    return self.index.get((pos, word.lower()), [])

  def polysemy(self, word: str) -> int:
    """Number of senses of `word` over all parts of speech."""
    return sum(len(self.senses(pos, word)) for pos in POS_FILES)

  def sense_count(self, synset: Synset, word_index: int) -> int:
    """Tag count of the sense (word number `word_index` of `synset`)."""
    word = synset.words[word_index].lower()
    key = (word, SS_TYPE_NUMBER[synset.ss_type], synset.lex_filenum,
           synset.lex_ids[word_index])
    return self.tag_counts.get(key, 0)

  def targets(self, key: tuple, *symbols: str) -> list:
    """Keys reached from synset `key` by one pointer with one of `symbols`."""
    return [t for s, t, _, _ in self.synsets[key].pointers if s in symbols]

  def closure(self, keys: Iterable, *symbols: str) -> set:
    """Keys reachable from `keys` by one or more pointers in `symbols`."""
    seen, todo = set(), list(keys)
    while todo:
      for target in self.targets(todo.pop(), *symbols):
        if target not in seen:
          seen.add(target)
          todo.append(target)
    return seen

  def lemmas(self, keys: Iterable) -> set:
    """Lowercased lemmas of all the given synsets."""
    return {w.lower() for k in keys for w in self.synsets[k].words}


def load_wordnet(wordnet_dir: str) -> WordNet:
  """Parses the database files in `wordnet_dir`."""
  return WordNet(load_synsets(wordnet_dir), load_sense_index(wordnet_dir),
                 load_tag_counts(wordnet_dir))


# ----------------------------------------------------------------------------
# Relation examples.
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Example:
  """A (word, true target) pair; `false` and `label` are filled in later."""
  word: str
  target: str
  pos: str
  score: tuple  # higher = more common sense; used to prefer common words.
  synsets: tuple  # synset keys whose glosses support the example (LM stream).
  gloss: str = ''  # context: instance text is "{word}: {gloss}".
  false: Optional[str] = None
  label: int = 0

  @property
  def instance(self) -> str:
    """The text before [sep] (proposition_templates.json `instance`)."""
    return INSTANCE_TEMPLATE.format(word=self.word, gloss=self.gloss)


def tokens(text: str) -> list:
  """Lowercase alphanumeric tokens of at least 3 characters (as tasks/baseline)."""
  return [t for t in _TOKEN.findall(text.lower()) if len(t) >= 3]


def shared_stem(s: str, t: str) -> bool:
  """Same first 4 letters (painful/painless), or a shared ending of >= 4
  letters that is most of the shorter word (uptick/downtick; not -ness)."""
  if len(s) < 4 or len(t) < 4:
    return False
  ending = os.path.commonprefix([s[::-1], t[::-1]])
  return s[:4] == t[:4] or (len(ending) >= 4 and
                            2 * len(ending) > min(len(s), len(t)))


def surface_related(a: str, b: str) -> bool:
  """True if a token of one text is a substring of the other text, or a token
  pair shares a stem; such pairs are answerable from spelling alone."""
  a_low, b_low = a.lower(), b.lower()
  a_tokens, b_tokens = tokens(a), tokens(b)
  if any(t in a_low for t in b_tokens) or any(t in b_low for t in a_tokens):
    return True
  return any(shared_stem(s, t) for s in a_tokens for t in b_tokens)


def good_lemma(word: str, lowercase: bool = True) -> bool:
  """Plain words / phrases only; optionally no capitals (no proper nouns)."""
  return bool(_GOOD_LEMMA.fullmatch(word)) and (not lowercase or
                                                word == word.lower())


def head_lemma(synset: Synset) -> Optional[str]:
  """The first lowercase plain lemma of a synset (its most typical name)."""
  return next((w for w in synset.words if good_lemma(w)), None)


def sense_score(wn: WordNet, synset: Synset, i: int) -> tuple:
  """Ranking key of a sense: tag count, then word polysemy."""
  return (wn.sense_count(synset, i), wn.polysemy(synset.words[i]))


def word_examples(wn: WordNet, pos: str, symbols: tuple,
                  lowercase_word: bool = True) -> list:
  """Examples word -> head lemma of every synset reached by `symbols`."""
  examples = []
  for synset in wn.synsets.values():
    if synset.key[0] != pos:
      continue
    for target_key in wn.targets(synset.key, *symbols):
      target = head_lemma(wn.synsets[target_key])
      for i, word in enumerate(synset.words):
        if target and good_lemma(word, lowercase_word):
          examples.append(Example(word, target, pos, sense_score(wn, synset, i),
                                  (synset.key, target_key)))
  return examples


def hypernym_examples(wn: WordNet) -> tuple:
  """Noun -> direct hypernym; false options: no ancestor of any sense."""
  def excluded(pos: str, word: str) -> set:
    senses = wn.senses('n', word)
    return wn.lemmas(wn.closure(senses, '@', '@i')) | wn.lemmas(senses)
  return word_examples(wn, 'n', ('@',)), excluded


def instance_hypernym_examples(wn: WordNet) -> tuple:
  """Named entity -> its class (pointer @i); false: no class of any sense."""
  def excluded(pos: str, word: str) -> set:
    senses = wn.senses('n', word)
    return wn.lemmas(wn.closure(senses, '@', '@i')) | wn.lemmas(senses)
  return word_examples(wn, 'n', ('@i',), lowercase_word=False), excluded


def meronym_examples(wn: WordNet) -> tuple:
  """Part -> whole (part holonym #p); false: not reachable by holonym/is-a."""
  def excluded(pos: str, word: str) -> set:
    senses = wn.senses('n', word)
    reach = wn.closure(senses, '#p', '#m', '#s', '@', '@i')
    return wn.lemmas(reach) | wn.lemmas(senses) | wn.lemmas(
        wn.closure(senses, '%p', '%m', '%s'))
  return word_examples(wn, 'n', ('#p',)), excluded


def neighbourhood(wn: WordNet, keys: list) -> set:
  """Synsets plus their direct is-a, similar-to, also-see and verb-group links."""
  near = set(keys)
  for key in keys:
    near.update(wn.targets(key, '@', '~', '&', '^', '$', '@i', '~i'))
  return near


def synonym_examples(wn: WordNet) -> tuple:
  """Lemma -> another lemma of the same synset (nouns, verbs, adjectives)."""
  examples = []
  for synset in wn.synsets.values():
    pos = synset.key[0]
    words = [w for w in synset.words if good_lemma(w)]
    if pos not in LM_POS or len(words) < 2:
      continue
    for i, word in enumerate(synset.words):
      for target in words:
        if good_lemma(word) and target.lower() != word.lower():
          examples.append(Example(word, target, pos,
                                  sense_score(wn, synset, i), (synset.key,)))

  def excluded(pos: str, word: str) -> set:
    return wn.lemmas(neighbourhood(wn, wn.senses(pos, word)))
  return examples, excluded


def antonym_examples(wn: WordNet) -> tuple:
  """Word -> its lexical antonym (pointer !, nouns, verbs, adjectives)."""
  examples, antonyms = [], collections.defaultdict(set)
  for synset in wn.synsets.values():
    pos = synset.key[0]
    for symbol, target_key, source, target_word in synset.pointers:
      if symbol != '!' or pos not in LM_POS or not source or not target_word:
        continue
      word = synset.words[source - 1]
      target = wn.synsets[target_key].words[target_word - 1]
      antonyms[(pos, word.lower())].add(target_key)
      if good_lemma(word) and good_lemma(target):
        examples.append(Example(word, target, pos,
                                sense_score(wn, synset, source - 1),
                                (synset.key, target_key)))

  def excluded(pos: str, word: str) -> set:
    opposite = neighbourhood(wn, sorted(antonyms[(pos, word.lower())]))
    return wn.lemmas(opposite) | {word.lower()}
  return examples, excluded


def trim_words(words: list) -> str:
  """Joins words without a dangling 'as', 'of the' or trailing comma."""
  words = list(words)
  while len(words) > 1:
    words[-1] = words[-1].rstrip(',:;')
    if words[-1] and words[-1].lower() not in _DANGLING:
      break
    words.pop()
  return ' '.join(words)


def short_definition(definition: str,
                     max_words: int = DEFINITION_MAX_WORDS) -> str:
  """First clause of a definition, parentheses removed, <= max_words words."""
  clause = definition.split(';')[0]
  clause = re.sub(r'\([^()]*\)', ' ', clause).replace('`', "'")
  return trim_words(clause.split()[:max_words])


def usage_example(synset: Synset, word: str) -> str:
  """The synset's first quoted usage example that contains `word` (else its
  first one; '' if it has none), WordNet's `x' quotes turned into 'x'."""
  used = [e for e in synset.examples if word.lower() in e.lower()]
  text = (used or synset.examples or [''])[0]
  return ' '.join(text.replace('`', "'").split())


def context_gloss(wn: WordNet, name: str, ex: Example) -> str:
  """The context of an example: the short definition of the word's sense the
  relation uses, or, for `definition` (options are definitions), a usage
  example of that sense ('' if none: such examples are dropped)."""
  synset = wn.synsets[ex.synsets[0]]
  if name == 'definition':
    return usage_example(synset, ex.word)
  return short_definition(synset.definition, GLOSS_MAX_WORDS)


def definition_examples(wn: WordNet) -> tuple:
  """Word -> short definition of its most frequent sense (n, v, adj)."""
  examples, seen = [], set()
  for synset in wn.synsets.values():
    pos = synset.key[0]
    if pos not in LM_POS:
      continue
    for i, word in enumerate(synset.words):
      senses = wn.senses(pos, word)
      if (good_lemma(word) and senses and senses[0] == synset.key and
          (pos, word) not in seen):
        seen.add((pos, word))
        examples.append(Example(word, short_definition(synset.definition), pos,
                                sense_score(wn, synset, i), (synset.key,)))

  def excluded(pos: str, word: str) -> set:
    return {short_definition(wn.synsets[k].definition).lower()
            for k in wn.senses(pos, word)}
  return examples, excluded


BUILDERS = {
    'hypernym': hypernym_examples,
    'meronym': meronym_examples,
    'synonym': synonym_examples,
    'antonym': antonym_examples,
    'definition': definition_examples,
    'instance_hypernym': instance_hypernym_examples,
}
SYMMETRIC = ('synonym', 'antonym')


def clean_candidates(examples: list, rng: random.Random) -> list:
  """Drops surface-related pairs and duplicates, keeps <= 3 examples per word;
  most common senses first."""
  best = {}
  for ex in examples:
    if tokens(ex.target) and not surface_related(ex.word, ex.target):
      key = (ex.word, ex.target)
      if key not in best or ex.score > best[key].score:
        best[key] = ex
  ranked = list(best.values())
  rng.shuffle(ranked)  # random order among equal scores.
  ranked.sort(key=lambda ex: ex.score, reverse=True)
  per_word = collections.Counter()
  kept = []
  for ex in ranked:
    per_word[ex.word] += 1
    if per_word[ex.word] <= MAX_PER_WORD:
      kept.append(ex)
  return kept


def split_by_word(examples: list, n_train: int, n_val: int,
                  symmetric: bool, rng: random.Random) -> tuple:
  """Picks held-out validation words; returns (train, validation, n_val).

  Train keeps no validation word, no example of a validation example's synset
  (e.g. no "poodle dog" if "poodle" is held out) and, for symmetric
  relations, no example whose target is a validation word.
  """
  n_val = min(n_val, len(examples) // 8)  # rare relations hold out less.
  pool = examples[:int((SLACK + 0.3) * (n_train + n_val))]
  words = sorted({ex.word for ex in pool})
  rng.shuffle(words)
  by_word = collections.defaultdict(list)
  for ex in pool:
    by_word[ex.word].append(ex)
  val_words, validation = set(), []
  for word in words:
    if len(validation) >= int(VAL_SLACK * n_val):
      break
    val_words.add(word)
    validation.extend(by_word[word])
  lowered = {w.lower() for w in val_words}
  val_synsets = {ex.synsets[0] for ex in validation}
  train = [ex for ex in pool if ex.word not in val_words and
           ex.synsets[0] not in val_synsets and
           not (symmetric and ex.target.lower() in lowered)]
  return train, validation, n_val


class TargetPool:
  """A multiset of targets to draw false options from: random draws (so the
  empirical distribution of true targets), look-up of the targets whose
  tokens occur in a text, and removal of one copy (drawing without
  replacement keeps every target as often false as true)."""

  def __init__(self, targets: Iterable, rng: random.Random):
    self.items = sorted(targets)
    rng.shuffle(self.items)
    self.count = collections.Counter(self.items)
    self.positions = collections.defaultdict(set)
    for i, target in enumerate(self.items):
      self.positions[target].add(i)
    self.index = collections.defaultdict(set)  # token -> targets.
    for target in self.count:
      for token in tokens(target):
        self.index[token].add(target)
    self.max_token = max(map(len, self.index), default=0)

  def __contains__(self, target: str) -> bool:
    return self.count[target] > 0

  def remove(self, target: str) -> None:
    """Removes one copy of `target` (swap with the last item, O(1))."""
    i = max(self.positions[target])
    self.positions[target].discard(i)
    last = self.items.pop()
    if i < len(self.items):
      self.items[i] = last
      self.positions[last].discard(len(self.items))
      self.positions[last].add(i)
    self.count[target] -= 1

  def sample(self, rng: random.Random, n: int) -> list:
    """`n` random items (with replacement): frequent targets come up often."""
    return [self.items[rng.randrange(len(self.items))]
            for _ in range(min(n, len(self.items)))]

  def containing(self, text: str) -> list:
    """Targets with a token that is a substring of `text` (what
    tasks/baseline.py `overlap` counts); tokens shared by more than
    MAX_POSTINGS targets ('the', 'and') are left to random draws."""
    found = set()
    for run in _TOKEN.findall(text.lower()):
      for i in range(len(run) - 2):
        for j in range(i + 3, min(len(run), i + self.max_token) + 1):
          targets = self.index.get(run[i:j], ())
          if len(targets) <= MAX_POSTINGS:
            found.update(targets)
    return sorted(t for t in found if t in self)


def overlap(instance: str, target: str) -> float:
  """tasks/baseline.py `overlap`: fraction of the target's tokens in the text."""
  return load_baseline().overlap(instance, target)


def overlap_signature(instance: str, target: str) -> tuple:
  """(baseline overlap, fraction of the target's tokens that are whole words
  of the instance). False options must match the true one's signature, so
  neither the baseline nor "is it a whole word of the gloss" tells them apart
  ("kin" inside "thinking" cannot stand in for a whole word like "dog")."""
  target_tokens = tokens(target)
  if not target_tokens:
    return (0.0, 0.0)
  words = set(_TOKEN.findall(instance.lower()))
  whole = sum(t in words for t in target_tokens) / len(target_tokens)
  return (overlap(instance, target), whole)


def fit_gloss(ex: Example, options: tuple, fits: Callable) -> Optional[str]:
  """The longest prefix of ex.gloss (whole words, none dangling) with which
  every option's "word: gloss [sep] proposition [cls]" fits; None if even a
  one-word gloss is too long."""
  words = ex.gloss.split()
  while words:
    gloss = trim_words(words)
    if all(fits(ex.word, gloss, option) for option in options):
      return gloss
    words = gloss.split()[:-1]
  return None


def weighted_order(candidates: list, weights: Callable,
                   rng: random.Random) -> list:
  """Random order in which heavier candidates tend to come first (weighted
  sampling without replacement, Efraimidis-Spirakis keys)."""
  keys = [rng.random() ** (1.0 / weights(c)) for c in candidates]
  return [c for _, c in sorted(zip(keys, candidates), reverse=True)]


def draw_false(ex: Example, pool: TargetPool, excluded: Callable,
               fits: Callable, rng: random.Random, consume: bool) -> bool:
  """Gives `ex` a false option from `pool`; False if none is valid.

  Valid: not true for the word (`excluded(pos, word)`), not spelled like the
  word, and overlapping ex.instance EXACTLY as the true target does
  (`overlap_signature`): if the true
  target occurs in the gloss ("dog" in "poodle: an intelligent dog with a
  heavy curly coat"), the false one is another pool target found there
  ("coat"); if not, the false one is not there either. Both propositions must
  fit (the gloss is shortened if needed, then the overlaps are rechecked).
  """
  instance = ex.instance
  wanted = overlap_signature(instance, ex.target)
  bad = excluded(ex.pos, ex.word) | {ex.target.lower()}
  drawn = pool.sample(rng, FALSE_TRIES)
  if wanted[0]:  # few targets fit: all found in the instance, by frequency.
    drawn = sorted(set(drawn) | set(pool.containing(instance)))
  candidates = [t for t in drawn if t.lower() not in bad and
                overlap_signature(instance, t) == wanted and
                not surface_related(ex.word, t)]
  if wanted[0]:
    candidates = weighted_order(candidates, lambda t: pool.count[t], rng)
  for target in candidates:
    gloss = fit_gloss(ex, (ex.target, target), fits)
    if gloss is None:
      continue
    text = INSTANCE_TEMPLATE.format(word=ex.word, gloss=gloss)
    if overlap_signature(text, target) == overlap_signature(text, ex.target):
      ex.gloss, ex.false = gloss, target
      if consume:
        pool.remove(target)
      return True
  return False


def assign_false(examples: list, excluded: Callable, fits: Callable,
                 rng: random.Random, fallback: Optional[dict] = None) -> list:
  """Gives each example a false option (`draw_false`); returns the examples
  that got one, in random order.

  Per part of speech, false options are drawn without replacement from the
  examples' own true targets (so each target is as often false as true);
  examples whose true target is in their gloss go first (few targets fit
  them). A dropped example also gives up its target's copy in the pool.
  `fallback` (pos -> TargetPool, not consumed; the train targets for
  validation) is tried when the pool has no valid option.
  """
  kept = []
  for pos in sorted({ex.pos for ex in examples}):
    group = [ex for ex in examples if ex.pos == pos]
    rng.shuffle(group)
    pool = TargetPool((ex.target for ex in group), rng)
    group.sort(key=lambda ex: overlap(ex.instance, ex.target) == 0)
    backup = (fallback or {}).get(pos)
    for ex in group:
      if (draw_false(ex, pool, excluded, fits, rng, consume=True) or
          (backup and draw_false(ex, backup, excluded, fits, rng,
                                 consume=False))):
        kept.append(ex)
      elif ex.target in pool:
        pool.remove(ex.target)
  rng.shuffle(kept)
  return kept


def target_pools(examples: list, rng: random.Random) -> dict:
  """pos -> TargetPool of the examples' true targets."""
  return {pos: TargetPool((ex.target for ex in examples if ex.pos == pos), rng)
          for pos in sorted({ex.pos for ex in examples})}


@dataclasses.dataclass
class Relation:
  """Candidate (word, true target) pairs of one relation type, split by word."""
  name: str
  excluded: Callable  # (pos, word) -> lowercased options that must not be false.
  pools: dict  # split -> candidates, most common first.
  sizes: dict  # split -> number of examples wanted.

  def candidates(self, split: str) -> list:
    """The candidates that can end up in `split`."""
    return self.pools[split][:int(SLACK * self.sizes[split])]


def prepare_relation(wn: WordNet, name: str, n_train: int, n_val: int,
                     rng: random.Random) -> Relation:
  """Candidate pairs of relation `name` with their context gloss (those
  without one are dropped), split by held-out validation words."""
  candidates, excluded = BUILDERS[name](wn)
  excluded = functools.lru_cache(maxsize=None)(excluded)
  for ex in candidates:
    ex.gloss = context_gloss(wn, name, ex)
  candidates = clean_candidates([ex for ex in candidates if ex.gloss], rng)
  train, validation, n_val = split_by_word(candidates, n_train, n_val,
                                           name in SYMMETRIC, rng)
  return Relation(name, excluded, {'train': train, 'validation': validation},
                  {'train': n_train, 'validation': n_val})


def balanced_assignment(examples: list, n: int, excluded: Callable,
                        fits: Callable, rng: random.Random,
                        fallback: Optional[dict] = None) -> list:
  """At most n examples with false options, each target exactly as often
  false as true (when it converges within MAX_PASSES).

  Reassigns from scratch while a pass drops examples or keeps more than n
  (then a RANDOM n of them: a cut by commonness would favour some targets),
  so the last pass's pool is exactly the kept examples' true targets.
  """
  gloss = {id(ex): ex.gloss for ex in examples}
  for _ in range(MAX_PASSES):
    for ex in examples:  # undo the previous pass's shortening.
      ex.gloss = gloss[id(ex)]
    kept = assign_false(examples, excluded, fits, rng, fallback)
    if len(kept) == len(examples) <= n:
      break
    examples = kept[:n]
  return kept


def draw_split(relation: Relation, split: str, fits: Callable,
               rng: random.Random, fallback: Optional[dict] = None) -> list:
  """Final labelled examples of a split.

  Takes the most common candidates (glosses shortened until the true
  proposition fits), draws balanced false options (`balanced_assignment`)
  and gives them balanced random labels.
  """
  n = relation.sizes[split]
  pool = []
  for ex in relation.pools[split]:
    if len(pool) >= int(SLACK * n):
      break
    gloss = fit_gloss(ex, (ex.target,), fits)
    if gloss is not None:
      ex.gloss = gloss
      pool.append(ex)
  examples = balanced_assignment(pool, n, relation.excluded, fits, rng,
                                 fallback)
  labels = [i % 2 for i in range(len(examples))]
  rng.shuffle(labels)
  for ex, label in zip(examples, labels):
    ex.label = label
  return examples


def to_row(ex: Example) -> dict:
  """The JSONL row of an example: the true target sits at index `label`."""
  options = [ex.false, ex.false]
  options[ex.label] = ex.target
  return {'word': ex.word, 'gloss': ex.gloss, 'option0': options[0],
          'option1': options[1], 'label': ex.label}


# ----------------------------------------------------------------------------
# Language stream.
# ----------------------------------------------------------------------------


def sentence(text: str) -> str:
  """`text` ending in '.', '?' or '!'; WordNet's `x' quotes become 'x'."""
  text = text.replace('`', "'").strip()
  return text if text.endswith(('.', '?', '!')) else text + '.'


def lm_text(synset: Synset) -> str:
  """'poodle, poodle dog: <definition>. Example: <usage>.' for a synset."""
  text = sentence(f"{', '.join(synset.words)}: {synset.definition}")
  if synset.examples:
    label = 'Example' if len(synset.examples) == 1 else 'Examples'
    text += f' {label}: ' + ' '.join(sentence(e) for e in synset.examples)
  return text


def synset_score(wn: WordNet, synset: Synset) -> tuple:
  """Commonness of a synset: best tag count, then best polysemy of its words."""
  return max(sense_score(wn, synset, i) for i in range(len(synset.words)))


def lm_split(wn: WordNet, used: set, max_chars: int, val_fraction: float,
             rng: random.Random) -> tuple:
  """Noun/verb/adjective glosses: all synsets used by the relation examples
  (train), then the most common other synsets until `max_chars`; the
  validation lines are drawn at random from the most common other synsets
  (never a synset used by the relation examples). Returns ({split: texts},
  number of synsets used by relation examples)."""
  keys = sorted(k for k in wn.synsets if k[0] in LM_POS)
  required = [k for k in keys if k in used]
  optional = [k for k in keys if k not in used]
  rng.shuffle(optional)  # random order among equal scores.
  optional.sort(key=lambda k: synset_score(wn, wn.synsets[k]), reverse=True)
  chars = sum(len(lm_text(wn.synsets[k])) for k in required)
  extra = []
  for key in optional:
    chars += len(lm_text(wn.synsets[key]))
    if chars > max_chars:
      break
    extra.append(key)
  n_val = int(val_fraction * (len(required) + len(extra)))
  val = rng.sample(optional[:max(len(extra), 10 * n_val)], n_val)
  val_keys = set(val)
  train = required + [k for k in extra if k not in val_keys]
  rng.shuffle(train)
  return {'train': [lm_text(wn.synsets[k]) for k in train],
          'validation': [lm_text(wn.synsets[k]) for k in val]}, len(required)


# ----------------------------------------------------------------------------
# Outputs.
# ----------------------------------------------------------------------------


def write_jsonl_gz(path: str, rows: Iterable) -> int:
  """Writes rows as gzip JSONL with a fixed header (mtime=0); returns count."""
  buffer = io.BytesIO()
  count = 0
  with gzip.GzipFile(filename='', mode='wb', fileobj=buffer, mtime=0,
                     compresslevel=9) as f:
    for row in rows:
      f.write((json.dumps(row, ensure_ascii=False) + '\n').encode('utf-8'))
      count += 1
  with open(path, 'wb') as f:
    f.write(buffer.getvalue())
  return count


def templates() -> dict:
  """proposition_templates.json content."""
  return {
      name: {
          'instance': INSTANCE_TEMPLATE,
          'propositions': {str(i): text.replace('{option}', '{option%d}' % i)
                           for i in (0, 1)},
          'task_type': name,
          'seen': seen,
      } for name, (text, seen) in RELATIONS.items()
  }


def propositions(name: str, examples: list) -> list:
  """The true proposition of every example (tokenizer training text; false
  options are drawn from the same targets)."""
  text = RELATIONS[name][0]
  return [text.format(word=ex.word, option=ex.target) for ex in examples]


VOCAB_FILES = ('vocab.json', 'merges.txt')


def checked_tokenizer(directory: str) -> tuple:
  """Loads vocab.json/merges.txt from `directory`, checks the special ids;
  returns (tokenizer with the special tokens registered, info)."""
  from tokenizers import ByteLevelBPETokenizer  # pylint: disable=g-import-not-at-top
  tokenizer = ByteLevelBPETokenizer(
      *(os.path.join(directory, name) for name in VOCAB_FILES))
  ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
  if ids != {t: i for i, t in enumerate(SPECIAL_TOKENS)}:
    raise ValueError(f'Unexpected special token ids: {ids}')
  tokenizer.add_special_tokens(SPECIAL_TOKENS)
  return tokenizer, {'vocab_size': tokenizer.get_vocab_size(),
                     'special_ids': ids}


def train_tokenizer(texts: list, out_dir: str) -> tuple:
  """Trains the byte-level BPE on `texts` and saves it to out_dir (NEW ids)."""
  from tokenizers import ByteLevelBPETokenizer  # pylint: disable=g-import-not-at-top
  tokenizer = ByteLevelBPETokenizer()
  tokenizer.train_from_iterator(texts, vocab_size=VOCAB_SIZE, min_frequency=2,
                                special_tokens=SPECIAL_TOKENS,
                                show_progress=False)
  tokenizer.save_model(out_dir)
  return checked_tokenizer(out_dir)


def reuse_tokenizer(tokenizer_dir: str, out_dir: str) -> tuple:
  """The existing BPE of tokenizer_dir, copied byte for byte into out_dir, so
  token ids (and trained checkpoints) stay valid."""
  for name in VOCAB_FILES:
    source = os.path.join(tokenizer_dir, name)
    if not os.path.exists(source):
      raise SystemExit(f'{source} is missing: pass --tokenizer_dir with an '
                       'existing vocab.json/merges.txt, or --train_tokenizer.')
    target = os.path.join(out_dir, name)
    if not (os.path.exists(target) and os.path.samefile(source, target)):
      shutil.copyfile(source, target)
  return checked_tokenizer(out_dir)


def tokenizer_corpus(wn: WordNet, relations: dict, args) -> list:
  """Training text for --train_tokenizer: the LM stream of the candidates'
  synsets plus the seen types' true train propositions (as in v1)."""
  rng = random.Random(args.seed)
  used = {k for rel in relations.values() for split in rel.pools
          for ex in rel.candidates(split) for k in ex.synsets}
  lm, _ = lm_split(wn, used, args.lm_max_chars, args.lm_validation_fraction,
                   rng)
  return lm['train'] + [
      p for name, (_, seen) in RELATIONS.items() if seen
      for p in propositions(name, relations[name].candidates('train'))]


def length_filter(tokenizer, name: str, max_tokens: int) -> Callable:
  """fits(word, gloss, option): "word: gloss [sep] proposition [cls]" has at
  most max_tokens tokens (instance and proposition encoded separately, as
  tasks/propositions.py does)."""
  template = RELATIONS[name][0]

  def fits(word: str, gloss: str, option: str) -> bool:
    instance = INSTANCE_TEMPLATE.format(word=word, gloss=gloss)
    proposition = template.format(word=word, option=option)
    return (len(tokenizer.encode(instance).ids) +
            len(tokenizer.encode(proposition).ids) + 2) <= max_tokens
  return fits


@functools.lru_cache(maxsize=None)
def load_baseline():
  """Imports tasks/baseline.py by path (no tasks/__init__ side effects)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'baseline.py')
  spec = importlib.util.spec_from_file_location('freelm_tasks_baseline', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def baseline_accuracy(splits: dict, seed: int) -> float:
  """Shortcut baseline on validation, priors from train (tasks/baseline.py)."""
  def rows(examples):
    return [(INSTANCE_TEMPLATE.format(**r), (r['option0'], r['option1']),
             r['label']) for r in map(to_row, examples)]
  return load_baseline().shortcut_baseline_accuracy(
      rows(splits['train']), rows(splits['validation']), seed=seed)


def write_license(wordnet_dir: str, copyright_file: str, out_dir: str) -> None:
  """LICENSE: the WordNet 3.0 license, verbatim from the Debian copyright file."""
  with open(copyright_file, encoding='utf-8') as f:
    text = f.read()
  block = text.split('License: WordNet3.0\n', 1)[1].split('\n\n', 1)[0]
  lines = [l[1:] if l.startswith(' ') else l for l in block.splitlines()]
  body = '\n'.join('' if l == '.' else l for l in lines)
  with open(os.path.join(out_dir, 'LICENSE'), 'w', encoding='utf-8') as f:
    f.write('The files in this directory are derived from WordNet 3.0 '
            f'({wordnet_dir}) by tasks/build_wordnet.py.\n'
            'WordNet 3.0 license:\n\n' + body + '\n')


README = """\
# WordNet demo data for FreeLM

Derived from WordNet 3.0 (see `LICENSE`). Built by `tasks/build_wordnet.py`
(about 35 s on 2 cores) with

    {command}

The build is deterministic (fixed seed, gzip mtime=0): rerunning it rewrites
identical bytes.

## Files

* `lm.{{train,validation}}.jsonl.gz`: the language stream, `{{"text": ...}}`
  per line, one line per WordNet synset: `lemma, lemma, ...: definition.
  Example(s): usage. usage.` (nouns, verbs and adjectives; no adverbs). Train
  holds the synset of every word and target used by any relation example
  (train and validation, all six types, so e.g. "poodle: an intelligent dog
  ..." supports "A poodle is a kind of dog."), then the most common remaining
  synsets (ranked by SemCor tag count from `cntlist.rev`, then polysemy) up to
  {lm_max_chars:,} characters, which keeps this directory under 4 MB
  ({lm_used} of the {lm_train} train lines are synsets of relation examples).
  Validation is {lm_val_pct:g}% of lines, drawn at random from the most common
  remaining synsets (never a relation example's synset).
* `<type>.{{train,validation}}.jsonl.gz`: one example per line,
  `{{"word": ..., "option0": ..., "option1": ..., "label": 0|1}}`; exactly one
  option is true and `label` is its index (balanced 50/50 at random).
* `proposition_templates.json`: per type, the instance template, the two
  proposition templates (identical except `{{option0}}` / `{{option1}}`), the
  task type and whether it is seen in training.
* `vocab.json`, `merges.txt`: byte-level BPE (HF `tokenizers`), {vocab_size}
  tokens, min_frequency 2, trained on `lm.train` plus the propositions of the
  seen types' train splits; `[pad]`=0, `<|endoftext|>`=1, `[sep]`=2, `[cls]`=3.
* `LICENSE`: WordNet 3.0 license.

## Relation types

| type | seen | proposition (label 0) | WordNet source |
|---|---|---|---|
{type_rows}

`{held_out}` is held out entirely: never trained on, used for zero-shot
evaluation of an unseen task type (its train split exists only for
baselines). Words are lemmas with `_` turned into spaces; seen types use
lowercase lemmas only (no proper nouns); options are the first lowercase lemma
of the target synset. Meronym direction: `word` is the PART, options are
wholes ("A wheel is a part of a car"). Definitions are the first clause of the
gloss without parentheses, cut to at most {def_words} words. At most
{per_word} examples per word and type; the most common senses (tag count, then
polysemy) are kept first. Examples where `word [sep] proposition [cls]` is
longer than {max_tokens} tokens (with this vocab) for either option are
dropped. Sizes: up to {max_train} train and {max_val} validation examples per
type; rarer types hold out 1/8 of their candidates.

## How examples are drawn (shortcut defences)

* **Held-out words**: a `word` in `R.validation` never appears as a `word` in
  `R.train`; train also drops every example whose word synset is a validation
  example's synset, and, for the symmetric types (synonym, antonym), every
  example whose target is a validation word.
* **False options** are a random permutation of the true targets of the same
  type, split and part of speech (one draw per true occurrence, without
  replacement), so each target is the true option about as often as the
  false one and its prior of being true is ~0.5. Both options always have
  the same part of speech.
* A false option is **never true** for the word under any sense: not a lemma
  of any hypernym/instance-hypernym ancestor (hypernym, instance_hypernym),
  of anything reachable by holonym or is-a links (meronym), of the word's
  synsets or their direct is-a / similar-to / also-see / verb-group neighbours
  (synonym), of an antonym synset or its neighbours (antonym), nor the short
  definition of any sense of the word (definition).
* **No surface overlap**: examples whose true target shares spelling with the
  word (a >= 3-letter token of one is a substring of the other, e.g.
  sheepdog/dog, legal/illegal; or two tokens share their first 4 letters,
  painful/painless, or an ending of >= 4 letters that is most of the shorter
  word, uptick/downtick) are dropped, and false options are drawn with the
  same property. So no option, true or false, overlaps the word, and the
  word (its >= 3-letter tokens) never occurs in either definition.

## Counts and the no-model shortcut baseline

Baseline: `tasks/baseline.py` (score = Laplace-smoothed prior of the option
being true in train + fraction of the option's tokens found in the word;
exact ties broken by `random.Random({seed})`), priors from the type's train
split, accuracy on its validation split. Chance is 0.5; with tie-breaking
noise, a 500-example split varies by about +-0.02 (the mean over 20 tie seeds
is given too).

| type | train | validation | baseline (seed {seed}) | mean over 20 tie seeds |
|---|---|---|---|---|
{count_rows}
| lm | {lm_train} | {lm_validation} | | |
"""


def write_readme(args, summary: dict) -> None:
  """README.md: files, build command, counts and shortcut baselines."""
  counts, base = summary['counts'], summary['baseline']
  mean = summary['baseline_mean_over_20_tie_seeds']
  sources = {'hypernym': 'noun `@`', 'meronym': 'noun `#p` (part holonym)',
             'synonym': 'same synset (n, v, adj)',
             'antonym': '`!` lexical pointers (n, v, adj)',
             'definition': 'gloss of the most frequent sense (n, v, adj)',
             'instance_hypernym': 'noun `@i`'}
  type_rows = '\n'.join(
      f'| {name} | {"yes" if seen else "**no**"} | '
      f'`{text.replace("{option}", "{option0}")}` | {sources[name]} |'
      for name, (text, seen) in RELATIONS.items())
  count_rows = '\n'.join(
      f'| {name} | {counts[name + ".train"]} | {counts[name + ".validation"]}'
      f' | {base[name]:.3f} | {mean[name]:.3f} |' for name in RELATIONS)
  command = ('python tasks/build_wordnet.py '
             f'--wordnet_dir={args.wordnet_dir} --out_dir={args.out_dir} '
             f'--seed={args.seed}')
  text = README.format(
      command=command, lm_max_chars=args.lm_max_chars,
      lm_val_pct=100 * args.lm_validation_fraction,
      vocab_size=summary['tokenizer']['vocab_size'], type_rows=type_rows,
      held_out=HELD_OUT_TYPE, def_words=DEFINITION_MAX_WORDS,
      per_word=MAX_PER_WORD, seed=args.seed, count_rows=count_rows,
      lm_train=counts['lm.train'], lm_validation=counts['lm.validation'],
      lm_used=summary['lm_synsets_used_by_relations'],
      max_tokens=args.max_proposition_tokens, max_train=args.max_train,
      max_val=args.max_validation)
  with open(os.path.join(args.out_dir, 'README.md'), 'w',
            encoding='utf-8') as f:
    f.write(text)


def parse_args(argv) -> argparse.Namespace:
  """Command-line flags."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--wordnet_dir', default='/usr/share/wordnet')
  parser.add_argument('--out_dir', default='tasks/data/wordnet')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--max_train', type=int, default=20000)
  parser.add_argument('--max_validation', type=int, default=500)
  parser.add_argument('--lm_validation_fraction', type=float, default=0.01)
  parser.add_argument('--lm_max_chars', type=int, default=4_800_000,
                      help='Budget of LM text (keeps the output under 4 MB).')
  parser.add_argument('--max_proposition_tokens', type=int, default=48,
                      help="Longest 'word: gloss [sep] proposition [cls]' "
                      '(demo sequence length); longer glosses are shortened.')
  parser.add_argument('--tokenizer_dir', default=None,
                      help='Where vocab.json/merges.txt are reused from '
                      '(default: --out_dir); copied byte for byte.')
  parser.add_argument('--train_tokenizer', action='store_true',
                      help='Train a new BPE instead (changes token ids).')
  parser.add_argument('--copyright_file',
                      default='/usr/share/doc/wordnet-base/copyright')
  return parser.parse_args(argv)


def write_data(args, lm: dict, examples: dict, summary: dict) -> None:
  """Writes the JSONL files; adds counts and baselines to `summary`."""
  counts, base = summary['counts'], summary['baseline']
  mean = summary['baseline_mean_over_20_tie_seeds']
  for split, texts in lm.items():
    counts[f'lm.{split}'] = write_jsonl_gz(
        os.path.join(args.out_dir, f'lm.{split}.jsonl.gz'),
        ({'text': t} for t in texts))
  for name, splits in examples.items():
    for split, rows in splits.items():
      counts[f'{name}.{split}'] = write_jsonl_gz(
          os.path.join(args.out_dir, f'{name}.{split}.jsonl.gz'),
          map(to_row, rows))
    base[name] = round(baseline_accuracy(splits, args.seed), 4)
    mean[name] = round(
        sum(baseline_accuracy(splits, s) for s in range(20)) / 20, 4)
  with open(os.path.join(args.out_dir, 'proposition_templates.json'), 'w',
            encoding='utf-8') as f:
    json.dump(templates(), f, indent=2)
    f.write('\n')


def main(argv=None) -> None:
  args = parse_args(argv)
  os.makedirs(args.out_dir, exist_ok=True)
  rng = random.Random(args.seed)
  wn = load_wordnet(args.wordnet_dir)

  relations = {name: prepare_relation(wn, name, args.max_train,
                                      args.max_validation, rng)
               for name in RELATIONS}
  if args.train_tokenizer:
    tokenizer, tokenizer_info = train_tokenizer(
        tokenizer_corpus(wn, relations, args), args.out_dir)
  else:
    tokenizer, tokenizer_info = reuse_tokenizer(
        args.tokenizer_dir or args.out_dir, args.out_dir)
  examples = {}
  for name, relation in relations.items():
    fits = length_filter(tokenizer, name, args.max_proposition_tokens)
    train = draw_split(relation, 'train', fits, rng)
    examples[name] = {'train': train, 'validation': draw_split(
        relation, 'validation', fits, rng, target_pools(train, rng))}

  all_examples = [ex for splits in examples.values()
                  for split in splits.values() for ex in split]
  used = {k for ex in all_examples for k in ex.synsets}
  lm, n_used = lm_split(wn, used, args.lm_max_chars,
                        args.lm_validation_fraction, rng)
  summary = {
      'counts': {}, 'baseline': {}, 'baseline_mean_over_20_tie_seeds': {},
      'held_out_type': HELD_OUT_TYPE, 'tokenizer': tokenizer_info,
      'lm_synsets_used_by_relations': n_used,
      'true_target_in_gloss': {
          f'{name}.{split}': round(sum(
              overlap(ex.instance, ex.target) > 0 for ex in rows) /
                                   max(len(rows), 1), 3)
          for name, splits in examples.items()
          for split, rows in splits.items()},
  }
  write_data(args, lm, examples, summary)
  write_license(args.wordnet_dir, args.copyright_file, args.out_dir)
  write_readme(args, summary)
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  main(sys.argv[1:])
