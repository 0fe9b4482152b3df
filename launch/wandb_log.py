"""Weights & Biases beside TensorBoard (``logging.wandb_project``, the ``[wandb]`` extra).

:class:`RunWriter` is the run's TensorBoard writer (``Logbook.writer``); given a W&B run it
also sends every scalar there, under the same tag and at the same env step (the W&B metric
``env_step``, the x axis of every chart), so no call site of ``add_scalar`` knows about W&B;
:meth:`RunWriter.add_video_file` sends the training videos (``logging.video_interval``).
:func:`start` starts the W&B run of a run directory: the resolved config is its config, its
files go to RUN_DIR/wandb and its id to RUN_DIR/wandb_run_id, so ``--resume RUN_DIR``
continues the same W&B run. Only learner process 0 logs to W&B; the TensorBoard event files
are written either way.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from tensorboardX import SummaryWriter

from rl import config as config_lib
from rl.config import Config, ConfigError, LoggingConfig

INSTALL = 'pip install -e ".[wandb]"'
RUN_ID_FILE = "wandb_run_id"
"""In the run directory: the W&B run id, read back by a resumed run."""
STEP_METRIC = "env_step"
"""The W&B metric every other metric is plotted against (TensorBoard's step)."""


class WandbUnavailable(RuntimeError):
    """The W&B run could not start (not logged in, server unreachable); raised before any
    training step."""


def enabled(logging: LoggingConfig) -> bool:
    """Whether the run logs to W&B: a project is set and logging.wandb_mode is not
    disabled (disabled: no W&B at all, the package need not be installed)."""
    return logging.wandb_project is not None and logging.wandb_mode != "disabled"


def require(logging: LoggingConfig) -> None:
    """Check that W&B can be imported when the run logs to it.

    Raises:
      ConfigError: logging.wandb_project is set (mode online or offline) and the wandb
        package cannot be imported; the message names the ``[wandb]`` extra.
    """
    if not enabled(logging):
        return
    try:
        importlib.import_module("wandb")
    except ImportError as e:
        raise ConfigError("logging.wandb_project", logging.wandb_project,
                          f"needs the wandb package, which cannot be imported ({e}): "
                          f"install the [wandb] extra ({INSTALL}), or leave "
                          "logging.wandb_project unset or set logging.wandb_mode=disabled"
                          ) from e


def start(config: Config, run_dir: Path) -> Any | None:
    """Start the W&B run of ``run_dir`` (continue it when RUN_DIR/wandb_run_id names one).

    Args:
      config: the resolved config; its logging.wandb_* fields pick project, entity and mode,
        and the whole of it (``rl.config.to_dict``) is the W&B config.
      run_dir: the existing run directory; W&B writes under RUN_DIR/wandb.

    Returns:
      the ``wandb.Run``, or None when W&B is off (:func:`enabled`).

    Raises:
      WandbUnavailable: wandb.init failed (e.g. online without ``wandb login``).
    """
    logging = config.logging
    if not enabled(logging):
        return None
    import wandb

    id_file = run_dir / RUN_ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else None
    try:
        run = wandb.init(project=logging.wandb_project, entity=logging.wandb_entity,
                         mode=logging.wandb_mode, dir=str(run_dir), id=run_id,
                         resume="allow", name=run_dir.name, config=config_lib.to_dict(config))
    except wandb.errors.Error as e:
        raise WandbUnavailable(
            f"W&B run could not start (logging.wandb_mode={logging.wandb_mode}): {e}; log in "
            "with `wandb login`, or pass --logging.wandb-mode offline and send the run later "
            f"with `wandb sync {run_dir / 'wandb'}/offline-run-*`") from e
    id_file.write_text(run.id + "\n")
    # Steps are env steps and not always increasing (an evaluation is logged at its
    # multiple of training.eval_interval, after later steps): W&B's own step cannot hold them.
    run.define_metric(STEP_METRIC)
    run.define_metric("*", step_metric=STEP_METRIC)
    return run


class RunWriter(SummaryWriter):
    """The run's TensorBoard writer, mirroring its scalars to a W&B run when given one.

    Scalars of one env step are sent as one W&B row (with ``env_step``) once a scalar of
    another step, or a second value of a tag (two episodes ending on one step), comes; so
    W&B gets them in write order, out-of-order steps included.

    Args:
      logdir: where the event files go.
      wandb_run: a ``wandb.Run`` (:func:`start`), or None for TensorBoard alone.
    """

    def __init__(self, logdir: Path, wandb_run: Any | None = None):
        self.wandb_run = wandb_run
        self._row: dict[str, float] = {}
        self._row_step: int | None = None
        super().__init__(str(logdir))

    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None,
                   walltime: float | None = None, **kwargs) -> None:
        """tensorboardX's ``add_scalar``; with W&B, ``global_step`` (env steps) is required.

        Raises:
          ValueError: W&B is on and ``global_step`` is None.
        """
        super().add_scalar(tag, scalar_value, global_step, walltime, **kwargs)
        if self.wandb_run is None:
            return
        if global_step is None:
            raise ValueError(f"add_scalar({tag!r}) without global_step: W&B plots every "
                             f"scalar against {STEP_METRIC}")
        if global_step != self._row_step or tag in self._row:
            self._send_row()
        self._row_step = int(global_step)
        self._row[tag] = float(scalar_value)

    def add_video_file(self, tag: str, path: Path, global_step: int) -> None:
        """Send a finished MP4 file (``launch.video.Mp4Writer``) to W&B as a video under
        ``tag`` at env step ``global_step``, in a row of its own; nothing without W&B
        (TensorBoard has no video dashboard: the caller writes a GIF, ``launch.video.add_gif``).
        """
        if self.wandb_run is None:
            return
        import wandb

        self._send_row()  # the scalars before it keep their write order
        self.wandb_run.log({STEP_METRIC: int(global_step),
                            tag: wandb.Video(str(path), format="mp4")})

    def alert(self, title: str, text: str, level: str) -> None:
        """A W&B alert (``wandb.Run.alert``; level INFO, WARN or ERROR); nothing without
        W&B (TensorBoard has no alerts: the caller writes the text with ``add_text``)."""
        if self.wandb_run is not None:
            self.wandb_run.alert(title=title, text=text, level=level)

    def _send_row(self) -> None:
        if self._row:
            self.wandb_run.log({STEP_METRIC: self._row_step, **self._row})
            self._row = {}

    def flush(self) -> None:
        """Write the event files and send the scalars held for W&B."""
        super().flush()
        if self.wandb_run is not None:
            self._send_row()

    def close(self) -> None:
        """Close the event files and finish the W&B run (its last row sent); a second call
        does nothing."""
        if self.wandb_run is not None:
            self._send_row()
            self.wandb_run.finish()
            self.wandb_run = None
        super().close()
