"""Checkpoints in: our model_dirs, Hugging Face GPT-2 and FreeLM's layout.

Three directory layouts hold a FreeLM network:

* ours: a model_dir with `config.gin` and orbax `checkpoints/<step>/state`
  (`checkpoints.load_params`, its config.gin read by `operative_config`);
* Hugging Face GPT-2: `config.json` + `model.safetensors` or
  `pytorch_model.bin` (`hf_format`);
* the official FreeLM layout: GPT-2's, plus the multi-task head
  (`hf_format`), read over whole head rows as the official code reads it
  (`ModelConfig.head_reading`). Whether its `[sep]`/`[cls]` are added
  tokens or plain text is read from its tokenizer files and embedding rows
  by `tokenizer_files.checkpoint_tokenizer` (docs/inference.md).

`load` reads any of them into a `Checkpoint`: numpy parameters in the scanned
layout (`param_layout`). `fit_checkpoint` and `init_from` fit one to a model
(`param_fitting`). Neither TensorFlow nor seqio is imported.
"""

import dataclasses
import json
import os
from typing import Optional

from absl import logging
import numpy as np

from freelm_jax.common import errors
from freelm_jax.common import storage
from freelm_jax.core import checkpoints
from freelm_jax.core import network
from freelm_jax.core import param_fitting
from freelm_jax.core import param_layout
from freelm_jax.interop import hf_format
from freelm_jax.interop import operative_config


@dataclasses.dataclass
class Checkpoint:
  """A loaded network: its config, numpy parameters and where it came from."""

  config: network.ModelConfig
  params: param_layout.Params
  has_teacher_head: bool
  directory: str


def is_model_dir(path: str) -> bool:
  """Whether `path` (local or remote, e.g. gs://) is one of our model_dirs."""
  return (storage.resolve(path) / 'checkpoints').is_dir()


def load(path: str, step: Optional[int] = None) -> Checkpoint:
  """Loads our model_dir (newest or `step`; local or remote), an HF GPT-2 or a
  FreeLM directory (local)."""
  if not storage.resolve(path).is_dir():
    raise errors.CheckpointError(f'{path}: no such directory.')
  if is_model_dir(path):
    config = operative_config.model_config_from_gin(
        str(storage.resolve(path) / 'config.gin'))
    params = checkpoints.load_params(path, config.num_layers, step)
    return Checkpoint(config, params, True, path)
  if os.path.isfile(os.path.join(path, 'config.json')):
    if step is not None:
      raise errors.CheckpointError(f'{path}: a Hugging Face directory has no steps.')
    return load_hf(path)
  raise errors.CheckpointError(
      f'{path}: neither a model_dir (checkpoints/) nor a Hugging Face '
      'directory (config.json).')


def load_hf(path: str) -> Checkpoint:
  """Reads an HF GPT-2 or FreeLM-layout directory."""
  with open(os.path.join(path, 'config.json')) as f:
    hf_config = json.load(f)
  tensors = hf_format.read_state_dict(path)
  config = hf_format.config_from_hf(hf_config, path)
  return Checkpoint(config, hf_format.params_from_hf(tensors, config, path),
                    'mtc_head.weight' in tensors, path)


def init_from(path: str, target: param_layout.Params,
              config: network.ModelConfig) -> param_layout.Params:
  """The weights of checkpoint `path` fitted to `target` (see `fit_checkpoint`)."""
  logging.info('Initialising from %s.', path)
  checkpoint = load(path)
  if checkpoint.has_teacher_head and checkpoint.config.head_reading != config.head_reading:
    logging.warning('%s reads its teacher head the %r way; this run trains it the %r way '
                    '(TEACHER_LOSS).', path, checkpoint.config.head_reading,
                    config.head_reading)
  return fit_checkpoint(checkpoint, target, config)


def fit_checkpoint(checkpoint: Checkpoint, target: param_layout.Params,
                   config: network.ModelConfig) -> param_layout.Params:
  """`param_fitting.fit_params` of a loaded checkpoint; without a teacher head
  (plain GPT-2), the head stays `target`'s."""
  source = checkpoint.params
  if not checkpoint.has_teacher_head:
    source = dict(source, head=np.asarray(target['head']))
  return param_fitting.fit_params(source, target, config)
