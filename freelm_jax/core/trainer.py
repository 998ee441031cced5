"""The train state, the optimizer and the jitted steps.

One jitted step per objective, each compiled once: the loop picks which one to
call from the step number (a `schedules.Schedule`). State and batches are
sharded over the mesh by the logical axis rules in `partitioning.py`.
"""

import contextlib
from typing import Any, Callable, Mapping, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from freelm_jax.common import errors
from freelm_jax.core import network
from freelm_jax.core import objectives as objectives_lib
from freelm_jax.core import partitioning
from freelm_jax.core import schedules


def create_optimizer(
    learning_rate: float, total_steps: int, warmup_steps: int = 100,
    end_learning_rate_ratio: float = 0.1, weight_decay: float = 0.01,
    b1: float = 0.9, b2: float = 0.95, grad_clip_norm: float = 1.0,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with linear warm-up, cosine decay and global-norm clipping.

  Weight decay applies to matrices only (not biases, LayerNorm or scalars).
  """
  _check_optimizer(learning_rate, warmup_steps, end_learning_rate_ratio, weight_decay,
                   b1, b2, grad_clip_norm)
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=learning_rate,
      warmup_steps=min(warmup_steps, max(total_steps - 1, 1)),
      decay_steps=max(total_steps, warmup_steps + 1),
      end_value=learning_rate * end_learning_rate_ratio)
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  optimizer = optax.chain(
      optax.clip_by_global_norm(grad_clip_norm),
      optax.adamw(schedule, b1=b1, b2=b2, weight_decay=weight_decay,
                  mask=decay_mask))
  return optimizer, schedule


def _check_optimizer(learning_rate, warmup_steps, end_learning_rate_ratio, weight_decay,
                     b1, b2, grad_clip_norm) -> None:
  """Raises SettingError for the first of `create_optimizer`'s settings out of range."""
  errors.check_number(create_optimizer, 'learning_rate', learning_rate, 0, low_open=True)
  errors.check_count(create_optimizer, 'warmup_steps', warmup_steps, 0)
  errors.check_number(create_optimizer, 'end_learning_rate_ratio', end_learning_rate_ratio,
                      0, 1)
  errors.check_number(create_optimizer, 'weight_decay', weight_decay, 0)
  for name, value in (('b1', b1), ('b2', b2)):
    errors.check(isinstance(value, (int, float)) and 0 <= value < 1, create_optimizer,
                 name, value, 'must be at least 0 and below 1.')
  # Clipping to norm 0 would zero every update.
  errors.check_number(create_optimizer, 'grad_clip_norm', grad_clip_norm, 0, low_open=True)


# Their home is `errors`; these names stay for the code that imports them from here.
NonFiniteError = errors.NonFiniteError
OutOfMemoryError = errors.OutOfMemoryError


def _out_of_memory(error: Exception) -> bool:
  """Whether XLA ran out of accelerator memory. Its runtime errors are all one
  type; the status code (RESOURCE_EXHAUSTED) is only in the message."""
  return 'RESOURCE_EXHAUSTED' in str(error) or 'out of memory' in str(error).lower()


@flax.struct.dataclass
class TrainState:
  """`ema_params`: an exponential moving average of `params` (None without)."""
  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any = None

  @property
  def eval_params(self) -> Any:
    """The weights evaluation and inference read: the average where kept."""
    return self.params if self.ema_params is None else self.ema_params


def ema_update(ema_params: Any, params: Any, step: jax.Array, decay: float) -> Any:
  """One step of the weights' moving average, as TensorFlow's
  ExponentialMovingAverage with `num_updates`: the decay is at most
  (1 + step) / (10 + step), so the random initialisation fades out early."""
  rate = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda e, p: rate * e + (1.0 - rate) * p, ema_params, params)


