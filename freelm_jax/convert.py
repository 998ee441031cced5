r"""Converts checkpoints between our model_dirs and the Hugging Face GPT-2 layout.

  # GPT-2 or FreeLM weights -> a model_dir that training continues from:
  python -m freelm_jax.convert --input=/models/gpt2 --output=runs/gpt2 \
      [--to=model_dir] [--vocab_size=N] [--head_labels=2,8] [--max_len=N]

  # a model_dir (newest checkpoint or --step) -> GPT-2 / FreeLM layout:
  python -m freelm_jax.convert --input=runs/demo --output=/tmp/demo_hf [--to=hf] \
      [--vocab_dir=tasks/data/opinions]

An imported model_dir holds `checkpoints/0` (the train state at step 0: the
weights and a fresh AdamW state) and a `config.gin` with the network's shape;
train on it with `--model_dir` and gin files of the same shape. The export is a
`GPT2LMHeadModel` directory (`transformer.*`, `lm_head.weight`) that also
carries FreeLM's `mtc_head.weight` and `num_multi_task_labels`. Both directions
keep the model's `head_reading` (how P(true) is read). Tokenizer files
are copied when present. The output directory must not exist.
"""

import dataclasses
import os
import shutil

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp

from freelm_jax import cli
from freelm_jax.common import errors
from freelm_jax.common import resources
from freelm_jax.core import checkpoints
from freelm_jax.core import network
from freelm_jax.core import trainer as trainer_lib
from freelm_jax.inference import tokenizer_files
from freelm_jax.interop import hf_format
from freelm_jax.interop import operative_config
from freelm_jax.interop import weights

flags.DEFINE_string('input', None, 'Source: a model_dir, HF GPT-2 or FreeLM directory.',
                    required=True)
flags.DEFINE_string('output', None, 'Directory to create.', required=True)
flags.DEFINE_enum('to', None, ['model_dir', 'hf'],
                  'Output layout (default: hf for a model_dir input, else model_dir).')
flags.DEFINE_integer('step', None, 'Checkpoint step of a model_dir input (default: newest).')
flags.DEFINE_string('vocab_dir', None, 'Tokenizer files to copy (default: the input\'s).')
flags.DEFINE_integer('vocab_size', None, 'Import: embedding rows (default: the '
                     'tokenizer\'s size when larger, e.g. 50260 for GPT-2 + FreeLM tokens).')
flags.DEFINE_list('head_labels', None, 'Import: labels per teacher head (default: '
                  'the checkpoint\'s, or 2,8 without a teacher head).')
flags.DEFINE_integer('max_len', None, 'Import: cut the context to this length.')
flags.DEFINE_integer('seed', 0, 'Import: seed of newly initialised weights.')
FLAGS = flags.FLAGS


def import_config(checkpoint, tokenizer_size):
  """The imported network's config, after the --vocab_size/--head_labels/--max_len flags."""
  config = checkpoint.config
  vocab_size = FLAGS.vocab_size or max(config.vocab_size, tokenizer_size or 0)
  if FLAGS.head_labels:
    head_labels = tuple(int(n) for n in FLAGS.head_labels)
  elif checkpoint.has_teacher_head:
    head_labels = tuple(config.head_labels)
  else:
    head_labels = network.ModelConfig.head_labels
  return dataclasses.replace(config, vocab_size=vocab_size, head_labels=head_labels,
                             max_len=FLAGS.max_len or config.max_len)


def write_model_dir(path: str, checkpoint, config, seed: int, tokenizer_dir) -> None:
  """Writes `checkpoints/0` (step-0 train state) and config.gin to `path`."""
  tokens = jnp.zeros((1, min(8, config.max_len)), jnp.int32)
  fresh = nn.meta.unbox(network.FreeLM(config).init(
      jax.random.key(seed), tokens, method=network.FreeLM.init_all)['params'])
  params = jax.tree.map(jnp.asarray, weights.fit_checkpoint(checkpoint, fresh, config))
  optimizer, _ = trainer_lib.create_optimizer(learning_rate=1e-4, total_steps=1)
  state = trainer_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                                 opt_state=optimizer.init(params))
  os.makedirs(path)
  manager = checkpoints.create_manager(path, 1)
  checkpoints.save(manager, 0, state, {}, force=True)
  manager.wait_until_finished()
  manager.close()
  with open(os.path.join(path, 'config.gin'), 'w') as f:
    f.write(operative_config.model_config_to_gin(
        config, f'Imported by freelm_jax.convert from {checkpoint.directory}.'))
  hf_format.copy_tokenizer_files(tokenizer_dir, path)


def convert() -> str:
  """Runs the conversion the flags ask for; returns what was written."""
  if os.path.exists(FLAGS.output):
    raise ValueError(f'--output={FLAGS.output} already exists.')
  checkpoint = weights.load(FLAGS.input, FLAGS.step)
  to = FLAGS.to or ('hf' if weights.is_model_dir(FLAGS.input) else 'model_dir')
  tokenizer_dir = resources.resolve(FLAGS.vocab_dir) if FLAGS.vocab_dir else FLAGS.input
  staging = FLAGS.output.rstrip('/') + '.converting'
  shutil.rmtree(staging, ignore_errors=True)
  try:
    if to == 'hf':
      config = checkpoint.config
      hf_format.save_hf(staging, checkpoint.params, config, tokenizer_dir)
    else:
      tokenizer = tokenizer_files.load_tokenizer(tokenizer_dir)
      config = import_config(checkpoint, tokenizer and tokenizer.get_vocab_size())
      write_model_dir(staging, checkpoint, config, FLAGS.seed, tokenizer_dir)
    os.rename(staging, FLAGS.output)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return (f'Wrote {FLAGS.output} ({to}: {config.num_layers} layers, d_model '
          f'{config.d_model}, vocab {config.vocab_size}, heads {tuple(config.head_labels)}).')


def main(argv):
  del argv
  cli.quiet_library_logs()
  with errors.exit_on(ValueError, OSError):  # CheckpointError is a ValueError
    print(convert())


def run():
  """The `freelm-convert` command."""
  app.run(main)


if __name__ == '__main__':
  run()
