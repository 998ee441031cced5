"""A seqio vocabulary for GPT-2-style byte-level BPE (vocab.json + merges.txt).

The tokenizer and FreeLM's special tokens (`<|endoftext|>`, `[sep]`, `[cls]`,
`[pad]`: present ones keep their id, missing ones are appended) come from
`freelm_jax.inference.tokenizer`; this module wraps them as a seqio vocabulary.

Padding: seqio's feature converters pad with id 0 and derive loss weights
from `ids != 0`, i.e. they assume `pad_id == 0` (see `seqio_pad_compatible`).
That holds for the demo vocab but not for GPT-2, whose id 0 is "!" and whose
`[pad]` is 50259. Ids are never remapped here; `freelm_jax.data.input_pipeline`
shifts ids by one around seqio's packing so "!" is trained on and padding
(written as `[pad]`) is not, and teacher batches carry explicit lengths.

Files may be local or remote (`gs://...`, read through `tf.io.gfile`).
"""

import hashlib
import itertools
import os
import threading
from typing import Dict, Iterable, Optional, Sequence

from absl import logging
import numpy as np
import seqio
import tensorflow as tf
import tokenizers

from freelm_jax.common import resources
from freelm_jax.inference import tokenizer as tokenizer_lib

_LOAD_LOCK = threading.Lock()


def _special_id_property(token: str, doc: str) -> property:
  """A read-only property: the id of the special `token`."""
  return property(lambda self: self._special_id(token), doc=doc)  # pylint: disable=protected-access


class BPEVocabulary(seqio.Vocabulary):
  """GPT-2-style byte-level BPE vocabulary with FreeLM's special tokens.

  The tokenizer is built lazily on first use and is not pickled (only the
  file paths are), so instances are cheap to create, copy and pickle.
  Files may be local paths or any `tf.io.gfile` path (e.g. `gs://`).

  `decode` drops `[pad]` and `<|endoftext|>` ids (seqio's `decode` already
  truncates after the first EOS and `decode_tf` fills it with `pad_id`), but
  keeps `[sep]` and `[cls]` as text.
  """

  def __init__(self, vocab_file: str, merges_file: str):
    """Initializes the vocabulary.

    Args:
      vocab_file: path to the BPE `vocab.json` (token -> id); local or gs://.
      merges_file: path to the BPE `merges.txt`; local or gs://.
    """
    super().__init__(extra_ids=0)
    self._vocab_file = vocab_file
    self._merges_file = merges_file
    self._tokenizer: Optional[tokenizers.Tokenizer] = None
    self._special_ids: Dict[str, int] = {}

  # --- Loading / pickling -------------------------------------------------

  def __getstate__(self):
    return {"vocab_file": self._vocab_file, "merges_file": self._merges_file}

  def __setstate__(self, state):
    self.__init__(state["vocab_file"], state["merges_file"])

  @property
  def tokenizer(self) -> tokenizers.Tokenizer:
    """The underlying HF tokenizer (built on first access)."""
    if self._tokenizer is None:
      with _LOAD_LOCK:
        if self._tokenizer is None:
          self._load()
    return self._tokenizer

  def _load(self) -> None:
    remote = "://" in self._vocab_file or "://" in self._merges_file
    tok = tokenizer_lib.byte_level_bpe(self._vocab_file, self._merges_file,
                                       read=_read if remote else None)
    self._special_ids = tokenizer_lib.add_special_tokens(tok)
    if self._special_ids[tokenizer_lib.PAD_TOKEN] != seqio.vocabularies.PAD_ID:
      logging.info(
          "BPEVocabulary(%s): pad_id=%d, not seqio's %d; freelm_jax.data.input_pipeline "
          "shifts ids around seqio's packing, other seqio converters would treat "
          "id %d as padding.", self._vocab_file, self._special_ids[tokenizer_lib.PAD_TOKEN],
          seqio.vocabularies.PAD_ID, seqio.vocabularies.PAD_ID)
    self._tokenizer = tok

  def _special_id(self, token: str) -> int:
    _ = self.tokenizer  # Ensures _special_ids is filled.
    return self._special_ids[token]

  # --- Ids ----------------------------------------------------------------

  pad_id = _special_id_property(tokenizer_lib.PAD_TOKEN,
                                'The `[pad]` id (may be != 0, see `seqio_pad_compatible`).')
  eos_id = _special_id_property(tokenizer_lib.EOS_TOKEN, 'The `<|endoftext|>` id.')
  sep_id = _special_id_property(tokenizer_lib.SEP_TOKEN, 'The `[sep]` id.')
  cls_id = _special_id_property(tokenizer_lib.CLS_TOKEN, 'The `[cls]` id.')

  @property
  def bos_id(self) -> Optional[int]:
    return None

  @property
  def unk_id(self) -> Optional[int]:
    return None  # Byte-level BPE has no unknown tokens.

  @property
  def seqio_pad_compatible(self) -> bool:
    """Whether `pad_id == 0`, as seqio's feature converters/packing assume."""
    return self.pad_id == seqio.vocabularies.PAD_ID

  @property
  def _base_vocab_size(self) -> int:
    """Number of ids: the BPE vocab plus any appended special tokens."""
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  # --- Python encode / decode ---------------------------------------------

  def _encode(self, s: str) -> Sequence[int]:
    return self.tokenizer.encode(s).ids

  def _decode(self, ids: Iterable[int]) -> str:
    drop = (self.pad_id, self.eos_id)
    ids = [int(i) for i in ids if int(i) not in drop]
    return self.tokenizer.decode(ids, skip_special_tokens=False)

  # --- TF encode / decode (via tf.numpy_function; works in tf.data) --------

  def _encode_np(self, s: bytes) -> np.ndarray:
    return np.asarray(self._encode(s.decode("utf-8")), dtype=np.int32)

  def _encode_batch_np(self, s: np.ndarray):
    # encode_batch_fast: no offsets; runs in Rust threads without the GIL.
    encs = self.tokenizer.encode_batch_fast([x.decode("utf-8") for x in s])
    ids = [e.ids for e in encs]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int32,
                       count=int(lengths.sum()))
    return flat, lengths

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    """Encodes a scalar string (-> int32 [None]) or a 1-D batch (-> ragged)."""
    s = tf.convert_to_tensor(s, dtype=tf.string)
    if s.shape.rank == 1:
      flat, lengths = tf.numpy_function(
          self._encode_batch_np, [s], [tf.int32, tf.int64], stateful=False)
      flat.set_shape([None])
      lengths.set_shape(s.shape)
      # validate=False: the lengths come from the same encoding as `flat`.
      return tf.RaggedTensor.from_row_lengths(flat, lengths, validate=False)
    ids = tf.numpy_function(self._encode_np, [s], tf.int32, stateful=False)
    ids.set_shape([None])
    return ids

  def _decode_np(self, ids: np.ndarray) -> np.ndarray:
    rows = ids.reshape(-1, ids.shape[-1])
    out = [self._decode(r.tolist()).encode("utf-8") for r in rows]
    return np.array(out, dtype=object).reshape(ids.shape[:-1])

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    """Decodes int ids [..., length] to strings [...]."""
    ids = tf.convert_to_tensor(ids)
    out = tf.numpy_function(self._decode_np, [ids], tf.string, stateful=False)
    if ids.shape.rank is not None:
      out.set_shape(ids.shape[:-1])
    return out

  # --- Comparison ---------------------------------------------------------

  def _digest(self) -> str:
    h = hashlib.sha256()
    for path in (self._vocab_file, self._merges_file):
      h.update(_read(path))
    return h.hexdigest()

  def __eq__(self, other) -> bool:
    """Equal iff both vocabularies are built from identical file contents."""
    if not isinstance(other, BPEVocabulary):
      return False
    return self._digest() == other._digest()

  def __str__(self) -> str:
    return (f"BPEVocabulary(vocab_file={self._vocab_file!r}, "
            f"merges_file={self._merges_file!r})")

  __repr__ = __str__


