"""Inference with a trained FreeLM: LM logits, P(true), zero-shot labels, text.

    from freelm_jax import Predictor
    predictor = Predictor.from_pretrained('runs/demo', vocab_dir='tasks/data/opinions')
    label, probabilities = predictor.classify(
        'ward: a district into which a city or town is divided',
        {'yes': 'A ward is a kind of administrative district.',
         'no': 'A ward is a kind of musical instrument.'})
    predictor.generate('a district', max_new_tokens=20, temperature=0.0)

`from_pretrained` reads our model_dirs, Hugging Face GPT-2 directories and the
official FreeLM layout (see `interop.py`); whether `[sep]`/`[cls]` are single
tokens or plain text is decided from the checkpoint's tokenizer files and
embedding rows (`checkpoint_tokenizer`, docs/inference.md). Neither TensorFlow
nor seqio is imported: the tokenizer comes from `freelm_jax.tokenizer`, as
`tasks.vocabulary.BPEVocabulary`'s does.
"""

import dataclasses
import functools
import json
import os
from typing import Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers

from freelm_jax import errors
from freelm_jax import interop
from freelm_jax import models
from freelm_jax import network
from freelm_jax import param_layout
from freelm_jax import resources
from freelm_jax import tokenizer as tokenizer_lib

MARKERS = SEP_TOKEN, CLS_TOKEN = tokenizer_lib.SEP_TOKEN, tokenizer_lib.CLS_TOKEN
# GPT-2's vocabulary as shipped in the `tasks` package (tools/extract_gpt2_vocab.py).
GPT2_DIR = os.path.join(resources.tasks_data_dir(), 'gpt2')
GPT2_VOCAB_SIZE = 50257

Ids = Sequence[int]
TokenRows = Union[np.ndarray, Sequence[Ids]]


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


def _tokenizer_dir(path: str, vocab_dir: Optional[str], rows: int) -> Optional[str]:
  """Where the tokenizer files come from: `vocab_dir`, else `path`, else (an
  embedding of at least GPT-2's 50257 rows) GPT-2's vocabulary shipped in tasks/."""
  if vocab_dir:
    return resources.resolve(vocab_dir)
  if _bpe(path) is not None or rows < GPT2_VOCAB_SIZE or not os.path.isdir(GPT2_DIR):
    return path
  return GPT2_DIR


def _bucket(length: int, limit: int) -> int:
  """Padded length: the next power of two (at least 8), at most `limit`."""
  return min(max(8, 1 << (max(length, 1) - 1).bit_length()), limit)


