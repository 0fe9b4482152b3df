"""TrackMania 2020 through tmrl 0.7.1 and rtgym: a guarded, real-time env worker.

``env.id = "trackmania"`` builds :class:`TrackmaniaEnv`, a gymnasium env that talks to the game
through tmrl's own screen capture and gamepad control, inside rtgym's real-time clock (20 Hz,
the observation captured 0.04 s into each step), with our reward (``envs.trackmania.reward``)
in place of tmrl's. It runs in a spawned worker process (:func:`make_tm_vector_env`) whose
every reset and step is under a watchdog: a silent plugin, a hung reset or a crashed game
surfaces within ``trackmania.watchdog_timeout`` seconds as a :class:`GameConnectionError` naming
what failed, and the caller restarts the worker (a new connection) or stops.

Observations (``interface``):

* ``images``: ``{"frame": uint8 [S, S], "features": float32 [3 + 3h]}``, the newest grayscale
  frame (the replay rebuilds stacks) and speed / 400 km/h, gear / 6, rpm / 12,000, then the
  h = ``action_history`` previous actions as [gas, brake, steer] (oldest first).
* ``lidar``: ``{"frame": float32 [19], "features": [1 + 3h]}``: tmrl's 19 lidar distances (in
  pixels of the game window, / 100) and the normalised speed, then the previous actions.
* ``lidar_progress``: as lidar, with the track progress in [0, 1] after the speed.

Actions: continuous float32 [gas, brake, steer] in [-1, 1] (tmrl's layout: a pedal is pressed
as far as its value is positive, +steer is right), or, for the value learners, an index into
``trackmania.discrete_actions`` (e.g. "brake+gas+left" = [1, 1, -1]).

tmrl is imported only inside the worker (its import reads ``~/TmrlData`` and may try to
download it). ``backend = "standin"`` replaces the game, gamepad and screen with
``envs.trackmania.standin`` (and a private TmrlData folder), so tmrl's and rtgym's real code
runs headless. Host-only numpy: no jax here.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import multiprocessing
import os
import queue
import shutil
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from envs.make import EnvSpec, env_worker
from envs.trackmania.plugin import DOCS, GameConnectionError, OpenPlanetClient

__all__ = ["CAR_FEATURES", "ENV_ID", "TrackmaniaEnv", "adapt_observation", "controls_table",
           "driver_action", "is_trackmania", "make_tm_vector_env", "tm_spec", "write_tmrl_config"]

ENV_ID = "trackmania"
"""The ``env.id`` that selects this env."""
SPEED_SCALE, GEAR_SCALE, RPM_SCALE, LIDAR_SCALE = 400.0, 6.0, 12_000.0, 100.0
"""Divisors that bring speed (km/h), gear, rpm and lidar distances (pixels) near [0, 1]."""
LIDAR_BEAMS = 19
CAR_FEATURES = {"images": 3, "lidar": 1, "lidar_progress": 2}
"""Car values per interface before the previous actions: speed, gear, rpm (images); speed
(lidar); speed, progress (lidar_progress)."""
DEFAULT_EPISODE_STEPS = 1000
"""tmrl's RW_MAX_SAMPLES_PER_EPISODE: episodes are truncated after 50 s at 20 Hz."""
_INSTALL_HINT = ("install the [trackmania] extra: on Windows pip install -e '.[trackmania]'; "
                 f"on Linux follow {DOCS} (torch CPU first, then tmrl with --no-deps)")


def is_trackmania(env_id: str) -> bool:
    """True for the id that selects this env."""
    return env_id == ENV_ID


def controls_table(actions: tuple[str, ...]) -> np.ndarray:
    """float32 [A, 3] ``[gas, brake, steer]`` controls of named discrete actions such as
    ``"brake+gas+left"`` (left = steer -1, right = +1, "none" = all 0).

    Raises:
      ValueError: an unknown word, naming it.
    """
    table = np.zeros((len(actions), 3), np.float32)
    for i, action in enumerate(actions):
        for word in action.split("+"):
            column, value = {"gas": (0, 1.0), "brake": (1, 1.0), "left": (2, -1.0),
                             "right": (2, 1.0), "none": (0, 0.0)}.get(word, (None, None))
            if column is None:
                raise ValueError(f"unknown word {word!r} in discrete action {action!r}; "
                                 "allowed: gas, brake, left, right, none")
            table[i, column] = value
    return table