class Trainer:
  """Builds the sharded train state and the jitted per-objective steps."""

  def __init__(self, module: network.FreeLM,
               optimizer: optax.GradientTransformation,
               learning_rate_fn: optax.Schedule,
               objectives: Mapping[str, objectives_lib.Objective],
               mesh: jax.sharding.Mesh, skip_nonfinite: bool = False,
               ema_decay: float = 0.0,
               learning_rate_scales: Optional[Mapping[str, float]] = None):
    """`ema_decay` > 0 keeps `TrainState.ema_params`; `learning_rate_scales`
    (objective -> factor) scales that objective's updates, i.e. its learning
    rate (1 for the others)."""
    self.module = module
    self.skip_nonfinite = skip_nonfinite
    self.ema_decay = ema_decay
    self.learning_rate_scales = dict(learning_rate_scales or {})
    self.optimizer = optimizer
    self.learning_rate_fn = learning_rate_fn
    self.objectives = dict(objectives)
    self.mesh = mesh
    self.state_sharding = partitioning.logical_sharding(
        jax.eval_shape(self._init_boxed, jax.random.key(0)), mesh)
    self.batch_sharding = partitioning.batch_sharding(mesh)
    # (shard_index, num_shards): the slice of each global batch this process feeds.
    self.data_shard = partitioning.process_data_shard(mesh)
    self._steps = {
        name: jax.jit(
            self._make_step(objective),
            in_shardings=(self.state_sharding, self.batch_sharding),
            out_shardings=(self.state_sharding, partitioning.replicated(mesh)),
            donate_argnums=0)
        for name, objective in self.objectives.items()}
    self._truth_probability = jax.jit(
        lambda params, tokens, lengths: objectives_lib.truth_probability(
            self.module, params, tokens, lengths),
        in_shardings=(self.state_sharding.params, self.batch_sharding,
                      self.batch_sharding),
        out_shardings=partitioning.replicated(mesh))
    self._eval_losses = {}  # objective -> jitted (params, batch) -> loss, num_tokens

  def _init_boxed(self, rng: jax.Array) -> TrainState:
    """A fresh state whose parameters still carry their logical axis names."""
    tokens = jnp.zeros((1, min(8, self.module.config.max_len)), jnp.int32)
    params = self.module.init(rng, tokens, method=network.FreeLM.init_all)['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.optimizer.init(params),
                      ema_params=params if self.ema_decay else None)

  def init_state(self, seed: int) -> TrainState:
    """A fresh state created directly in its sharded layout."""
    init = jax.jit(lambda rng: nn.meta.unbox(self._init_boxed(rng)),
                   out_shardings=self.state_sharding)
    with self.activate():
      return init(jax.random.key(seed))

  def abstract_state(self) -> TrainState:
    """Shapes, dtypes and shardings of the state (for checkpoint restore)."""
    shapes = nn.meta.unbox(jax.eval_shape(self._init_boxed, jax.random.key(0)))
    return jax.tree.map(
        lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
        shapes, self.state_sharding)

  def _make_step(self, objective: objectives_lib.Objective) -> Callable:
    """The (state, batch) -> (state, metrics) update for one objective."""
    scale = self.learning_rate_scales.get(objective.name, 1.0)

    def step(state: TrainState, batch):
      loss_fn = lambda params: objective.loss(self.module, params, batch)
      (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
      updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
      if scale != 1.0:
        updates = jax.tree.map(lambda u: scale * u, updates)
      params = optax.apply_updates(state.params, updates)
      grad_norm = optax.tree.norm(grads)
      # Non-finite: the loss, the gradient, or parameters that overflowed.
      nonfinite = ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm)
                    & jnp.isfinite(optax.tree.norm(params)))
      if self.skip_nonfinite:  # keep the old parameters and optimizer state.
        keep_old = lambda new, old: jax.tree.map(
            lambda n, o: jnp.where(nonfinite, o, n), new, old)
        params = keep_old(params, state.params)
        opt_state = keep_old(opt_state, state.opt_state)
      metrics = dict(metrics, grad_norm=grad_norm,
                     num_tokens=objective.num_tokens(batch),
                     learning_rate=scale * self.learning_rate_fn(state.step),
                     nonfinite=nonfinite.astype(jnp.float32))
      ema_params = state.ema_params
      if ema_params is not None:
        ema_params = ema_update(ema_params, params, state.step, self.ema_decay)
      return TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                        ema_params=ema_params), metrics

    return step

  def check_schedule(self, schedule: schedules.Schedule) -> None:
    """Every objective `schedule` uses must be one of this trainer's."""
    missing = [o for o in schedule.objectives if o not in self.objectives]
    if missing:
      raise errors.ConfigError(
          f'Schedule {schedule.name or type(schedule).__name__} uses objective '
          f'{missing[0]!r}, which the trainer lacks (it has {", ".join(self.objectives)}); '
          f'add it to train_lib.train.extra_objectives.')

  def stream_counts(self, schedule: schedules.Schedule, num_steps: int) -> dict[str, int]:
    """Batches each stream `schedule` reads feeds its first `num_steps` steps."""
    counts = {}
    for objective, count in schedule.counts(num_steps).items():
      stream = self.objectives[objective].stream
      counts[stream] = counts.get(stream, 0) + count
    return counts

  @contextlib.contextmanager
  def activate(self):
    """Context in which the mesh and the logical axis rules are in force."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(partitioning.LOGICAL_AXIS_RULES):
      yield

  def train_step(self, state: TrainState, batch, objective: str):
    """Runs one jitted update of `objective` (a key of `objectives`).

    Metrics include `nonfinite` (1.0 if the loss, the gradient norm or the
    updated parameters are not finite; with `skip_nonfinite` such an update is
    not applied). Out of memory raises OutOfMemoryError naming the config.
    """
    with self.activate():
      try:
        return self._steps[objective](state, batch)
      except jax.errors.JaxRuntimeError as e:
        if not _out_of_memory(e):
          raise
        raise OutOfMemoryError(self._describe_oom(objective, batch)) from e

  def _describe_oom(self, objective: str, batch) -> str:
    config = self.module.config
    names = ('num_layers', 'd_model', 'num_heads', 'max_len', 'vocab_size', 'dtype',
             'remat_policy')
    model = ', '.join(f'{k}={getattr(config, k)}' for k in names if hasattr(config, k))
    shapes = ', '.join(f'{k} {tuple(v.shape)}' for k, v in batch.items())
    mesh = ' '.join(f'{k}={v}' for k, v in self.mesh.shape.items())
    return (f'out of memory in the {objective} step of the model ({model}) with '
            f'batch {shapes} on mesh {mesh}; size the run with `python -m '
            f'freelm_jax.plan` (same --gin_file/--gin flags), then lower the batch '
            f'size or raise FSDP_PARALLELISM.')

  def compile_step(self, objective: str, state, batch) -> jax.stages.Compiled:
    """Compiles `objective`'s step ahead of time for abstract (ShapeDtypeStruct) args."""
    with self.activate():
      return self._steps[objective].lower(state, batch).compile()

  def truth_probability(self, params, tokens, lengths) -> jax.Array:
    """P(true) at `[cls]` for a batch of propositions."""
    with self.activate():
      return self._truth_probability(params, tokens, lengths)

  def shard_batch(self, local_batch: Mapping[str, Any]) -> dict[str, jax.Array]:
    """Assembles a global batch from this process's rows (its `data_shard`)."""
    num_shards = self.data_shard[1]
    return {k: jax.make_array_from_process_local_data(
        self.batch_sharding, v, (len(v) * num_shards,) + v.shape[1:])
            for k, v in local_batch.items()}

  def process_rows(self, global_batch: Mapping[str, Any]) -> dict[str, Any]:
    """This process's rows of a batch that every process holds in full."""
    index, num_shards = self.data_shard
    return {k: np.split(np.asarray(v), num_shards)[index] for k, v in global_batch.items()}

  def eval_loss(self, params, global_batch: Mapping[str, Any],
                objective: str = 'lm') -> tuple[float, float]:
    """(mean loss, tokens) of `objective` on a batch every process holds in full."""
    if objective not in self._eval_losses:
      loss_fn = self.objectives[objective]
      self._eval_losses[objective] = jax.jit(
          lambda p, b: (loss_fn.loss(self.module, p, b)[0], loss_fn.num_tokens(b)),
          in_shardings=(self.state_sharding.params, self.batch_sharding),
          out_shardings=partitioning.replicated(self.mesh))
    batch = self.shard_batch(self.process_rows(global_batch))
    with self.activate():
      loss, tokens = self._eval_losses[objective](params, batch)
    return float(loss), float(tokens)

  def score(self, params, tokens, lengths) -> np.ndarray:
    """P(true) of every row of a batch that every process holds in full.

    Each process feeds its own rows; every process gets all the scores.
    """
    batch = self.shard_batch(self.process_rows({'tokens': tokens, 'lengths': lengths}))
    return np.asarray(self.truth_probability(params, batch['tokens'], batch['lengths']))
