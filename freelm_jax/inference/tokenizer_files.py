"""A checkpoint's tokenizer from its files: GPT-2's `vocab.json` +
`merges.txt`, or a Hugging Face `tokenizer.json`, with FreeLM's `[sep]` and
`[cls]` as single tokens where the checkpoint declares them or has rows for
them, else as plain text (docs/inference.md). No TensorFlow.
"""

import json
import os
from typing import Optional

import tokenizers

from freelm_jax.common import errors
from freelm_jax.common import resources
from freelm_jax.inference import tokenizer as tokenizer_lib

MARKERS = tokenizer_lib.SEP_TOKEN, tokenizer_lib.CLS_TOKEN
# GPT-2's vocabulary as shipped in the `tasks` package (tools/extract_gpt2_vocab.py).
GPT2_DIR = os.path.join(resources.tasks_data_dir(), 'gpt2')
GPT2_VOCAB_SIZE = 50257


def load_tokenizer(directory: str) -> Optional[tokenizers.Tokenizer]:
  """GPT-2-style byte-level BPE from vocab.json + merges.txt (or tokenizer.json)
  with FreeLM's special tokens appended; None when the directory has neither."""
  tokenizer = _bpe(directory)
  if tokenizer is not None:
    tokenizer_lib.add_special_tokens(tokenizer)
  return tokenizer


def _bpe(directory: str) -> Optional[tokenizers.Tokenizer]:
  """The BPE of vocab.json + merges.txt, else tokenizer.json; None without either."""
  vocab, merges = (os.path.join(directory, f) for f in ('vocab.json', 'merges.txt'))
  if os.path.isfile(vocab) and os.path.isfile(merges):
    return tokenizer_lib.byte_level_bpe(vocab, merges)
  if os.path.isfile(os.path.join(directory, 'tokenizer.json')):
    return tokenizers.Tokenizer.from_file(os.path.join(directory, 'tokenizer.json'))
  return None


def declared_tokens(directory: str) -> dict[str, dict]:
  """Added tokens that a directory's Hugging Face tokenizer files declare:
  content -> {'id': int or None (named only), 'lstrip': bool, 'rstrip': bool}."""
  def read(name):
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
      return {}
    with open(path, encoding='utf-8') as f:
      return json.load(f)

  config = read('tokenizer_config.json')
  named = [read('special_tokens_map.json'), config.get('additional_special_tokens'),
           config.get('extra_special_tokens')]
  out = {name: {'id': None} for name in _token_names(named)}
  for token_id, token in (config.get('added_tokens_decoder') or {}).items():
    out[token['content']] = dict(token, id=int(token_id))
  out.update({name: {'id': i} for name, i in read('added_tokens.json').items()})
  out.update({t['content']: t for t in read('tokenizer.json').get('added_tokens', [])})
  return {k: {'id': v.get('id'), 'lstrip': bool(v.get('lstrip')),
              'rstrip': bool(v.get('rstrip'))} for k, v in out.items()}


def _token_names(value) -> list[str]:
  """Token strings in special_tokens_map-style values (str, {'content'}, lists, dicts)."""
  if isinstance(value, str):
    return [value]
  if isinstance(value, dict):
    return ([value['content']] if 'content' in value else
            [n for v in value.values() for n in _token_names(v)])
  if isinstance(value, list):
    return [n for v in value for n in _token_names(v)]
  return []


def checkpoint_tokenizer(directory: str, rows: int
                         ) -> tuple[Optional[tokenizers.Tokenizer], bool]:
  """(tokenizer, markers_as_text) for a checkpoint whose token embedding has
  `rows` rows (docs/inference.md). `markers_as_text`: propositions are the
  string "instance [sep] proposition [cls]" through this tokenizer, as FreeLM's
  official README writes them; else (our checkpoints) the ids of instance,
  `[sep]`, proposition and `[cls]` are joined as the training pipeline does.

  * The tokenizer files declare `[sep]`/`[cls]` as added tokens: they are single
    tokens at the declared ids (which must be embedding rows), text encoding.
  * vocab.json holds them (our demo BPE), or the embedding has more rows than
    the vocabulary (our GPT-2 convention: 50257-50259 appended): joined ids.
  * Otherwise (embedding rows = vocabulary): the markers are plain text.
  """
  tokenizer = _bpe(directory)
  if tokenizer is None:
    return None, False
  base = tokenizer.get_vocab_size(with_added_tokens=False)
  declared = declared_tokens(directory)
  if rows < base:
    raise errors.CheckpointError(f'{directory}: the tokenizer has {base} tokens but the '
                                 f'token embedding only {rows} rows.')
  if any(m in declared for m in MARKERS):
    _add_declared(tokenizer, declared, directory)
    as_text = True
  elif all(tokenizer.token_to_id(m) is not None for m in MARKERS) or rows > base:
    tokenizer_lib.add_special_tokens(tokenizer)
    as_text = False
  else:
    return tokenizer, True
  for marker in MARKERS:
    token_id = tokenizer.token_to_id(marker)
    if token_id is None or token_id >= rows:
      raise errors.CheckpointError(
          f'{directory}: the tokenizer makes {marker} token id {token_id}, but the token '
          f'embedding has {rows} rows (tokenizer files and weights disagree).')
  return tokenizer, as_text


def _add_declared(tokenizer: tokenizers.Tokenizer, declared: dict, directory: str) -> None:
  """Adds the declared added tokens the tokenizer lacks, checking their ids."""
  order = sorted(declared.items(), key=lambda kv: (kv[1]['id'] is None, kv[1]['id'] or 0))
  for content, token in order:
    if tokenizer.token_to_id(content) is None:
      tokenizer.add_special_tokens([tokenizers.AddedToken(
          content, lstrip=token['lstrip'], rstrip=token['rstrip'], normalized=False,
          special=True)])
    if token['id'] is not None and tokenizer.token_to_id(content) != token['id']:
      raise errors.CheckpointError(
          f'{directory}: added token {content!r} is declared as id {token["id"]} '
          f'but would get id {tokenizer.token_to_id(content)}.')


def tokenizer_dir(path: str, vocab_dir: Optional[str], rows: int) -> Optional[str]:
  """Where the tokenizer files come from: `vocab_dir`, else `path`, else (an
  embedding of at least GPT-2's 50257 rows) GPT-2's vocabulary shipped in tasks/."""
  if vocab_dir:
    return resources.resolve(vocab_dir)
  if _bpe(path) is not None or rows < GPT2_VOCAB_SIZE or not os.path.isdir(GPT2_DIR):
    return path
  return GPT2_DIR