def driver_action(controls: np.ndarray, inputs: np.ndarray) -> int:
    """Index of the discrete action closest to a driver's ``inputs`` [gas, brake, steer]
    (the plugin's gas and brake in [0, 1], steer in [-1, 1]): pedals and steer are first
    rounded to pressed / released and left / straight / right (|steer| > 1/3), then the
    nearest row of ``controls`` [A, 3] in Euclidean distance wins (first on ties)."""
    gas, brake, steer = (float(x) for x in inputs)
    rounded = np.array([gas > 0.5, brake > 0.5, 0.0], np.float32)
    rounded[2] = 0.0 if abs(steer) <= 1 / 3 else np.sign(steer)
    return int(np.argmin(np.linalg.norm(controls - rounded, axis=1)))


def _feature_size(tm) -> int:
    return CAR_FEATURES[tm.interface] + 3 * tm.action_history


def tm_spec(tm, *, image_size: int, max_episode_steps: int | None, action_space: str) -> EnvSpec:
    """The :class:`EnvSpec` of the TrackMania env for a ``trackmania`` config section, without
    touching the game or importing tmrl. ``action_space`` "auto" means continuous (tmrl's
    native space); episodes default to 1000 steps (tmrl's RW_MAX_SAMPLES_PER_EPISODE)."""
    continuous = action_space != "discrete"
    images = tm.interface == "images"
    return EnvSpec(
        env_id=ENV_ID,
        frame_shape=(image_size, image_size) if images else (LIDAR_BEAMS,),
        frame_dtype=np.dtype(np.uint8 if images else np.float32),
        num_actions=3 if continuous else len(tm.discrete_actions),
        continuous=continuous,
        action_shape=(3,) if continuous else (),
        action_dtype=np.dtype(np.float32 if continuous else np.int32),
        is_image=images,
        max_episode_steps=max_episode_steps or DEFAULT_EPISODE_STEPS,
        feature_size=_feature_size(tm),
    )


def adapt_observation(tm, obs: tuple) -> dict[str, np.ndarray]:
    """Our observation from the tuple rtgym returns for our interface: ``(frame, car,
    *previous_controls)`` with frame uint8 [S, S] (images) or lidar float [19], car float32
    [3] (speed km/h, gear, rpm) or [1] / [2] (speed, progress), and h previous controls
    [3] each (rtgym's action buffer, oldest first). See the module docstring for the scales."""
    frame, car, *previous = obs
    car = np.asarray(car, np.float32)
    if tm.interface == "images":
        scaled = car / np.array([SPEED_SCALE, GEAR_SCALE, RPM_SCALE], np.float32)
        frame = np.asarray(frame, np.uint8)
    else:
        scaled = car.copy()
        scaled[0] /= SPEED_SCALE
        frame = np.asarray(frame, np.float32) / LIDAR_SCALE
    previous = [np.clip(np.asarray(p, np.float32), -1.0, 1.0) for p in previous]
    features = np.concatenate([scaled, *previous]) if previous else scaled
    return {"frame": frame, "features": features.astype(np.float32)}


