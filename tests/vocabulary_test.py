"""Tests for tasks/vocabulary.py (BPEVocabulary)."""

import json
import pickle
import shutil

import pytest
import seqio
import tensorflow as tf
import tokenizers

from tasks import vocabulary

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and trailing ones  ",
    "héllo wörld, ünïcode café naïve",
    "a dog is an animal [sep] an animal is a living thing [cls]",
    "日本語のテキスト and emoji 🙂",
] * 20

_TEXTS = [
    "The quick brown fox.",
    "  two leading spaces",
    " one leading space and trailing ",
    "héllo wörld café 日本 🙂",
    "unseen: Zebra-Quokka\n\ttabs",
    "",
]

_DEMO_SPECIALS = ["[pad]", "<|endoftext|>", "[sep]", "[cls]"]


def _train(tmp_path, name, special_tokens):
  """Trains a tiny byte-level BPE; returns (vocab_file, merges_file)."""
  out = tmp_path / name
  out.mkdir()
  tok = tokenizers.ByteLevelBPETokenizer()
  tok.train_from_iterator(
      _CORPUS, vocab_size=400, min_frequency=2,
      special_tokens=special_tokens, show_progress=False)
  vocab_file, merges_file = tok.save_model(str(out))
  return vocab_file, merges_file


@pytest.fixture
def demo_files(tmp_path):
  """Specials in vocab.json in the demo order: [pad]=0, eos=1, [sep]=2, [cls]=3."""
  return _train(tmp_path, "demo", _DEMO_SPECIALS)


@pytest.fixture
def gpt2like_files(tmp_path):
  """Like GPT-2: <|endoftext|> is the last vocab entry, no [sep]/[cls]/[pad]."""
  vocab_file, merges_file = _train(tmp_path, "gpt2like", [])
  with open(vocab_file) as f:
    vocab = json.load(f)
  vocab["<|endoftext|>"] = len(vocab)
  with open(vocab_file, "w") as f:
    json.dump(vocab, f)
  return vocab_file, merges_file


@pytest.fixture
def bare_files(tmp_path):
  """No special tokens at all."""
  return _train(tmp_path, "bare", [])


@pytest.fixture(params=["demo", "gpt2like", "bare"])
def vocab(request):
  return vocabulary.BPEVocabulary(*request.getfixturevalue(
      f"{request.param}_files"))


def _vocab_len(vocab_file):
  with open(vocab_file) as f:
    return len(json.load(f))


def test_round_trip(vocab):
  for text in _TEXTS:
    ids = vocab.encode(text)
    assert all(isinstance(i, int) for i in ids)
    assert vocab.decode(ids) == text


def test_matches_hf_byte_level_bpe(demo_files):
  vocab = vocabulary.BPEVocabulary(*demo_files)
  ref = tokenizers.ByteLevelBPETokenizer(*demo_files)
  for text in _TEXTS:
    assert vocab.encode(text) == ref.encode(text).ids


def test_specials_encode_as_single_ids(vocab):
  for token, tid in [("[sep]", vocab.sep_id), ("[cls]", vocab.cls_id),
                     ("[pad]", vocab.pad_id), ("<|endoftext|>", vocab.eos_id)]:
    assert vocab.encode(token) == [tid]
  text = "a [sep] b [cls]"
  ids = vocab.encode(text)
  assert ids.count(vocab.sep_id) == 1 and ids.count(vocab.cls_id) == 1
  assert ids[-1] == vocab.cls_id
  assert vocab.decode(ids) == text
  assert vocab.unk_id is None


def test_demo_ids(demo_files):
  vocab = vocabulary.BPEVocabulary(*demo_files)
  assert (vocab.pad_id, vocab.eos_id, vocab.sep_id, vocab.cls_id) == (
      0, 1, 2, 3)
  assert vocab.vocab_size == _vocab_len(demo_files[0])
  assert vocab.seqio_pad_compatible