class Predictor:
  """A FreeLM network with its tokenizer, for scoring and generation."""

  def __init__(self, config: network.ModelConfig, params, *,
               tokenizer: Optional[tokenizers.Tokenizer] = None,
               has_teacher_head: bool = True, batch_size: int = 64,
               pad_id: Optional[int] = None, markers_as_text: bool = False):
    """Wraps numpy/jax parameters of `config` (scanned or unrolled layout).
    `markers_as_text`: see `checkpoint_tokenizer`."""
    self.config = dataclasses.replace(config, scan_layers=True, remat_policy='none')
    self.params = jax.device_put(param_layout.scanned(
        param_layout.to_numpy(params), config.num_layers))
    self.module = network.FreeLM(self.config)
    self.decode_module = network.FreeLM(self.config, decode=True)
    self.tokenizer = tokenizer
    self.has_teacher_head = has_teacher_head
    self.batch_size = batch_size
    self.markers_as_text = markers_as_text
    token_id = lambda t: tokenizer.token_to_id(t) if tokenizer else None
    special_ids = map(token_id, tokenizer_lib.SPECIAL_TOKENS)
    self.eos_id, self.sep_id, self.cls_id, default_pad = special_ids
    if default_pad is None or default_pad >= config.vocab_size:
      default_pad = self.eos_id if self.eos_id is not None else 0
    self.pad_id = pad_id if pad_id is not None else default_pad

  @classmethod
  def from_pretrained(cls, path: str, step: Optional[int] = None,
                      vocab_dir: Optional[str] = None, dtype: Optional[str] = None,
                      batch_size: int = 64) -> 'Predictor':
    """Loads our model_dir (newest checkpoint or `step`), an HF GPT-2 or a
    FreeLM directory. Tokenizer files come from `vocab_dir`, else `path`, else
    (embeddings of 50257+ rows) GPT-2's shipped vocabulary; they and the
    embedding's rows decide how `[sep]`/`[cls]` are encoded (`checkpoint_tokenizer`)."""
    checkpoint = interop.load(path, step)
    config = checkpoint.config
    if dtype:
      config = dataclasses.replace(config, dtype=dtype)
    rows = config.vocab_size
    tokenizer, as_text = checkpoint_tokenizer(_tokenizer_dir(path, vocab_dir, rows), rows)
    return cls(config, checkpoint.params, tokenizer=tokenizer,
               has_teacher_head=checkpoint.has_teacher_head, batch_size=batch_size,
               markers_as_text=as_text)

  # --- Token ids -------------------------------------------------------------

  def _require_tokenizer(self) -> tokenizers.Tokenizer:
    if self.tokenizer is None:
      raise ValueError('This model has no tokenizer files (vocab.json + merges.txt); '
                       'pass a vocab_dir (--vocab_dir; tasks/data/opinions for the demo).')
    return self.tokenizer

  def encode(self, text: str) -> list[int]:
    return self._require_tokenizer().encode(text).ids

  def decode(self, ids: Ids) -> str:
    return self._require_tokenizer().decode(list(ids))

  def encode_proposition(self, instance: str, proposition: str) -> list[int]:
    """`instance [sep] proposition [cls]` as the checkpoint expects it (see
    `checkpoint_tokenizer`), cut to the context (the instance first)."""
    self._require_tokenizer()
    room = self.config.max_len
    if self.markers_as_text:  # FreeLM's README: the whole string through the tokenizer
      tail = self.encode(f' {SEP_TOKEN} {proposition} {CLS_TOKEN}')[-room:]
      ids = self.encode(f'{instance} {SEP_TOKEN} {proposition} {CLS_TOKEN}')
      return ids[:max(0, min(len(ids) - len(tail), room - len(tail)))] + tail
    instance_ids, proposition_ids = self.encode(instance), self.encode(proposition)
    keep_instance, keep_proposition = tokenizer_lib.proposition_lengths(
        len(instance_ids), len(proposition_ids), room)
    return (instance_ids[:keep_instance] + [self.sep_id] + proposition_ids[:keep_proposition]
            + [self.cls_id])

  def _rows(self, token_ids: TokenRows, lengths=None) -> tuple[list, np.ndarray]:
    """(list of id rows without padding, lengths)."""
    if getattr(token_ids, 'ndim', 0) == 2:  # a padded numpy or jax array
      array = np.asarray(token_ids)
      if lengths is None:
        not_pad = array != self.pad_id
        lengths = np.where(not_pad.any(1),
                           array.shape[1] - np.argmax(not_pad[:, ::-1], axis=1), 0)
      token_ids = [row[:n] for row, n in zip(array, np.asarray(lengths))]
    rows = [np.asarray(r, np.int32) for r in token_ids]
    lengths = np.array([len(r) for r in rows] if lengths is None else lengths, np.int32)
    for row in rows:
      if len(row) > self.config.max_len:
        raise ValueError(f'A row has {len(row)} tokens; the context is {self.config.max_len}.')
      if len(row) and (row.min() < 0 or row.max() >= self.config.vocab_size):
        raise ValueError(f'Token id {int(row.max())} is outside the model\'s '
                         f'vocabulary of {self.config.vocab_size}.')
    return rows, lengths

  def _batches(self, rows: list, lengths: np.ndarray):
    """Yields (count, tokens [batch_size, L], lengths) with L a padded bucket."""
    for start in range(0, len(rows), self.batch_size):
      chunk = rows[start:start + self.batch_size]
      width = _bucket(max(len(r) for r in chunk), self.config.max_len)
      tokens = np.full((self.batch_size, width), self.pad_id, np.int32)
      for i, row in enumerate(chunk):
        tokens[i, :len(row)] = row
      chunk_lengths = np.ones(self.batch_size, np.int32)
      chunk_lengths[:len(chunk)] = lengths[start:start + len(chunk)]
      yield len(chunk), tokens, chunk_lengths

  # --- Scoring -----------------------------------------------------------------

  def logits(self, token_ids: TokenRows) -> np.ndarray:
    """Next-token logits [batch, length, vocab] (float32); rows are right-padded,
    and positions past a row's end hold no meaning."""
    rows, _ = self._rows(token_ids, [len(r) for r in token_ids])
    width = max(len(r) for r in rows)
    tokens = np.full((len(rows), width), self.pad_id, np.int32)
    for i, row in enumerate(rows):
      tokens[i, :len(row)] = row
    return np.asarray(_lm_logits(self.module, self.params, tokens))

  def truth_probability(self, token_ids: TokenRows, lengths=None) -> np.ndarray:
    """P(true) per proposition, read at `[cls]` (index `lengths - 1`; by default
    the row's length, or its last token that is not `[pad]`) as the model's
    `config.head_reading` says (official FreeLM checkpoints: head 0's whole row)."""
    if not self.has_teacher_head:
      raise ValueError('This checkpoint has no teacher head (mtc_head); it cannot '
                       'judge propositions.')
    rows, lengths = self._rows(token_ids, lengths)
    out = [np.asarray(_truth_probability(self.module, self.params, tokens, chunk_lengths))[:n]
           for n, tokens, chunk_lengths in self._batches(rows, lengths)]
    return np.concatenate(out) if out else np.zeros((0,), np.float32)

  def truth_probability_text(self, texts: Sequence[Union[str, tuple[str, str]]]) -> np.ndarray:
    """P(true) of propositions given as (instance, proposition) pairs or as
    strings `"instance [sep] proposition [cls]"` (the `[cls]` is optional)."""
    return self.truth_probability([self.encode_proposition(*_split(t)) for t in texts])

  def classify_many(self, examples: Sequence[tuple[str, Mapping]]) -> list[tuple]:
    """`classify` for many (instance, propositions) at once, in batches."""
    pairs = [(instance, text) for instance, propositions in examples
             for text in _as_mapping(propositions).values()]
    p_true = iter(self.truth_probability_text(pairs).tolist())
    out = []
    for _, propositions in examples:
      probabilities = {label: next(p_true) for label in _as_mapping(propositions)}
      out.append((max(probabilities, key=probabilities.get), probabilities))
    return out

  def classify(self, instance: str, propositions: Union[Mapping, Sequence[str]]) -> tuple:
    """Zero-shot label: (the label whose proposition is most probably true,
    {label: P(true)}). `propositions` maps label -> proposition text (a list
    is labelled 0, 1, ...)."""
    return self.classify_many([(instance, propositions)])[0]

  # --- Generation --------------------------------------------------------------

  def generate(self, prompt: Union[str, Ids], max_new_tokens: int = 32,
               temperature: float = 1.0, top_k: Optional[int] = None,
               top_p: Optional[float] = None, seed: int = 0,
               use_cache: bool = True) -> Union[str, list[int]]:
    """Continues `prompt`; temperature 0 is greedy. Stops at `<|endoftext|>`.

    Returns the continuation only: text for a text prompt, ids for ids.
    `use_cache=False` recomputes the whole prefix at every step (a reference
    for the KV-cache path).
    """
    ids = self.encode(prompt) if isinstance(prompt, str) else list(prompt)
    if not ids:
      raise ValueError('generate needs a non-empty prompt.')
    if len(ids) + max_new_tokens > self.config.max_len:
      raise ValueError(f'{len(ids)} prompt + {max_new_tokens} new tokens exceed the '
                       f'context of {self.config.max_len}.')
    self._rows([ids])
    sampling = _Sampling(float(temperature), top_k, top_p)
    fn = _generate_cached if use_cache else _generate_uncached
    new = np.asarray(fn(self.decode_module if use_cache else self.module, self.params,
                        np.asarray([ids], np.int32), jax.random.key(seed),
                        max_new_tokens, sampling))[0].tolist()
    if self.eos_id is not None and self.eos_id in new:
      new = new[:new.index(self.eos_id)]
    return self.decode(new) if isinstance(prompt, str) else new


