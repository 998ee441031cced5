r"""Builds the embedded FreeLM demo dataset from the WordNet 3.0 database files.

Usage (from the repository root; about 1.5 minutes on 2 cores):

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
targets, then words, then common synsets) -> files.

How shortcuts are defeated (the README reports the measured baselines):
* False options come from pairs of examples (same relation, split and part
  of speech) that swap their true targets, so every target is the false
  option exactly as often as the true one (its train prior is 0.5).
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
SLACK = 2.2  # train candidates per wanted example (many find no partner).
VAL_SLACK = {'instance_hypernym': 6}  # validation candidates per wanted
VAL_SLACK_DEFAULT = 3  # example (most instance glosses name only one class).
FALSE_TRIES = 128  # random partners drawn per example.
# A train target is the fallback false option of <= 1/50 of a validation split.
FALLBACK_SHARE = 50
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
    del pos  # nouns only.
    senses = wn.senses('n', word)
    return wn.lemmas(wn.closure(senses, '@', '@i')) | wn.lemmas(senses)
  return word_examples(wn, 'n', ('@',)), excluded


def instance_hypernym_examples(wn: WordNet) -> tuple:
  """Named entity -> its class (pointer @i); false: no class of any sense."""
  def excluded(pos: str, word: str) -> set:
    del pos  # nouns only.
    senses = wn.senses('n', word)
    return wn.lemmas(wn.closure(senses, '@', '@i')) | wn.lemmas(senses)
  return word_examples(wn, 'n', ('@i',), lowercase_word=False), excluded


def meronym_examples(wn: WordNet) -> tuple:
  """Part -> whole (part holonym #p); false: not reachable by holonym/is-a."""
  def excluded(pos: str, word: str) -> set:
    del pos  # nouns only.
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


def split_by_word(examples: list, n_train: int, n_val: int, val_slack: float,
                  symmetric: bool, rng: random.Random) -> tuple:
  """Picks held-out validation words (for val_slack * n_val candidates, at
  most a fifth of them); returns (train, validation, n_val).

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
    if len(validation) >= min(val_slack * n_val, len(examples) // 5):
      break
    val_words.add(word)
    validation.extend(by_word[word])
  lowered = {w.lower() for w in val_words}
  val_synsets = {ex.synsets[0] for ex in validation}
  train = [ex for ex in pool if ex.word not in val_words and
           ex.synsets[0] not in val_synsets and
           not (symmetric and ex.target.lower() in lowered)]
  return train, validation, n_val


@functools.lru_cache(maxsize=None)
def target_tokens(target: str) -> tuple:
  """tokens(target), cached (targets are checked against many glosses)."""
  return tuple(tokens(target))


class ExamplePool:
  """Examples not yet paired, whose true targets can serve as false options:
  random draws (so targets come up as often as they are true), look-up of
  those whose target has a token inside a text, removal."""

  def __init__(self, examples: Iterable, rng: random.Random):
    self.items = list(examples)
    rng.shuffle(self.items)
    self.position = {id(ex): i for i, ex in enumerate(self.items)}
    self.by_target = collections.defaultdict(list)
    for ex in self.items:
      self.by_target[ex.target].append(ex)
    self.index = collections.defaultdict(set)  # token -> targets.
    for target in self.by_target:
      for token in target_tokens(target):
        self.index[token].add(target)
    self.max_token = max(map(len, self.index), default=0)

  def __contains__(self, ex: Example) -> bool:
    return id(ex) in self.position

  def remove(self, ex: Example) -> None:
    """Removes `ex` (swapped with the last item, O(1))."""
    i = self.position.pop(id(ex))
    last = self.items.pop()
    if last is not ex:
      self.items[i] = last
      self.position[id(last)] = i
    self.by_target[ex.target].remove(ex)

  def sample(self, rng: random.Random, n: int) -> list:
    """`n` random examples (with replacement)."""
    return [self.items[rng.randrange(len(self.items))]
            for _ in range(min(n, len(self.items)))]

  def containing(self, text: str) -> list:
    """Examples whose target has a token that is a substring of `text` (what
    tasks/baseline.py `overlap` counts); tokens of more than MAX_POSTINGS
    targets ('the', 'and') are left to random draws."""
    found = set()
    for run in _TOKEN.findall(text.lower()):
      for i in range(len(run) - 2):
        for j in range(i + 3, min(len(run), i + self.max_token) + 1):
          targets = self.index.get(run[i:j], ())
          if len(targets) <= MAX_POSTINGS:
            found.update(targets)
    return [ex for target in sorted(found) for ex in self.by_target[target]]


def overlap(instance: str, target: str) -> float:
  """tasks/baseline.py `overlap`: share of the target's tokens in the text."""
  return load_baseline().overlap(instance, target)


class Overlaps:
  """Overlap signatures of targets with one instance text: the fractions of
  the target's tokens that occur in the text (tasks/baseline.py `overlap`),
  that are words of it (or their plural: "hawk" in "hawks that hunt") and
  that begin one of its words ("open" in "opening"). A false option must
  match the true one's signature, so neither the baseline nor the kind of
  match tells them apart ("age" inside "passage" cannot stand in for "open",
  nor "trial" inside "terrestrial" for "hawk")."""

  def __init__(self, instance: str):
    self.lowered = instance.lower()
    words = _TOKEN.findall(self.lowered)
    self.words = set(words) | {w[:-2] for w in words if w.endswith('es')} | {
        w[:-1] for w in words if w.endswith('s')}
    self.prefixes = {w[:k] for w in words for k in range(3, len(w) + 1)}

  def __call__(self, target: str) -> tuple:
    toks = target_tokens(target)
    if not toks:
      return (0.0, 0.0, 0.0)
    return tuple(sum(t in found for t in toks) / len(toks)
                 for found in (self.lowered, self.words, self.prefixes))


class FalseOptionRule:
  """Whether a target may be the false option of an example (as glossed now):
  not true for the word under any sense (`excluded(pos, word)`), not spelled
  like the word, and overlapping the instance exactly as the true target
  does (`Overlaps`): if the true target occurs in the gloss ("dog" in
  "poodle: an intelligent dog with a heavy curly coat"), the false one must
  occur there too ("coat"); if not, it must not."""

  def __init__(self, ex: Example, excluded: Callable,
               allowed: Callable = lambda target: True):
    self.ex = ex
    self.allowed = allowed
    self.signature = Overlaps(ex.instance)
    self.wanted = self.signature(ex.target)
    self.bad = excluded(ex.pos, ex.word)
    self.memo = {}

  def __call__(self, target: str) -> bool:
    if target not in self.memo:
      lowered = target.lower()
      self.memo[target] = (
          lowered != self.ex.target.lower() and lowered not in self.bad and
          self.allowed(target) and
          self.signature(target) == self.wanted and
          not surface_related(self.ex.word, target))
    return self.memo[target]


def fit_gloss(ex: Example, options: tuple, fits: Callable) -> Optional[str]:
  """The longest prefix of ex.gloss (whole words, none dangling) with which
  every option's "word: gloss [sep] proposition [cls]" fits; None if even a
  one-word gloss is too long."""
  gloss = ex.gloss
  while gloss:
    if all(fits(ex.word, gloss, option) for option in options):
      return gloss
    gloss = trim_words(gloss.split()[:-1])
  return None


def give_false(ex: Example, false: str, fits: Callable) -> Optional[str]:
  """The gloss with which `ex` can take `false` as its false option (shortened
  until both propositions fit, overlap signatures still equal), or None."""
  gloss = fit_gloss(ex, (ex.target, false), fits)
  if gloss is None:
    return None
  signature = Overlaps(INSTANCE_TEMPLATE.format(word=ex.word, gloss=gloss))
  return gloss if signature(false) == signature(ex.target) else None


def find_partner(ex: Example, pool: ExamplePool, rule: Callable,
                 fits: Callable, rng: random.Random,
                 mutual: bool = True) -> Optional[Example]:
  """An example of `pool` whose true target becomes ex's false option and,
  if `mutual`, the other way round; sets their `false` (and `gloss`).

  If ex's true target is in its gloss, all pool examples whose targets are
  there too are tried (in random order, so by target frequency), plus random
  draws; otherwise random draws only.
  """
  own = rule(ex)
  drawn = pool.sample(rng, FALSE_TRIES)
  if own.wanted[0]:
    found = {id(p): p for p in pool.containing(ex.instance) + drawn}
    candidates = [p for p in found.values() if own(p.target)]
    rng.shuffle(candidates)
  else:
    candidates = (p for p in drawn if own(p.target))
  for partner in candidates:
    if mutual and not rule(partner)(ex.target):
      continue
    gloss = give_false(ex, partner.target, fits)
    other = give_false(partner, ex.target, fits) if mutual else partner.gloss
    if gloss is not None and other is not None:
      ex.gloss, ex.false = gloss, partner.target
      if mutual:
        partner.gloss, partner.false = other, ex.target
      return partner
  return None


def pair_up(examples: list, excluded: Callable, fits: Callable,
            rng: random.Random) -> tuple:
  """Pairs examples that swap true targets as false options (poodle: dog vs
  coat, parka: coat vs dog), so every target is EXACTLY as often false as
  true and drawn from the empirical distribution of true targets. Per part
  of speech; examples whose true target is in their gloss go first (few
  partners fit them). Returns (pairs, unpaired examples)."""
  rules = {}

  def rule(ex: Example) -> FalseOptionRule:
    if id(ex) not in rules:
      rules[id(ex)] = FalseOptionRule(ex, excluded)
    return rules[id(ex)]
  pairs, unpaired = [], []
  for pos in sorted({ex.pos for ex in examples}):
    pool = ExamplePool((ex for ex in examples if ex.pos == pos), rng)
    for ex in sorted(pool.items, key=lambda ex: rule(ex).wanted[0] == 0):
      if ex not in pool:
        continue
      pool.remove(ex)
      partner = find_partner(ex, pool, rule, fits, rng)
      if partner is None:
        unpaired.append(ex)
      else:
        pool.remove(partner)
        pairs.append((ex, partner))
  return pairs, unpaired


def choose_false(examples: list, n: int, excluded: Callable, fits: Callable,
                 rng: random.Random, fallback: Optional[dict] = None) -> list:
  """At most n examples with false options, in random order.

  Train: n/2 of the pairs (`pair_up`), so each target's train prior is
  exactly 0.5: first those with an example whose true target is in its
  gloss (solvable by reading), in random order (a cut by commonness would
  favour some targets).
  Validation (`fallback`: pos -> ExamplePool of the train examples, never
  modified): the pairs plus the unpaired examples given a false option from
  the train targets (all with prior 0.5; each at most n / FALLBACK_SHARE
  times, or "state" would be the false option of every "United States
  writer"), then a random n.
  """
  pairs, unpaired = pair_up(examples, excluded, fits, rng)
  rng.shuffle(pairs)
  if fallback is None:
    pairs.sort(key=lambda pair: not any(
        overlap(ex.instance, ex.target) for ex in pair))
    kept = [ex for pair in pairs[:n // 2] for ex in pair]
  else:
    kept = [ex for pair in pairs for ex in pair]
    uses = collections.Counter()
    rule = lambda ex: FalseOptionRule(
        ex, excluded, lambda t: uses[t] < max(1, n // FALLBACK_SHARE))
    for ex in unpaired:
      if ex.pos in fallback and find_partner(ex, fallback[ex.pos], rule, fits,
                                             rng, mutual=False):
        uses[ex.false] += 1
        kept.append(ex)
  rng.shuffle(kept)
  return kept[:n]


@dataclasses.dataclass
class Relation:
  """Candidate (word, true target) pairs of one relation type, split by word."""
  name: str
  excluded: Callable  # (pos, word) -> lowercased options never false.
  pools: dict  # split -> candidates, most common first.
  sizes: dict  # split -> number of examples wanted.
  with_gloss: int = 0  # candidates (word, target) with a context gloss.
  without_gloss: int = 0  # candidates dropped for lack of one.

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
  glossed = clean_candidates([ex for ex in candidates if ex.gloss], rng)
  without = len(clean_candidates(candidates, random.Random(0))) - len(glossed)
  train, validation, n_val = split_by_word(
      glossed, n_train, n_val, VAL_SLACK.get(name, VAL_SLACK_DEFAULT),
      name in SYMMETRIC, rng)
  return Relation(name, excluded, {'train': train, 'validation': validation},
                  {'train': n_train, 'validation': n_val}, len(glossed),
                  without)


def draw_split(relation: Relation, split: str, fits: Callable,
               rng: random.Random, fallback: Optional[dict] = None) -> list:
  """Final labelled examples of a split: the most common candidates (glosses
  shortened until the true proposition fits) with false options
  (`choose_false`) and balanced random labels."""
  n = relation.sizes[split]
  pool = []
  for ex in relation.pools[split]:
    if len(pool) >= int(SLACK * n):
      break
    gloss = fit_gloss(ex, (ex.target,), fits)
    if gloss is not None:
      ex.gloss = gloss
      pool.append(ex)
  examples = choose_false(pool, n, relation.excluded, fits, rng, fallback)
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


def lm_split(wn: WordNet, used: list, max_chars: int, val_fraction: float,
             rng: random.Random) -> tuple:
  """Noun/verb/adjective glosses for the train stream, up to `max_chars`:
  the synsets used by the relation examples in the order given (`used`),
  then the most common other synsets. The validation lines are drawn at
  random from the most common other synsets (never a synset in `used`).
  Returns ({split: texts}, number of `used` synsets in train)."""
  used_set = set(used)
  keys = sorted(k for k in wn.synsets if k[0] in LM_POS)
  optional = [k for k in keys if k not in used_set]
  rng.shuffle(optional)  # random order among equal scores.
  optional.sort(key=lambda k: synset_score(wn, wn.synsets[k]), reverse=True)
  chars, chosen = 0, []
  for key in [k for k in used if k[0] in LM_POS] + optional:
    chars += len(lm_text(wn.synsets[key]))
    if chars > max_chars:
      break
    chosen.append(key)
  n_used = sum(k in used_set for k in chosen)
  n_val = int(val_fraction * len(chosen))
  val = rng.sample(optional[:max(len(chosen) - n_used, 10 * n_val)], n_val)
  val_keys = set(val)
  train = [k for k in chosen if k not in val_keys]
  rng.shuffle(train)
  return {'train': [lm_text(wn.synsets[k]) for k in train],
          'validation': [lm_text(wn.synsets[k]) for k in val]}, n_used


def lm_priority(examples: list) -> list:
  """Synsets of the relation examples for the LM stream, most useful first:
  the targets' synsets (what "ungulate" means; the word's own gloss is
  already in the instance), then the words' synsets."""
  targets = sorted({k for ex in examples for k in ex.synsets[1:]})
  seen = set(targets)
  return targets + sorted({ex.synsets[0] for ex in examples} - seen)


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
  used = sorted({k for rel in relations.values() for split in rel.pools
                 for ex in rel.candidates(split) for k in ex.synsets})
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

  @functools.lru_cache(maxsize=None)
  def length(text: str) -> int:
    return len(tokenizer.encode(text).ids)

  def fits(word: str, gloss: str, option: str) -> bool:
    instance = INSTANCE_TEMPLATE.format(word=word, gloss=gloss)
    proposition = template.format(word=word, option=option)
    return length(instance) + length(proposition) + 2 <= max_tokens
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
# WordNet demo data for FreeLM (v2: in-context glosses)

Derived from WordNet 3.0 (see `LICENSE`). Built by `tasks/build_wordnet.py`
(about 1.5 min on 2 cores) with

    {command}

The build is deterministic (fixed seed, gzip mtime=0): rerunning it rewrites
identical bytes. It reuses `vocab.json`/`merges.txt` from the output
directory byte for byte (`--tokenizer_dir` to take them from elsewhere;
`--train_tokenizer` trains a new BPE, which changes the token ids).

## What changed in v2

In v1 the instance was the bare word, so a small model had to memorise tens
of thousands of WordNet facts (accuracy stayed at chance). In v2 every
relation example carries a context, `gloss`, and the instance is
`{{word}}: {{gloss}}`, so many examples can be solved by reading
("poodle: an intelligent dog with a heavy curly coat" -> "A poodle is a kind
of dog." true, "A poodle is a kind of coat." false). False options are drawn
so that the word-overlap shortcut stays at chance (see below). The LM stream
is built after the examples and now lists the targets' synsets first. The
proposition templates and the vocabulary are unchanged.

## Files

* `lm.{{train,validation}}.jsonl.gz`: the language stream, `{{"text": ...}}`
  per line, one line per WordNet synset: `lemma, lemma, ...: definition.
  Example(s): usage. usage.` (nouns, verbs and adjectives; no adverbs). Train
  holds, up to {lm_max_chars:,} characters (which keeps this directory under
  4.5 MB), the synsets of the relation examples' targets (e.g. what
  "ungulate" means; {lm_targets} synsets), then of their words (whose
  glosses are in the instances already), then the most common other synsets
  (SemCor tag count from `cntlist.rev`, then polysemy): {lm_used} of the
  {lm_of_relations} synsets of relation examples fit, in {lm_train} train
  lines. Validation is {lm_val_pct:g}% of lines, drawn at random from the
  most common other synsets (never a relation example's).
* `<type>.{{train,validation}}.jsonl.gz`: one example per line,
  `{{"word": ..., "gloss": ..., "option0": ..., "option1": ..., "label": 0|1}}`;
  exactly one option is true and `label` is its index (balanced 50/50 at
  random).
* `proposition_templates.json`: per type, the instance template
  (`{{word}}: {{gloss}}`), the two proposition templates (identical except
  `{{option0}}` / `{{option1}}`), the task type and whether it is seen in
  training.
* `vocab.json`, `merges.txt`: byte-level BPE (HF `tokenizers`), {vocab_size}
  tokens, min_frequency 2, trained by the v1 build on its LM stream plus the
  seen types' true propositions and kept byte-identical since;
  `[pad]`=0, `<|endoftext|>`=1, `[sep]`=2, `[cls]`=3.
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
polysemy) are kept first. Sizes: up to {max_train} train and {max_val}
validation examples per type.

**Context (`gloss`)**: the short definition (first clause, no parentheses,
at most {gloss_words} words) of the sense of `word` that the relation uses
(the synset the hypernym / holonym / antonym / synonym pointer starts from).
For `definition`, whose options are definitions, it is instead a usage
example of that sense (WordNet's quoted examples; the first that contains the
word, else the first), and words without one are left out ({def_with_usage}
candidates have one: plenty, so no fallback context, such as the hypernym's
definition, was needed). When `word: gloss [sep] proposition [cls]` is
longer than {max_tokens} tokens with this vocab for either option, trailing
words of the gloss are dropped (never the example; {shortened}).

## How examples are drawn (shortcut defences)

* **Held-out words**: a `word` in `R.validation` never appears as a `word` in
  `R.train`; train also drops every example whose word synset is a validation
  example's synset, and, for the symmetric types (synonym, antonym), every
  example whose target is a validation word. Validation holds out words for
  {val_slack}x the wanted examples ({val_slack_ih}x for `{held_out}`, whose
  glosses mostly name a single class), at most a fifth of the candidates.
* **False options come in pairs**: two train examples of the same type and
  part of speech swap their true targets ("poodle" gets "coat" as its false
  option and an example whose hypernym is "coat" gets "dog"). So every target
  is exactly as often the false option as the true one: its train prior is
  0.5, and false options follow the empirical distribution of true targets.
  Up to {slack}x the wanted train candidates (most common first) are paired;
  unpaired ones are dropped; if more pairs form than needed, pairs with an
  in-gloss true target are kept first, then random ones. Validation pairs its
  own examples the same way; an unpaired validation example takes a true
  target of the type's train split instead (prior 0.5 as well; each such
  target for at most 2% of the split, or "state" would be the false option
  of every "United States writer").
* **Equal overlap with the instance**: the false option overlaps
  `word: gloss` exactly as the true one does: the same fraction of its tokens
  (>= 3 letters) occurs in the text (what `tasks/baseline.py` scores), is a
  word of it (or its plural) and begins one of its words. If the true target
  is in the gloss ("dog"), the false one is another valid target found there
  ("coat": the true target of some other example and not true for this
  word); if it is not, the false one is not there either. Examples without
  such an option are dropped, so mostly the glosses that name two or more
  targets keep their in-gloss examples (share per split below).
* A false option is **never true** for the word under any sense: not a lemma
  of any hypernym/instance-hypernym ancestor (hypernym, instance_hypernym),
  of anything reachable by holonym or is-a links (meronym), of the word's
  synsets or their direct is-a / similar-to / also-see / verb-group neighbours
  (synonym), of an antonym synset or its neighbours (antonym), nor the short
  definition of any sense of the word (definition).
* **No spelling overlap with the word**: examples whose true target shares
  spelling with the word (a >= 3-letter token of one is a substring of the
  other, e.g. sheepdog/dog, legal/illegal; or two tokens share their first 4
  letters, painful/painless, or an ending of >= 4 letters that is most of the
  shorter word, uptick/downtick) are dropped, and false options are drawn
  with the same property.

## Counts and the no-model shortcut baseline

Baseline: `tasks/baseline.py` on instance `word: gloss` (score =
Laplace-smoothed prior of the option being true in train + fraction of the
option's tokens found in the instance; exact ties broken by
`random.Random({seed})`), priors from the type's train split, accuracy on its
validation split. Chance is 0.5; with tie-breaking noise, a 500-example
split varies by about +-0.02 (the mean over 20 tie seeds is given too).
"In gloss": share of examples whose true target overlaps the instance (and so
does the false one), i.e. answerable by reading the gloss (for `definition`,
the usage example shares words with both definitions).

| type | train | validation | baseline (seed {seed}) | mean over 20 tie seeds | in gloss (train / validation) |
|---|---|---|---|---|---|
{count_rows}
| lm | {lm_train} | {lm_validation} | | | |
"""


def write_readme(args, summary: dict) -> None:
  """README.md: files, build command, counts and shortcut baselines."""
  counts, base = summary['counts'], summary['baseline']
  mean = summary['baseline_mean_over_20_tie_seeds']
  in_gloss = summary['true_target_in_gloss']
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
      f' | {base[name]:.3f} | {mean[name]:.3f} | '
      f'{in_gloss[name + ".train"]:.2f} / {in_gloss[name + ".validation"]:.2f}'
      ' |' for name in RELATIONS)
  shortened = ', '.join(f'{name} {n}' for name, n in
                        summary['glosses_shortened'].items() if n)
  command = ('python tasks/build_wordnet.py '
             f'--wordnet_dir={args.wordnet_dir} --out_dir={args.out_dir} '
             f'--seed={args.seed}')
  text = README.format(
      command=command, lm_max_chars=args.lm_max_chars,
      lm_val_pct=100 * args.lm_validation_fraction,
      vocab_size=summary['tokenizer']['vocab_size'], type_rows=type_rows,
      held_out=HELD_OUT_TYPE, def_words=DEFINITION_MAX_WORDS,
      gloss_words=GLOSS_MAX_WORDS, per_word=MAX_PER_WORD, seed=args.seed,
      count_rows=count_rows, lm_train=counts['lm.train'],
      lm_validation=counts['lm.validation'],
      lm_used=summary['lm_synsets_used_by_relations'],
      lm_of_relations=summary['lm_synsets_of_relations'],
      lm_targets=summary['lm_target_synsets_of_relations'],
      def_with_usage=summary['definition_candidates_with_usage'],
      shortened=(f'shortened: {shortened}' if shortened else
                 'none needed it'),
      max_tokens=args.max_proposition_tokens, max_train=args.max_train,
      max_val=args.max_validation, slack=SLACK, val_slack=VAL_SLACK_DEFAULT,
      val_slack_ih=VAL_SLACK[HELD_OUT_TYPE])
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
  parser.add_argument('--lm_max_chars', type=int, default=3_900_000,
                      help='Budget of LM text (keeps the output under 4.5 MB).')
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


def summarize(wn: WordNet, relations: dict, examples: dict, used: list,
              n_used: int, tokenizer_info: dict) -> dict:
  """Build statistics for the README (counts and baselines come later)."""
  definition = relations['definition']
  return {
      'counts': {}, 'baseline': {}, 'baseline_mean_over_20_tie_seeds': {},
      'true_target_in_gloss': {
          f'{name}.{split}': round(sum(
              overlap(ex.instance, ex.target) > 0 for ex in rows) /
                                   max(len(rows), 1), 3)
          for name, splits in examples.items()
          for split, rows in splits.items()},
      'glosses_shortened': {
          name: sum(ex.gloss != context_gloss(wn, name, ex)
                    for rows in splits.values() for ex in rows)
          for name, splits in examples.items()},
      'definition_candidates_with_usage': '%d of %d' % (
          definition.with_gloss,
          definition.with_gloss + definition.without_gloss),
      'held_out_type': HELD_OUT_TYPE, 'tokenizer': tokenizer_info,
      'lm_synsets_used_by_relations': n_used,
      'lm_synsets_of_relations': len(used),
      'lm_target_synsets_of_relations': len(
          {k for splits in examples.values() for rows in splits.values()
           for ex in rows for k in ex.synsets[1:]}),
  }


def train_pools(train: list, rng: random.Random) -> dict:
  """pos -> ExamplePool of the train examples (validation fallback)."""
  return {pos: ExamplePool((ex for ex in train if ex.pos == pos), rng)
          for pos in sorted({ex.pos for ex in train})}


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
        relation, 'validation', fits, rng, train_pools(train, rng))}

  used = lm_priority([ex for splits in examples.values()
                      for rows in splits.values() for ex in rows])
  lm, n_used = lm_split(wn, used, args.lm_max_chars,
                        args.lm_validation_fraction, rng)
  summary = summarize(wn, relations, examples, used, n_used, tokenizer_info)
  write_data(args, lm, examples, summary)
  write_license(args.wordnet_dir, args.copyright_file, args.out_dir)
  write_readme(args, summary)
  print(json.dumps(summary, indent=2))


if __name__ == '__main__':
  main(sys.argv[1:])
