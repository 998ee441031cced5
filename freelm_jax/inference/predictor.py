"""Inference with a trained FreeLM: LM logits, P(true), zero-shot labels, text.

    from freelm_jax import Predictor
    predictor = Predictor.from_pretrained('runs/demo', vocab_dir='tasks/data/opinions')
    label, probabilities = predictor.classify(
        'ward: a district into which a city or town is divided',
        {'yes': 'A ward is a kind of administrative district.',
         'no': 'A ward is a kind of musical instrument.'})
    predictor.generate('a district', max_new_tokens=20, temperature=0.0)

`from_pretrained` reads our model_dirs, Hugging Face GPT-2 directories and the
official FreeLM layout (`interop/weights.py`); whether `[sep]`/`[cls]` are
single tokens or plain text is decided from the checkpoint's tokenizer files
and embedding rows (`tokenizer_files.py`, docs/inference.md). Neither
TensorFlow nor seqio is imported: the tokenizer comes from `tokenizer.py`, as
`tasks.vocabulary.BPEVocabulary`'s does; sampling is in `decoding.py`.
"""

import dataclasses
import functools
from typing import Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers

from freelm_jax.core import network
from freelm_jax.core import objectives
from freelm_jax.core import param_layout
from freelm_jax.inference import decoding
from freelm_jax.inference import tokenizer as tokenizer_lib
from freelm_jax.inference import tokenizer_files
from freelm_jax.interop import weights

SEP_TOKEN, CLS_TOKEN = tokenizer_lib.SEP_TOKEN, tokenizer_lib.CLS_TOKEN

Ids = Sequence[int]
TokenRows = Union[np.ndarray, Sequence[Ids]]


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
    checkpoint = weights.load(path, step)
    config = checkpoint.config
    if dtype:
      config = dataclasses.replace(config, dtype=dtype)
    rows = config.vocab_size
    tokenizer, as_text = tokenizer_files.checkpoint_tokenizer(
        tokenizer_files.tokenizer_dir(path, vocab_dir, rows), rows)
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
    sampling = decoding.Sampling(float(temperature), top_k, top_p)
    fn = decoding.generate_cached if use_cache else decoding.generate_uncached
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
  return objectives.truth_probability(module, params, tokens, lengths)


