"""GPT-2's vocabulary shipped in tasks/data/gpt2: known ids, and identical ids to
`transformers`' GPT2TokenizerFast on every GLUE validation sentence in ../shared."""

import hashlib
import json
import pathlib

import numpy as np
import pytest

from tasks import vocabulary

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_GLUE = REPO.parent / 'shared' / 'data' / 'glue'
GPT2 = pathlib.Path(vocabulary.GPT2_DIR)
# Checked against GPT2TokenizerFast built from the same files (and, for the
# first and third, GPT-2's published ids).
KNOWN_IDS = {
    'Hello world': [15496, 995],
    ' Hello': [18435],
    'hello <|endoftext|>': [31373, 220, 50256],
    "It's a truly great movie!": [1026, 338, 257, 4988, 1049, 3807, 0],
    'GPT-2 costs $1,000 per 3 days.': [38, 11571, 12, 17, 3484, 720, 16, 11, 830, 583, 513,
                                       1528, 13],
    'naïve café ☕': [2616, 38776, 40304, 34719, 243],
}


def test_the_files_are_openai_gpt2s():
  digest = lambda name: hashlib.sha256((GPT2 / name).read_bytes()).hexdigest()
  assert digest('vocab.json').startswith('196139668be63f3b')  # tiktoken's pinned hashes
  assert digest('merges.txt').startswith('1ce1664773c50f3e')
  assert (GPT2 / 'merges.txt').read_text(encoding='utf-8').startswith('#version: 0.2\n')
  assert 'MIT' in (GPT2 / 'LICENSE').read_text()


def test_known_gpt2_ids_and_freelm_specials():
  vocab = vocabulary.gpt2_vocabulary()  # the shipped files by default
  for text, ids in KNOWN_IDS.items():
    assert list(vocab.encode(text)) == ids, text
  assert (vocab.eos_id, vocab.sep_id, vocab.cls_id, vocab.pad_id) == (50256, 50257, 50258, 50259)
  assert vocab.vocab_size == 50260
  assert vocab.decode(KNOWN_IDS['naïve café ☕']) == 'naïve café ☕'


def _glue_sentences() -> list[str]:
  texts = []
  for path in sorted(SHARED_GLUE.glob('*.validation.jsonl')):
    with open(path, encoding='utf-8') as f:
      for line in f:
        texts += [v for v in json.loads(line).values() if isinstance(v, str) and v]
  return texts


def test_identical_ids_to_transformers_on_every_glue_validation_sentence():
  if not SHARED_GLUE.is_dir():
    pytest.skip('../shared/data/glue is absent')
  transformers = pytest.importorskip('transformers')
  reference = transformers.GPT2TokenizerFast(str(GPT2 / 'vocab.json'), str(GPT2 / 'merges.txt'))
  texts = _glue_sentences()
  assert len(texts) > 10_000
  expected = reference(texts)['input_ids']
  vocab = vocabulary.gpt2_vocabulary()
  mismatches = [t for t, ids in zip(texts, expected) if list(vocab.encode(t)) != ids]
  assert not mismatches, (len(mismatches), mismatches[:3])
  # The pipeline's batched TF path gives the same ids.
  ragged = vocab.encode_tf(np.array(texts[:512], dtype=object))
  assert [list(r) for r in ragged.numpy()] == expected[:512]
