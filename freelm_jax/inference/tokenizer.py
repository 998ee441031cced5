"""GPT-2-style byte-level BPE with FreeLM's special tokens, without TensorFlow.

The tokenizer is HF `tokenizers`' BPE of `vocab.json` + `merges.txt` with a
byte-level pre-tokenizer (`add_prefix_space=False`) and decoder, i.e. exactly
GPT-2's, so GPT-2 checkpoints can be used with it. Both the seqio vocabulary
(`tasks.vocabulary`) and the predictor build it here.

FreeLM needs the special tokens `<|endoftext|>`, `[sep]`, `[cls]` and `[pad]`.
Any of them that `vocab.json` already contains keeps its id (our demo vocab:
`[pad]`=0, `<|endoftext|>`=1, `[sep]`=2, `[cls]`=3). Missing ones are appended
after the BPE vocab in the order `<|endoftext|>`, `[sep]`, `[cls]`, `[pad]`; for
the real GPT-2 files (which have `<|endoftext|>`=50256) this gives the FreeLM
ids `[sep]`=50257, `[cls]`=50258, `[pad]`=50259, so `vocab_size` is 50260 and
a GPT-2 embedding table (50257 rows) must be grown accordingly. All four are
registered as special tokens, so e.g. `"a [sep] b"` encodes `[sep]` as one id
(the spaces around it stay ordinary tokens, so encode/decode round-trips).
"""

import json
from typing import Callable, Optional

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

EOS_TOKEN = '<|endoftext|>'
SEP_TOKEN = '[sep]'
CLS_TOKEN = '[cls]'
PAD_TOKEN = '[pad]'
# Order in which missing special tokens are appended after the BPE vocab.
SPECIAL_TOKENS = (EOS_TOKEN, SEP_TOKEN, CLS_TOKEN, PAD_TOKEN)


def proposition_lengths(instance: int, proposition: int, length: int) -> tuple[int, int]:
  """How many instance and proposition tokens `instance [sep] proposition [cls]`
  keeps in `length` tokens: the instance is cut first (from its end), then the
  proposition; `[sep]` and `[cls]` always stay. The training pipeline
  (`tasks.propositions`) cuts by the same rule."""
  kept_proposition = min(proposition, length - 2)
  return min(instance, length - 2 - kept_proposition), kept_proposition


def byte_level_bpe(vocab_file: str, merges_file: str,
                   read: Optional[Callable[[str], bytes]] = None) -> tokenizers.Tokenizer:
  """GPT-2's tokenizer of `vocab_file` + `merges_file`, without special tokens.

  Args:
    vocab_file: the BPE `vocab.json` (token -> id).
    merges_file: the BPE `merges.txt`.
    read: reads a file's bytes (e.g. from gs://); None: local files.
  """
  if read is None:
    bpe = models.BPE.from_file(vocab_file, merges_file)
  else:
    vocab = json.loads(read(vocab_file))
    merges = [tuple(line.split(' ')) for line in read(merges_file).decode('utf-8').splitlines()
              if line and not line.startswith('#version')]
    bpe = models.BPE(vocab=vocab, merges=merges)
  tokenizer = tokenizers.Tokenizer(bpe)
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  return tokenizer


def add_special_tokens(tokenizer: tokenizers.Tokenizer) -> dict[str, int]:
  """Adds FreeLM's special tokens (present ones keep their id); token -> id."""
  tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
  return {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