def write_tmrl_config(home: Path, *, sleep_time_at_reset: float = 1.5) -> Path:
    """Write tmrl's documented default ``TmrlData/config/config.json`` under ``home`` (for the
    stand-in game: tmrl reads it at import and would otherwise try to download it). Returns
    the file. Never overwrites an existing file."""
    path = Path(home) / "TmrlData" / "config" / "config.json"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    for sub in ("checkpoints", "dataset", "reward", "weights"):
        (Path(home) / "TmrlData" / sub).mkdir(exist_ok=True)
    config = {
        "RUN_NAME": "tmrl_jax", "RESET_TRAINING": False, "BUFFERS_MAXLEN": 500000,
        "RW_MAX_SAMPLES_PER_EPISODE": 1000, "CUDA_TRAINING": False, "CUDA_INFERENCE": False,
        "VIRTUAL_GAMEPAD": True, "LOCALHOST_WORKER": True, "LOCALHOST_TRAINER": True,
        "PUBLIC_IP_SERVER": "0.0.0.0", "PASSWORD": "unused", "TLS": False,
        "TLS_HOSTNAME": "default", "TLS_CREDENTIALS_DIRECTORY": "", "NB_WORKERS": -1,
        "WANDB_PROJECT": "tmrl", "WANDB_ENTITY": "tmrl", "WANDB_KEY": "unused", "PORT": 55555,
        "LOCAL_PORT_SERVER": 55556, "LOCAL_PORT_TRAINER": 55557, "LOCAL_PORT_WORKER": 55558,
        "BUFFER_SIZE": 536870912, "HEADER_SIZE": 12, "MAX_EPOCHS": 10000,
        "ROUNDS_PER_EPOCH": 100, "TRAINING_STEPS_PER_ROUND": 200,
        "MAX_TRAINING_STEPS_PER_ENVIRONMENT_STEP": 4.0, "ENVIRONMENT_STEPS_BEFORE_TRAINING": 1000,
        "UPDATE_MODEL_INTERVAL": 200, "UPDATE_BUFFER_INTERVAL": 200, "SAVE_MODEL_EVERY": 0,
        "MEMORY_SIZE": 1000000, "BATCH_SIZE": 256,
        "ALG": {"ALGORITHM": "SAC", "LEARN_ENTROPY_COEF": False, "LR_ACTOR": 0.00001,
                "LR_CRITIC": 0.00005, "LR_ENTROPY": 0.0003, "GAMMA": 0.995, "POLYAK": 0.995,
                "TARGET_ENTROPY": -0.5, "ALPHA": 0.01, "REDQ_N": 10, "REDQ_M": 2,
                "REDQ_Q_UPDATES_PER_POLICY_UPDATE": 20, "OPTIMIZER_ACTOR": "adam",
                "OPTIMIZER_CRITIC": "adam", "BETAS_ACTOR": [0.997, 0.997],
                "BETAS_CRITIC": [0.997, 0.997], "L2_ACTOR": 0.0, "L2_CRITIC": 0.0},
        "ENV": {"RTGYM_INTERFACE": "TM20FULL", "WINDOW_WIDTH": 256, "WINDOW_HEIGHT": 128,
                "IMG_WIDTH": 64, "IMG_HEIGHT": 64, "IMG_GRAYSCALE": True,
                "SLEEP_TIME_AT_RESET": sleep_time_at_reset, "IMG_HIST_LEN": 4,
                "RTGYM_CONFIG": {"time_step_duration": 0.05, "start_obs_capture": 0.04,
                                 "time_step_timeout_factor": 1.0, "act_buf_len": 2,
                                 "benchmark": False, "wait_on_done": True, "ep_max_length": 1000,
                                 "interface_kwargs": {"save_replays": False}},
                "REWARD_CONFIG": {"END_OF_TRACK": 100.0, "CONSTANT_PENALTY": 0.0,
                                  "CHECK_FORWARD": 500, "CHECK_BACKWARD": 10,
                                  "FAILURE_COUNTDOWN": 10, "MIN_STEPS": 70, "MAX_STRAY": 100.0}},
        "__VERSION__": "0.6.0",
    }
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