def _split(text: Union[str, tuple[str, str]]) -> tuple[str, str]:
  """(instance, proposition) of a pair or of "instance [sep] proposition [cls]"."""
  if not isinstance(text, str):
    instance, proposition = text
    return instance, proposition
  if SEP_TOKEN not in text:
    raise ValueError(f'No {SEP_TOKEN} in proposition text {text[:60]!r}.')
  instance, _, proposition = text.partition(SEP_TOKEN)
  proposition = proposition.strip()
  proposition = proposition.removesuffix(CLS_TOKEN).strip()
  return instance.strip(), proposition


def _as_mapping(propositions) -> Mapping:
  if isinstance(propositions, Mapping):
    return propositions
  return dict(enumerate(propositions))


@functools.partial(jax.jit, static_argnums=0)
def _lm_logits(module, params, tokens):
  logits = module.apply({'params': params}, tokens,
                        method=lambda m, t: m.lm_logits(m(t)))
  return logits[..., :module.config.vocab_size].astype(jnp.float32)  # no padded rows


@functools.partial(jax.jit, static_argnums=0)
def _truth_probability(module, params, tokens, lengths):
  return models.truth_probability(module, params, tokens, lengths)


@dataclasses.dataclass(frozen=True)
class _Sampling:
  temperature: float
  top_k: Optional[int]
  top_p: Optional[float]

  def __call__(self, logits_BV, rng):
    """Greedy (temperature 0) or sampled next tokens, [B]."""
    if self.temperature == 0:
      return jnp.argmax(logits_BV, -1).astype(jnp.int32)
    logits_BV = logits_BV.astype(jnp.float32) / self.temperature
    if self.top_k:
      kth_B1 = jax.lax.top_k(logits_BV, self.top_k)[0][:, -1:]
      logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
    if self.top_p is not None and self.top_p < 1:
      sorted_BV = -jnp.sort(-logits_BV, axis=-1)
      probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
      keep_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV < self.top_p
      cutoff_B1 = jnp.min(jnp.where(keep_BV, sorted_BV, jnp.inf), -1, keepdims=True)
      logits_BV = jnp.where(logits_BV < cutoff_B1, -jnp.inf, logits_BV)
    return jax.random.categorical(rng, logits_BV).astype(jnp.int32)