def test_gpt2like_appends_sep_cls_pad(gpt2like_files):
  vocab = vocabulary.BPEVocabulary(*gpt2like_files)
  n = _vocab_len(gpt2like_files[0])
  assert vocab.eos_id == n - 1
  assert (vocab.sep_id, vocab.cls_id, vocab.pad_id) == (n, n + 1, n + 2)
  assert vocab.vocab_size == n + 3
  assert not vocab.seqio_pad_compatible


def test_bare_appends_all_specials(bare_files):
  vocab = vocabulary.BPEVocabulary(*bare_files)
  n = _vocab_len(bare_files[0])
  assert (vocab.eos_id, vocab.sep_id, vocab.cls_id, vocab.pad_id) == (
      n, n + 1, n + 2, n + 3)
  assert vocab.vocab_size == n + 4


def test_decode_drops_pad_and_stops_at_eos(vocab):
  ids = vocab.encode("hello [sep] world")
  junk = vocab.encode("junk")
  assert vocab.decode(ids + [vocab.eos_id] + junk) == "hello [sep] world"
  assert vocab.decode(ids + [vocab.pad_id] * 3) == "hello [sep] world"


def test_encode_tf_in_dataset_map(vocab):
  ds = tf.data.Dataset.from_tensor_slices(_TEXTS).map(vocab.encode_tf)
  assert ds.element_spec == tf.TensorSpec([None], tf.int32)
  got = [x.numpy().tolist() for x in ds]
  assert got == [vocab.encode(t) for t in _TEXTS]


def test_encode_tf_batch_is_ragged(vocab):
  ragged = vocab.encode_tf(tf.constant(_TEXTS))
  assert isinstance(ragged, tf.RaggedTensor)
  assert ragged.to_list() == [vocab.encode(t) for t in _TEXTS]


def test_decode_tf(vocab):
  texts = ["hello world", "  héllo 🙂 [sep] x"]
  ids = [vocab.encode(t) for t in texts]
  length = max(len(i) for i in ids) + 2
  padded = [i + [vocab.eos_id] + [vocab.pad_id] * (length - len(i) - 1)
            for i in ids]
  batch = vocab.decode_tf(tf.constant(padded, tf.int32))
  assert [b.decode() for b in batch.numpy().tolist()] == texts
  assert vocab.decode_tf(tf.constant(ids[1], tf.int32)).numpy().decode() == (
      texts[1])


def test_seqio_tokenize_preprocessor(demo_files):
  vocab = vocabulary.BPEVocabulary(*demo_files)
  ds = tf.data.Dataset.from_tensor_slices({"targets": _TEXTS[:3]})
  ds = seqio.preprocessors.tokenize(
      ds, {"targets": seqio.Feature(vocab, add_eos=True)})
  ds = seqio.preprocessors.append_eos(
      ds, {"targets": seqio.Feature(vocab, add_eos=True)})
  got = [x["targets"].numpy().tolist() for x in ds]
  assert got == [vocab.encode(t) + [vocab.eos_id] for t in _TEXTS[:3]]


def test_pickle(vocab):
  fresh = pickle.loads(pickle.dumps(vocab))  # Not loaded yet.
  assert fresh.encode("héllo [sep]") == vocab.encode("héllo [sep]")
  assert fresh.vocab_size == vocab.vocab_size  # Loaded now.
  again = pickle.loads(pickle.dumps(fresh))
  assert again == vocab and again.sep_id == vocab.sep_id


def test_equality(demo_files, bare_files, tmp_path):
  a = vocabulary.BPEVocabulary(*demo_files)
  copy_dir = tmp_path / "copy"
  copy_dir.mkdir()
  copied = [shutil.copy(f, copy_dir) for f in demo_files]
  assert a == vocabulary.BPEVocabulary(*demo_files)
  assert a == vocabulary.BPEVocabulary(*copied)
  assert a != vocabulary.BPEVocabulary(*bare_files)
  assert a != seqio.PassThroughVocabulary(size=a.vocab_size)


def test_lazy_loading(tmp_path):
  vocab = vocabulary.BPEVocabulary(
      str(tmp_path / "missing.json"), str(tmp_path / "missing.txt"))
  assert "missing.json" in str(vocab)
  with pytest.raises(Exception):
    vocab.encode("x")