class _InterfaceSteps:
    """The steps of our rtgym interface (:func:`_interface_class`), a mixin before tmrl's
    TM2020Interface: our capture, observation and reward, errors kept for the watchdog, no
    control when passive. Needs the attributes that the interface's ``__init__`` and
    ``initialize`` set (tm, passive, reward, lidar, client, window_interface, resize_to)."""

    def send_control(self, control):
        if not self.passive:
            super().send_control(control)

    def _capture(self):
        import cv2

        shot = self.window_interface.screenshot()[:, :, :3]
        if self.lidar is not None:
            frame = self.lidar.lidar_20(img=shot, show=False)
        else:
            frame = cv2.cvtColor(cv2.resize(shot, self.resize_to, interpolation=cv2.INTER_AREA),
                                 cv2.COLOR_BGR2GRAY)
        # Shorter than the watchdog, so the watchdog reports this precise error.
        data = self.client.retrieve_data(timeout=0.8 * self.tm.watchdog_timeout)
        self.last_data = data
        return data, frame

    def _observation(self, data, frame) -> list:
        if self.tm.interface == "images":
            car = [data[0], data[9], data[10]]
        elif self.tm.interface == "lidar":
            car = [data[0]]
        else:
            car = [data[0], self.reward.progress]
        return [frame, np.array(car, np.float32)]

    def _recorded(self, fn):
        # rtgym calls these on its own thread and waits forever if they raise: keep the
        # error for the env's watchdog to report.
        try:
            return fn()
        except BaseException as e:
            self.error = e
            raise

    def reset(self, seed=None, options=None):
        return self._recorded(self._reset)

    def get_obs_rew_terminated_info(self):
        return self._recorded(self._step)

    def wait(self):
        return self._recorded(super().wait)

    def _reset(self):
        self.reset_common()
        data, frame = self._capture()
        self.reward.reset()
        return self._observation(data, frame), {}

    def _step(self):
        data, frame = self._capture()
        result = self.reward.step(np.array(data[2:5], np.float64), float(data[0]),
                                  bool(data[8]))
        return self._observation(data, frame), np.float32(result.reward), result.terminated, {}

    def get_observation_space(self):
        s = self.resize_to[0]
        frame = (gym.spaces.Box(0, 255, (s, s), np.uint8) if self.tm.interface == "images"
                 else gym.spaces.Box(0.0, np.inf, (LIDAR_BEAMS,), np.float32))
        car = gym.spaces.Box(0.0, np.inf, (CAR_FEATURES[self.tm.interface],), np.float32)
        return gym.spaces.Tuple((frame, car))


def _interface_class():
    """Our rtgym interface, a subclass of tmrl's TM2020Interface (imported here, in the
    worker): tmrl's screen capture, gamepad / keyboard control and reset sequence, with our
    reward, our data client and the stand-ins when asked."""
    from tmrl.custom.tm.tm_gym_interfaces import TM2020Interface
    from tmrl.custom.tm.utils.tools import Lidar
    import tmrl.config.config_constants as tmrl_cfg

    from envs.trackmania.reward import TrackReward

    class Interface(_InterfaceSteps, TM2020Interface):
        def __init__(self, tm, image_size: int, trajectory: np.ndarray, passive: bool,
                     registry: list):
            super().__init__(img_hist_len=1, gamepad=tm.gamepad, save_replays=False,
                             grayscale=True, resize_to=(image_size, image_size))
            registry.append(self)  # rtgym keeps its interface private
            self.tm, self.passive = tm, passive
            self.reward = TrackReward(trajectory, tm)
            self.lidar = None
            self.last_data: tuple | None = None
            self.error: BaseException | None = None

        def initialize(self):
            tm = self.tm
            window = (tmrl_cfg.WINDOW_WIDTH, tmrl_cfg.WINDOW_HEIGHT)
            if self.resize_to[0] > min(window):
                raise GameConnectionError(
                    f"env.image_size={self.resize_to[0]} is larger than the game window "
                    f"{window[0]}x{window[1]} set in ~/TmrlData/config/config.json "
                    "(ENV.WINDOW_WIDTH / WINDOW_HEIGHT): lower env.image_size or enlarge the window")
            if tm.backend == "standin":
                from envs.trackmania.standin import StandinGamepad, StandinWindow
                self.j = StandinGamepad(tm.standin_address)
                self.window_interface = StandinWindow(tm.standin_address, tmrl_cfg.WINDOW_WIDTH,
                                                      tmrl_cfg.WINDOW_HEIGHT)
            else:
                if tm.gamepad:
                    import vgamepad
                    self.j = vgamepad.VX360Gamepad()
                from tmrl.custom.tm.utils.window import WindowInterface
                self.window_interface = WindowInterface("Trackmania")
            self.window_interface.move_and_resize()
            self.client = OpenPlanetClient(tm.host, tm.port)
            if tm.interface != "images":
                self.lidar = Lidar(self.window_interface.screenshot())
            self.small_window = tm.interface == "images"
            self.initialized = True

    return Interface


