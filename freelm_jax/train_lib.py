"""The module that gin configs written by earlier versions import
(`from freelm_jax import train_lib` in a model_dir's config.gin): it registers
the same gin names, now defined in `freelm_jax.config.settings` and
`freelm_jax.training.runner`."""

from freelm_jax.training import runner  # pylint: disable=unused-import