def _read(path: str) -> bytes:
  """Bytes of a local or `tf.io.gfile` (e.g. gs://) file."""
  if "://" in path:
    with tf.io.gfile.GFile(path, "rb") as f:
      return f.read()
  with open(path, "rb") as f:
    return f.read()


def gpt2_vocabulary(vocab_dir: Optional[str] = None) -> BPEVocabulary:
  """GPT-2's `vocab.json` + `merges.txt` in `vocab_dir` (local or gs://; default:
  GPT-2's own, shipped in tasks/data/gpt2)."""
  vocab_dir = resources.resolve(vocab_dir) if vocab_dir else GPT2_DIR
  return BPEVocabulary(os.path.join(vocab_dir, "vocab.json"),
                       os.path.join(vocab_dir, "merges.txt"))


def from_dir(vocab_dir=None) -> BPEVocabulary:
  """The BPE in `vocab_dir`, or the embedded demo BPE when None."""
  return gpt2_vocabulary(vocab_dir) if vocab_dir else demo_vocabulary()


DEMO_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "opinions")


DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
# GPT-2's vocab.json + merges.txt (OpenAI's files; tools/extract_gpt2_vocab.py).
GPT2_DIR = os.path.join(DATA_DIR, "gpt2")


def gpt2_dir() -> str:
  """The directory of GPT-2's shipped vocabulary (gin: `@vocabulary.gpt2_dir()`)."""
  return GPT2_DIR


def data_file(name: str) -> str:
  """Absolute path of a file shipped in tasks/data/, e.g. 'opinions/lm.train.jsonl.gz'."""
  path = os.path.join(DATA_DIR, name)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"tasks/data/{name}: no such shipped file.")
  return path


def demo_vocabulary() -> BPEVocabulary:
  """The small BPE shipped with the embedded default (`data/opinions`)."""
  return BPEVocabulary(os.path.join(DEMO_DIR, "vocab.json"),
                       os.path.join(DEMO_DIR, "merges.txt"))