class _LateSteps:
    """Counts rtgym's "Time-step timed out" warnings (from any thread of this process) instead
    of printing them."""

    def __init__(self):
        self.count = 0
        self._show = warnings.showwarning
        warnings.filterwarnings("always", message="Time-step timed out")
        warnings.showwarning = self._showwarning

    def _showwarning(self, message, category, filename, lineno, file=None, line=None):
        if str(message).startswith("Time-step timed out"):
            self.count += 1
        else:
            self._show(message, category, filename, lineno, file, line)


class TrackmaniaEnv(gym.Env):
    """One TrackMania 2020 game (or its stand-in) as a gymnasium env; see the module
    docstring for observations, actions and reward.

    Cheap to construct: the spaces come from the config, and the game connection (tmrl's
    import, the gamepad, the window, the plugin socket, rtgym's clock) is made at the first
    reset. Every rtgym call runs on a driver thread and is abandoned after
    ``watchdog_timeout`` s, so a hung game raises :class:`GameConnectionError` here instead of
    blocking forever (rtgym waits without a timeout when the interface fails in its thread).

    Step info: ``late_steps`` (int, rtgym time-step timeouts since the previous step),
    ``progress`` (fraction of the trajectory reached), ``driver_action`` (float32 [3], the
    [gas, brake, steer] the game reports, i.e. a human driver's inputs in passive mode),
    ``rtgym_*_s`` (rtgym's running-average timings in seconds: inference, get_obs,
    send_control, step, join, time_step).

    Args:
      tm: the ``trackmania`` config section (duck-typed).
      image_size: side of the frames (images interface).
      max_episode_steps: episode truncation in steps (None: 1000).
      action_space: "continuous" / "auto" or "discrete".
      passive: never send controls (a human drives; for recording demonstrations).
    """

    metadata = {"render_modes": []}

    def __init__(self, tm, *, image_size: int = 64, max_episode_steps: int | None = None,
                 action_space: str = "auto", passive: bool = False):
        self.tm = tm
        self.spec_ = tm_spec(tm, image_size=image_size, max_episode_steps=max_episode_steps,
                             action_space=action_space)
        spec = self.spec_
        frame_space = (gym.spaces.Box(0, 255, spec.frame_shape, np.uint8) if spec.is_image
                       else gym.spaces.Box(-np.inf, np.inf, spec.frame_shape, np.float32))
        self.observation_space = gym.spaces.Dict({
            "frame": frame_space,
            "features": gym.spaces.Box(-np.inf, np.inf, (spec.feature_size,), np.float32)})
        self.action_space = (gym.spaces.Box(-1.0, 1.0, (3,), np.float32) if spec.continuous
                             else gym.spaces.Discrete(spec.num_actions))
        self._controls = controls_table(tm.discrete_actions)
        self.image_size, self.passive = image_size, passive
        self._rt = None
        self._interfaces: list = []
        self._standin = None
        self._home: Path | None = None  # the stand-in's private TmrlData home
        self._late: _LateSteps | None = None
        self._late_seen = 0
        self._calls: queue.Queue | None = None

    # --- connection ------------------------------------------------------------------
    def _connect(self) -> None:
        tm = self.tm
        if tm.backend == "standin":
            self._start_standin()
        elif importlib.util.find_spec("tmrl") is None:
            raise GameConnectionError(f"tmrl is not installed; {_INSTALL_HINT}")
        elif not (Path.home() / "TmrlData" / "config" / "config.json").is_file():
            raise GameConnectionError(
                f"tmrl's data folder {Path.home() / 'TmrlData'} is missing or has no "
                "config/config.json: run `python -m tmrl --install` once (it downloads the "
                f"plugin and a default config), see {DOCS}")
        tm = self.tm  # the stand-in fills in its address
        trajectory = self._trajectory()
        self._late = _LateSteps()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import rtgym

            interface = _interface_class()
        h = tm.action_history
        config = dict(rtgym.DEFAULT_CONFIG_DICT)
        config.update(
            interface=interface,
            interface_args=(tm, self.image_size, trajectory, self.passive, self._interfaces),
            time_step_duration=tm.time_step, start_obs_capture=tm.start_obs_capture,
            time_step_timeout_factor=tm.time_step_timeout_factor,
            ep_max_length=self.spec_.max_episode_steps, act_in_obs=h > 0,
            act_buf_len=max(h, 1), reset_act_buf=True, benchmark=True, wait_on_done=True,
        )
        # tmrl's choice: on Linux the interface lives on one thread (X11 capture).
        env_id = "real-time-gym-v1" if os.name == "nt" else "real-time-gym-ts-v1"
        self._calls = queue.Queue()
        threading.Thread(target=self._drive, daemon=True, name="rtgym-driver").start()
        self._rt = self._call(lambda: gym.make(env_id, config=config,
                                               disable_env_checker=True).unwrapped,
                              "connecting to the game")

    def _start_standin(self) -> None:
        from envs.trackmania.standin import StandinGame, standin_track

        tm = self.tm
        home = self._home = Path(tempfile.mkdtemp(prefix="tmrl_standin_home_"))
        write_tmrl_config(home, sleep_time_at_reset=0.1)
        os.environ["HOME"] = str(home)  # this worker process only: tmrl reads ~/TmrlData
        if tm.standin_address is None:
            self._standin = StandinGame(standin_track()).start()
            address = self._standin.address
        else:
            address = tm.standin_address
        host, data_port, _ = address.split(":")
        self.tm = dataclasses.replace(tm, host=host, port=int(data_port), standin_address=address)

    def _trajectory(self) -> np.ndarray:
        from envs.trackmania.reward import load_trajectory

        tm = self.tm
        if tm.trajectory is not None:
            return load_trajectory(tm.trajectory)
        if tm.backend == "standin":
            from envs.trackmania.standin import standin_track

            return standin_track()
        path = Path.home() / "TmrlData" / "reward" / "reward.pkl"
        if not path.is_file():
            raise GameConnectionError(
                f"no reward trajectory: {path} does not exist. Record one for your map with "
                "`python launch/record_trajectory.py` (drive the track once) or pass "
                f"--trackmania.trajectory FILE (see {DOCS})")
        return load_trajectory(path)

    def _drive(self) -> None:
        while True:
            fn, box = self._calls.get()
            try:
                box["result"] = fn()
            except BaseException as e:  # handed to the waiting caller
                box["error"] = e
            box["done"].set()

    def _call(self, fn, what: str):
        box = {"done": threading.Event()}
        self._calls.put((fn, box))
        if not box["done"].wait(self.tm.watchdog_timeout):
            failed = next((i.error for i in self._interfaces if i.error is not None), None)
            if isinstance(failed, GameConnectionError):
                raise GameConnectionError(str(failed)) from None
            if failed is not None:
                raise GameConnectionError(f"{what} failed in rtgym's thread: "
                                          f"{type(failed).__name__}: {failed}") from failed
            raise GameConnectionError(
                f"the game did not answer within {self.tm.watchdog_timeout:.0f} s while "
                f"{what} (trackmania.watchdog_timeout): the plugin went silent or the game hung "
                f"(see {DOCS}, 'watchdog')")
        if "error" in box:
            error = box["error"]
            if isinstance(error, GameConnectionError):
                raise GameConnectionError(str(error)) from None
            raise GameConnectionError(f"{what} failed: {type(error).__name__}: {error}") from error
        return box["result"]

    # --- gymnasium API -----------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Respawn the car (tmrl's reset sequence) and return the first observation."""
        super().reset(seed=seed)
        if self._rt is None:
            self._connect()
        obs, _ = self._call(lambda: self._rt.reset(), "resetting the race")
        return adapt_observation(self.tm, obs), self._info()

    def step(self, action):
        """Apply ``action`` for one real-time step and return the observation 0.04 s into
        the next (rtgym's clock); see the class docstring for the info keys."""
        if self.spec_.continuous:
            control = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        else:
            control = self._controls[int(action)]
        obs, reward, terminated, truncated, _ = self._call(lambda: self._rt.step(control),
                                                           "stepping")
        return (adapt_observation(self.tm, obs), float(reward), bool(terminated),
                bool(truncated), self._info())

    def _info(self) -> dict[str, Any]:
        late = self._late.count if self._late else 0
        info: dict[str, Any] = {"late_steps": late - self._late_seen}
        self._late_seen = late
        interface = self._interfaces[0] if self._interfaces else None
        data = getattr(interface, "last_data", None)
        if data is not None:
            info["driver_action"] = np.array([data[6], data[7], data[5]], np.float32)
            info["progress"] = float(interface.reward.progress)
        if self._rt is not None:
            for name, (mean, _dev) in self._rt.benchmarks().items():
                if mean is not None:
                    info[f"rtgym_{name.removesuffix('_duration')}_s"] = float(mean)
        return info

    def close(self):
        """Stop rtgym's clock and the stand-in game (if this env started one)."""
        if self._rt is not None:
            try:
                self._call(lambda: self._rt.wait(), "pausing the game")
            except GameConnectionError:
                pass
            self._rt = None
        if self._standin is not None:
            self._standin.stop()
            self._standin = None
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)
            self._home = None