def _last_logits(module, tokens_BT, positions_BT):
  return module.lm_logits(module(tokens_BT, positions_BT)[:, -1])


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _generate_cached(module, params, prompt_BP, rng, max_new: int, sample: _Sampling):
  """Prefills the KV cache with the prompt, then decodes one token per step."""
  B, P = prompt_BP.shape
  S = P + max_new
  shapes = jax.eval_shape(lambda: module.init(
      jax.random.key(0), jnp.zeros((B, S), jnp.int32), jnp.zeros((B, S), jnp.int32)))
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes['cache'])

  def forward(cache, tokens_BT, start):
    positions_BT = start + jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    logits_BV, variables = module.apply(
        {'params': params, 'cache': cache}, tokens_BT, positions_BT,
        method=_last_logits, mutable=['cache'])
    return variables['cache'], logits_BV

  cache, logits_BV = forward(cache, prompt_BP, 0)

  def step(carry, inputs):
    cache, logits_BV = carry
    i, step_rng = inputs
    token_B = sample(logits_BV, step_rng)
    cache, logits_BV = forward(cache, token_B[:, None], P + i)
    return (cache, logits_BV), token_B

  _, tokens_NB = jax.lax.scan(step, (cache, logits_BV),
                              (jnp.arange(max_new), jax.random.split(rng, max_new)))
  return tokens_NB.T


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _generate_uncached(module, params, prompt_BP, rng, max_new: int, sample: _Sampling):
  """Reference decoding: the whole sequence is recomputed at every step."""
  B, P = prompt_BP.shape
  buffer_BS = jnp.concatenate([prompt_BP, jnp.zeros((B, max_new), jnp.int32)], axis=1)

  def step(buffer_BS, inputs):
    i, step_rng = inputs
    logits_BSV = module.apply({'params': params}, buffer_BS,
                              method=lambda m, t: m.lm_logits(m(t)))
    token_B = sample(jax.lax.dynamic_index_in_dim(logits_BSV, P + i - 1, 1, False),
                     step_rng)
    return jax.lax.dynamic_update_slice(buffer_BS, token_B[:, None], (0, P + i)), token_B

  _, tokens_NB = jax.lax.scan(step, buffer_BS,
                              (jnp.arange(max_new), jax.random.split(rng, max_new)))
  return tokens_NB.T