class GuardedVectorEnv:
    """A one-env ``AsyncVectorEnv`` (spawned worker) whose resets and steps wait at most
    ``watchdog_timeout`` + 5 s (the worker's own watchdog answers first with the cause; this
    is the backstop for a frozen worker). On any failure the worker is killed and
    :class:`GameConnectionError` is raised; make a new one to reconnect.

    Exposes what :class:`envs.collector.Collector` uses: num_envs, metadata, reset,
    step_async, step_wait, close.
    """

    def __init__(self, tm, **env_kwargs):
        self.tm = tm
        self._envs = gym.vector.AsyncVectorEnv(
            [functools.partial(TrackmaniaEnv, tm, **env_kwargs)], shared_memory=False,
            context="spawn", autoreset_mode=AutoresetMode.NEXT_STEP, worker=env_worker)
        self.num_envs = 1
        self.metadata = self._envs.metadata
        self.single_observation_space = self._envs.single_observation_space
        self.single_action_space = self._envs.single_action_space
        self._timeout = tm.watchdog_timeout + 5.0

    def _guard(self, fn, what: str):
        try:
            with warnings.catch_warnings():
                # gymnasium reports a worker's error as a warning before raising it; the
                # error we raise says the same.
                warnings.filterwarnings("ignore", message=".*ERROR: ", category=UserWarning)
                return fn()
        except GameConnectionError:
            self.close(terminate=True)
            raise
        except multiprocessing.TimeoutError:
            self.close(terminate=True)
            raise GameConnectionError(
                f"the env worker did not answer within {self._timeout:.0f} s while {what}: "
                f"killed it (see {DOCS}, 'watchdog')") from None
        except (EOFError, BrokenPipeError, ConnectionError, RuntimeError) as e:
            self.close(terminate=True)
            raise GameConnectionError(f"the env worker failed while {what}: "
                                      f"{type(e).__name__}: {e}") from e

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset with the watchdog; raises GameConnectionError on a hang or failure."""
        def run():
            self._envs.reset_async(seed=seed, options=options)
            return self._envs.reset_wait(timeout=self._timeout)
        return self._guard(run, "resetting")

    def step_async(self, actions) -> None:
        """Send the actions to the worker."""
        self._guard(lambda: self._envs.step_async(actions), "sending actions")

    def step_wait(self):
        """Wait for the step with the watchdog; raises GameConnectionError."""
        return self._guard(lambda: self._envs.step_wait(timeout=self._timeout), "stepping")

    def close(self, terminate: bool = False) -> None:
        """Close the worker (kill it with ``terminate``, as after a hang)."""
        if not self._envs.closed:
            try:
                self._envs.close(terminate=terminate)
            except Exception:  # a dead worker's pipe; it is gone either way
                pass


def make_tm_vector_env(tm, *, image_size: int, max_episode_steps: int | None,
                       action_space: str, passive: bool = False) -> GuardedVectorEnv:
    """The TrackMania env in its guarded worker process (one game per machine: always one
    env). Raises GameConnectionError only later, at reset or step."""
    return GuardedVectorEnv(tm, image_size=image_size, max_episode_steps=max_episode_steps,
                            action_space=action_space, passive=passive)
