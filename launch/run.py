"""Train an agent: ``python launch/run.py --algo=iqn_btr [--env ID] [--resume RUN_DIR]``.

Synchronous loop, reproducible by seed: inject recorded demonstrations (``--demos.path``) into
a fresh replay, then act on the stacked observations of all envs (an expert takes each step
with the curriculum's probability, ``--expert.*``), step the env workers, add the slots to the
device replay, and after the warm-up run jitted grad steps at the configured
replay ratio (decaying the demo sampling weight once per log interval); evaluate, log to
TensorBoard and checkpoint periodically. Every log interval the health monitor
(``rl/health.py``) checks the seeds' red flags and, on divergence, warns, stops or rolls back
to the best checkpoint (``health.on_divergence``). Ctrl-C saves a checkpoint and exits.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import math
import signal
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax
import numpy as np
import tqdm
from tensorboardX import SummaryWriter

import envs
from launch import cli
from launch.checkpoint import RunCheckpoints
from launch.experts import Expert, build_expert
from rl import agent as agent_lib
from rl import config as config_lib
from rl import curriculum
from rl import health as health_lib
from rl import schedules
from rl.config import Config, ConfigError
from nets import resolve_torso
from rl.learners import make_agent, update_metric_names

log = logging.getLogger("launch")


class _TqdmHandler(logging.Handler):
    def emit(self, record):
        tqdm.tqdm.write(self.format(record), file=sys.stderr)


def _setup_logging(run_dir: Path) -> None:
    log.setLevel(logging.INFO)
    log.handlers.clear()
    log.propagate = False
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    for handler in (_TqdmHandler(), logging.FileHandler(run_dir / "console.log")):
        handler.setFormatter(fmt)
        log.addHandler(handler)


class _StopOnSigint:
    """Turns the first Ctrl-C into a flag the loop checks between steps, so the interrupt
    never lands inside a jitted call with donated buffers or a checkpoint write; a second
    Ctrl-C raises KeyboardInterrupt at once."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("Ctrl-C: stopping after this step (press again to quit without saving)")

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self._previous)


def default_run_dir(config: Config) -> Path:
    """runs/<algo>-<env>-s<seed>-<YYYYmmdd-HHMMSS>, with '/' in env ids replaced."""
    env = config.env.id.replace("/", "_")
    return Path("runs") / f"{config.algo}-{env}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"


EXIT_GAME_LOST = 3
"""Exit code when the TrackMania game cannot be reached (after a checkpoint was saved)."""
EXIT_DIVERGED = 4
"""Exit code when training diverged and health.on_divergence (stop, or rollback out of
attempts) ended the run (after a checkpoint was saved)."""


DEMO_CHUNK = 1024
"""Demo slots written to the replay per device call when injecting."""


def load_demo_slots(config: Config, spec: envs.EnvSpec) -> dict[str, np.ndarray] | None:
    """The replay slots of ``demos.path`` (``envs.demo_slots``), or None without demos.

    Raises:
      DemoError: unusable demo files (see ``envs.load_demos``).
      ConfigError: the demos (times injection_repeat) need more slots per stream than the
        replay holds, so they would overwrite each other.
    """
    demos = config.demos
    if demos.path is None:
        return None
    episodes = envs.load_demos(demos.path, spec, frame_skip=config.env.frame_skip)
    slots = envs.demo_slots(episodes, spec, config.env.num_envs, repeat=demos.injection_repeat,
                            reward_scale=config.env.reward_scale,
                            reward_clip=config.env.reward_clip)
    per_stream = config.replay.capacity // config.env.num_envs
    if len(slots["valid"]) > per_stream:
        raise ConfigError("demos.path", demos.path,
                          f"holds {len(episodes)} episodes that, injected "
                          f"{demos.injection_repeat} times, take {len(slots['valid'])} slots per "
                          f"env stream; the replay holds {per_stream} per stream "
                          "(replay.capacity / env.num_envs): raise replay.capacity or lower "
                          "demos.injection_repeat")
    return slots


def _earlier_health_events(path: Path) -> list[dict]:
    """The events of a resumed run's health.json (none for a new run). An unreadable file is
    kept aside as health.json.unreadable rather than overwritten."""
    if not path.exists():
        return []
    try:
        return list(json.loads(path.read_text())["events"])
    except (ValueError, KeyError, TypeError) as e:
        aside = path.with_name(path.name + ".unreadable")
        path.rename(aside)
        log.warning("%s is unreadable (%s); moved to %s and starting a new one", path, e, aside)
        return []


def train(config: Config, spec: envs.EnvSpec, run_dir: Path, resume: bool,
          demo_slots: dict[str, np.ndarray] | None = None, expert: Expert | None = None
          ) -> int:
    """Run (or continue) training; returns the process exit code: 0 done, 3 game lost, 4
    diverged (health.on_divergence), 130 interrupted.

    Args:
      config: the resolved config; spec: the env's spaces (``envs.env_spec``).
      run_dir: the run directory (config already written); resume: restore its latest
        checkpoint.
      demo_slots: demonstrations to inject (:func:`load_demo_slots`) into a fresh replay, or
        None; a replay restored from a checkpoint already holds them.
      expert: the curriculum's expert (``launch.experts.build_expert``), or None.
    """
    env_cfg, training = config.env, config.training
    agent = make_agent(config, spec.num_actions, spec.is_image, spec.feature_size)
    replay = agent.replay
    checkpoints = RunCheckpoints(run_dir, training.keep_checkpoints)

    key = jax.random.PRNGKey(config.seed)
    k_init, act_key, eval_key = jax.random.split(key, 3)
    state = agent.init(k_init, envs.zeros_obs(spec, (env_cfg.frame_stack,)))
    replay_state = replay.init(envs.zeros_obs(spec), np.zeros(spec.action_shape, spec.action_dtype))
    loop = dict(env_steps=0, vector_steps=0, episodes=0, replay_slots=0, grad_credit=0.0,
                best_eval_return=None, best_train_return=None, restarts=0, rollbacks=0,
                lr_scale=1.0, expert_floor_raise=None)

    if resume:
        step = checkpoints.latest_step()
        if step is None:
            log.warning("no checkpoint in %s yet: starting from scratch with its config", run_dir)
        else:
            with_replay = checkpoints.has_replay(step)
            try:
                state, restored_replay, loop = checkpoints.restore(
                    step, state, replay_state if with_replay else None)
            except ValueError as e:
                if not with_replay:
                    raise
                # A replay saved before a field existed (is_expert): keep the train state.
                state, _, loop = checkpoints.restore(step, state, None)
                with_replay = False
                log.warning("the replay in the checkpoint has an older layout (%s); keeping "
                            "the train state and refilling the buffer",
                            str(e).splitlines()[0])
            if with_replay:
                replay_state = restored_replay
                log.info("resumed from env step %d with %d replay slots", step,
                         loop["replay_slots"])
            else:
                loop["replay_slots"] = 0
                log.info("resumed from env step %d; the checkpoint has no usable replay "
                         "contents, so the buffer is refilled (%d env steps of warm-up before "
                         "learning)", step, training.learning_starts)
            for key, value in dict(best_train_return=None, rollbacks=0, lr_scale=1.0,
                                   expert_floor_raise=None).items():
                loop.setdefault(key, value)  # checkpoints from before these existed
            loop["restarts"] += 1

    history = config.network.action_history
    # The real-time game: the learner gets only what is left of each 50 ms step, episodes reach
    # the replay whole (a crash drops the partial one), and lost connections are retried.
    realtime = envs.is_trackmania(env_cfg.id)
    tm = config.trackmania

    def start_collector() -> envs.Collector:
        seed = config.seed + 7919 * loop["restarts"]
        vector_env = envs.make_vector_env(env_cfg.id, env_cfg.num_envs,
                                          asynchronous=env_cfg.asynchronous, seed=seed,
                                          **envs.make_kwargs(config))
        new = envs.Collector(vector_env, spec, env_cfg.frame_stack, env_cfg.reward_clip,
                             reward_scale=env_cfg.reward_scale, action_history=history)
        try:
            new.reset(seed=seed)
        except BaseException:
            new.close()
            raise
        return new


    add = jax.jit(replay.add, donate_argnums=0)
    fold = jax.jit(agent_lib.fold_metrics, donate_argnums=0)
    metric_names = update_metric_names(config)

    def compile_update(lr_scale: float):
        """The jitted update of the agent with its learning rates times ``lr_scale`` (1 but
        after rollbacks); compiled at once in real time."""
        learner = agent if lr_scale == 1.0 else make_agent(
            health_lib.scale_learning_rates(config, lr_scale), spec.num_actions, spec.is_image,
            spec.feature_size)
        jitted = jax.jit(learner.update, donate_argnums=(0, 1))
        return jitted.lower(state, replay_state, 0.4).compile() if realtime else jitted

    update = compile_update(loop["lr_scale"])
    set_demo_weight = jax.jit(replay.set_demo_weight, donate_argnums=0)
    demo_weight = None
    if demo_slots is not None:
        demo_weight = schedules.demo_sampling_weight(config.demos, loop["env_steps"])
        if loop["replay_slots"] == 0:  # a fresh replay: not restored with its demos
            replay_state = set_demo_weight(replay_state, demo_weight)
            add_sequence = jax.jit(replay.add_sequence, donate_argnums=0)
            length = len(demo_slots["valid"])
            for start in range(0, length, DEMO_CHUNK):
                chunk = jax.tree.map(lambda v: v[start:start + DEMO_CHUNK], demo_slots)
                replay_state = add_sequence(replay_state, chunk)
            per_stream = replay.capacity_per_stream
            log.info("injected %d demo transitions (%d slots per env stream, %d left for the "
                     "agent's own before demos are overwritten); demo sampling weight %.3g",
                     int(demo_slots["valid"].sum()), length, per_stream - length, demo_weight)

    @functools.partial(jax.jit, static_argnames="noisy")
    def act(state, obs, prev_actions, key, step, epsilon, noisy):
        return agent.act(state, obs, jax.random.fold_in(key, step), epsilon, noisy=noisy,
                         prev_actions=prev_actions)

    if realtime:
        # Compile before the game's clock starts: a first call inside a 50 ms step is late.
        e = env_cfg.num_envs
        act(state, envs.zeros_obs(spec, (e, env_cfg.frame_stack)),
            np.full((e, history), -1, np.int32) if history else None, act_key, 0, 1.0,
            noisy=True).block_until_ready()
        scalar = jax.ShapeDtypeStruct((), np.float32)
        fold = fold.lower(agent_lib.metrics_fold(metric_names),
                          {k: scalar for k in metric_names}).compile()
        add = add.lower(replay_state, obs=envs.zeros_obs(spec, (e,)),
                        action=np.zeros((e, *spec.action_shape), spec.action_dtype),
                        reward=np.zeros(e, np.float32), terminated=np.zeros(e, bool),
                        truncated=np.zeros(e, bool), valid=np.ones(e, bool),
                        steps_since_start=np.zeros(e, np.int32),
                        is_expert=np.zeros(e, bool)).compile()
    try:
        collector = start_collector()
    except envs.GameConnectionError as e:
        log.error("cannot start the game: %s", e)
        checkpoints.close()
        return EXIT_GAME_LOST

    if config.agent.epsilon_unit == "episodes":
        log.warning("agent.epsilon_unit=episodes: epsilon decays per finished episode. Seed "
                    "000 lost its exploration this way (episodes lengthen as the agent improves, "
                    "so epsilon reached its end value after ~150k of 10M steps); prefer steps")

    # Sampling needs n_step + 1 slots per stream, even when learning_starts asks for less.
    learning_starts = max(training.learning_starts, env_cfg.num_envs * (config.agent.n_step + 1))
    train_window = training.best_train_window
    writer = SummaryWriter(str(run_dir))
    # Every knob of the run, in TensorBoard's Text tab beside the curves it explains.
    writer.add_text("config", "```\n" + json.dumps(config_lib.to_dict(config), indent=2) + "\n```",
                    loop["env_steps"])
    recent_returns: collections.deque[float] = collections.deque(maxlen=20)
    # Returns of agent-only episodes (all of them without an expert): the best_train/ choice
    # and the health monitor's trend judge the agent's own policy, not the expert's share.
    own_returns: collections.deque[float] = collections.deque(maxlen=max(1, train_window))
    num_envs, total = env_cfg.num_envs, training.total_steps
    busy_time = wait_time = 0.0
    interval = agent_lib.metrics_fold(metric_names)  # learner metrics of this log interval
    last_loss = None
    health_path = run_dir / "health.json"
    agent_cfg = config.agent
    monitor = health_lib.HealthMonitor(
        config.health, gamma=agent_cfg.gamma, total_steps=total, learning_starts=learning_starts,
        bonus_range=(agent_cfg.munchausen_alpha * agent_cfg.munchausen_clip,
                     agent_cfg.munchausen_tau * math.log(spec.num_actions))
        if agent_cfg.munchausen else (0.0, 0.0),
        epsilon_start=agent_cfg.epsilon_start, events=_earlier_health_events(health_path))
    if loop.get("reward_range"):  # a resumed run: the rewards its replay held
        monitor.record_rewards(*loop["reward_range"])
    if demo_slots is not None:
        monitor.record_rewards(float(demo_slots["reward"].min()),
                               float(demo_slots["reward"].max()))
    uses_epsilon = config.agent.learner != "tqc"
    logging_cfg = config.logging
    episode_stats = curriculum.ReturnStats(num_envs, logging_cfg.return_windows,
                                           logging_cfg.reward_slope_episodes)
    mixer = curriculum.ExpertMixer(num_envs, config.expert.mode,
                                   seed=config.seed + 104_729 * (loop["restarts"] + 1))
    floor_raise = loop["expert_floor_raise"] = schedules.expert_floor_raise(
        config.expert, loop["expert_floor_raise"], loop["env_steps"])
    if floor_raise is not None:
        log.info("expert: floor raised to %.3g from env step %d to %d", floor_raise["floor"],
                 floor_raise["start"], floor_raise["start"] + floor_raise["steps"])
    next_summary = loop["env_steps"] + logging_cfg.summary_interval \
        if logging_cfg.summary_interval else math.inf
    diverged = False
    window = dict(time=time.perf_counter(), env_steps=loop["env_steps"], grad_steps=0)
    next_log = loop["env_steps"] + config.logging.log_interval
    next_eval = (loop["env_steps"] // training.eval_interval + 1) * training.eval_interval \
        if training.eval_interval else math.inf
    next_ckpt = (loop["env_steps"] // training.checkpoint_interval + 1) * training.checkpoint_interval
    grad_steps = int(state.grad_steps)
    bar = tqdm.tqdm(total=total, initial=loop["env_steps"], unit="step", dynamic_ncols=True,
                    disable=not config.logging.progress_bar, mininterval=1.0)

    def save(reason: str) -> None:
        add_ready()  # a checkpointed replay must hold every slot before the saved step
        loop["reward_range"] = monitor.reward_range
        checkpoints.save(loop["env_steps"], state,
                         replay_state if training.save_replay else None, loop)
        log.info("checkpoint at env step %d (%s) in %s", loop["env_steps"], reason,
                 run_dir / "checkpoints")

    def evaluate() -> None:
        counter = iter(range(10**9))
        key = jax.random.fold_in(eval_key, loop["env_steps"])
        policy = lambda obs, prev=None: np.asarray(act(state, obs, prev, key, next(counter),
                                                       config.agent.eval_epsilon, noisy=False))
        returns = envs.evaluate(policy, env_cfg.id, num_episodes=training.eval_episodes,
                                seed=config.seed + 100_003 + loop["env_steps"],
                                frame_stack=env_cfg.frame_stack, action_history=history,
                                **envs.make_kwargs(config))
        mean = float(np.mean(returns))
        step = loop["env_steps"]
        monitor.record_eval(step, mean)
        writer.add_scalar("eval/return_mean", mean, step)
        writer.add_scalar("eval/return_std", float(np.std(returns)), step)
        writer.add_scalar("eval/return_min", float(np.min(returns)), step)
        writer.add_scalar("eval/return_max", float(np.max(returns)), step)
        log.info("eval at env step %d: return %.2f +- %.2f over %d episodes", step, mean,
                 float(np.std(returns)), len(returns))
        best = loop["best_eval_return"]
        if best is None or mean > best:
            loop["best_eval_return"] = mean
            checkpoints.save_best(step, state, loop, mean)

    pending: list[dict] = []  # slots of the running episode (real time: added when it ends)
    ready: collections.deque[dict] = collections.deque()  # slots waiting to enter the replay
    late = dict(steps=0, late=0, timings={})
    failures = reconnects = 0  # consecutive failed connections; reconnections in this process

    def add_ready(limit: float = math.inf) -> None:
        nonlocal replay_state
        while ready and limit > 0:
            replay_state = add(replay_state, **ready.popleft())
            loop["replay_slots"] += num_envs
            limit -= 1

    def learn(budget: float | None) -> None:
        """Grad steps owed by the replay ratio; with a budget (seconds), only as many as fit."""
        nonlocal state, replay_state, interval, busy_time, grad_steps
        start = time.perf_counter()
        while loop["grad_credit"] >= training.grad_steps_per_call and (
                budget is None or time.perf_counter() - start < budget):
            beta = schedules.importance_exponent(config.replay, loop["env_steps"], total,
                                                 grad_steps)
            t0 = time.perf_counter()
            state, replay_state, metrics = update(state, replay_state, beta)
            interval = fold(interval, metrics)
            jax.block_until_ready(state.grad_steps)
            busy_time += time.perf_counter() - t0
            loop["grad_credit"] -= training.grad_steps_per_call
            grad_steps += training.grad_steps_per_call

    def reconnect(error: Exception) -> bool:
        """Drop the partial episode and restart the game worker; False when out of attempts."""
        nonlocal collector, failures, reconnects
        failures += 1
        dropped = sum(int(slot["valid"].sum()) for slot in pending)
        pending.clear()
        log.warning("game connection lost: %s; dropped the partial episode (%d steps)", error,
                    dropped)
        collector.close()
        while failures <= tm.reconnect_attempts:
            log.info("reconnecting to the game (attempt %d of %d)", failures,
                     tm.reconnect_attempts)
            loop["restarts"] += 1
            try:
                collector = start_collector()
                reconnects += 1
                writer.add_scalar("perf/reconnects", reconnects, loop["env_steps"])
                return True
            except envs.GameConnectionError as e:
                log.warning("reconnect failed: %s", e)
                failures += 1
        return False

    def on_health(events: list[health_lib.HealthEvent]) -> None:
        """Log flag changes (console, TensorBoard, health.json); act on divergence."""
        nonlocal diverged
        for event in events:
            writer.add_scalar(f"health/{event.name}", float(event.raised), event.step)
            if event.raised:
                writer.add_text("health", f"{event.severity} {event.name}: {event.message}",
                                event.step)
                log.warning("health: %s %s at env step %d: %s", event.severity, event.name,
                            event.step, event.message)
            else:
                log.info("health: %s cleared at env step %d (%s)", event.name, event.step,
                         event.message)
        divergence = [e for e in events if e.raised and e.severity == health_lib.DIVERGENCE]
        if divergence and config.health.on_divergence == "stop":
            log.error("training diverged (%s); stopping (health.on_divergence=stop)",
                      ", ".join(e.name for e in divergence))
            diverged = True
        elif divergence and config.health.on_divergence == "rollback":
            diverged = not rollback(divergence)
        if events:
            health_path.write_text(json.dumps(monitor.summary(), indent=2) + "\n")

    def rollback(divergence: list[health_lib.HealthEvent]) -> bool:
        """Restore the best checkpoint with lower learning rates; False when out of rollbacks
        or without a best checkpoint."""
        nonlocal state, update
        cfg = config.health
        kinds = [k for k in ("eval", "train") if checkpoints.best_step(k) is not None]
        names = ", ".join(e.name for e in divergence)
        if loop["rollbacks"] >= cfg.max_rollbacks or not kinds:
            log.error("training diverged (%s) and cannot roll back: %s; stopping", names,
                      f"health.max_rollbacks={cfg.max_rollbacks} used up" if kinds else
                      "no best checkpoint yet (needs an evaluation or "
                      "training.best_train_window finished episodes)")
            return False
        best_step = checkpoints.best_step(kinds[0])
        restored, best_loop = checkpoints.restore_best(kinds[0], state)
        loop["rollbacks"] += 1
        loop["lr_scale"] *= cfg.rollback_lr_factor
        state = restored
        update = compile_update(loop["lr_scale"])
        step = loop["env_steps"]
        log.warning("health: rollback %d of %d for %s: restored the best-by-%s checkpoint of env "
                    "step %d (return %.4g); learning rates now x%.3g of the config's",
                    loop["rollbacks"], cfg.max_rollbacks, names, kinds[0], best_step,
                    best_loop["best_eval_return" if kinds[0] == "eval" else "best_train_return"],
                    loop["lr_scale"])
        writer.add_scalar("charts/rollbacks", loop["rollbacks"], step)
        writer.add_scalar("charts/lr_scale", loop["lr_scale"], step)
        monitor.record_rollback(step, best_step, kinds[0], loop["lr_scale"], names)
        on_health(monitor.restart(step))
        return True

    stop = _StopOnSigint()
    game_lost = False
    try:
        while loop["env_steps"] < total and not stop.requested:
            step = loop["env_steps"]
            if config.agent.random_warmup and loop["replay_slots"] < learning_starts:
                epsilon = 1.0  # uniformly random actions until learning starts
            else:
                epsilon = schedules.epsilon(config.agent, step, total, loop["episodes"])
            prev_actions = collector.prev_actions if history else None
            obs = collector.stacked_obs
            actions = np.asarray(act(state, obs, prev_actions, act_key, loop["vector_steps"],
                                     epsilon, noisy=True))
            is_expert = np.zeros(num_envs, bool)
            if expert is not None:
                steps_since_start = collector.steps_since_start
                is_expert = mixer.choose(schedules.expert_ratio(config.expert, step, floor_raise),
                                         steps_since_start, collector.step_valid)
                if is_expert.any():
                    expert_actions, available = expert.act(obs, prev_actions, steps_since_start)
                    is_expert &= available
                    mask = is_expert.reshape(-1, *[1] * (actions.ndim - 1))
                    actions = np.where(mask, expert_actions, actions)
            collector.step_async(actions)
            # The learner works while the env workers step. In real time it keeps to its share
            # of the time step, except while the game respawns the car (the autoreset step).
            resetting = not collector.step_valid.all()
            budget = tm.learner_budget * tm.time_step if realtime and not resetting else None
            add_ready(limit=math.inf if budget is None else 8)
            learn(budget)
            try:
                t_wait = time.perf_counter()
                slot, finished = collector.step_wait()
                wait_time += time.perf_counter() - t_wait
            except envs.GameConnectionError as e:
                if not realtime or not reconnect(e):
                    log.error("giving up on the game (trackmania.reconnect_attempts=%d): %s",
                              tm.reconnect_attempts, e)
                    game_lost = True
                    break
                continue
            failures = 0
            slot["is_expert"] = is_expert  # never set on autoreset steps (ExpertMixer)
            episode_stats.record_step(is_expert, slot["valid"])
            loop["vector_steps"] += 1
            monitor.record_rewards(float(slot["reward"].min()), float(slot["reward"].max()))
            # Autoreset slots (the env ignored the action) are stored but are not env steps.
            taken = int(slot["valid"].sum())
            loop["env_steps"] += taken
            if realtime:
                pending.append(slot)
                if not slot["valid"].all():  # the final frame: the episode is whole
                    ready.extend(pending)
                    pending.clear()
                info = collector.last_info
                late["steps"] += taken
                late["late"] += int(np.sum(info.get("late_steps", 0)))
                for key, value in info.items():
                    if key.startswith("rtgym_"):
                        late["timings"][key] = float(np.mean(value))
            else:
                ready.append(slot)
            for episode in finished:
                loop["episodes"] += 1
                recent_returns.append(episode.return_)
                agent_only, expert_share = episode_stats.record_episode(
                    episode.env_index, loop["env_steps"], episode.return_)
                if agent_only:
                    own_returns.append(episode.return_)
                    monitor.record_episode(loop["env_steps"], episode.return_)
                writer.add_scalar("episode/return", episode.return_, loop["env_steps"])
                writer.add_scalar("episode/length", episode.length, loop["env_steps"])
                if expert is not None:
                    kind = "agent_only" if agent_only else "mixed"
                    writer.add_scalar(f"episode/{kind}_return", episode.return_,
                                      loop["env_steps"])
                    writer.add_scalar("episode/expert_share", expert_share, loop["env_steps"])
                if realtime and "progress" in collector.last_info:
                    writer.add_scalar("episode/track_progress",
                                      float(collector.last_info["progress"][episode.env_index]),
                                      loop["env_steps"])

            if loop["replay_slots"] + len(ready) * num_envs >= learning_starts:
                loop["grad_credit"] += taken * training.replay_ratio

            bar.update(taken)
            if loop["env_steps"] >= next_log:
                next_log += config.logging.log_interval
                now = time.perf_counter()
                elapsed = max(now - window["time"], 1e-9)
                env_sps = (loop["env_steps"] - window["env_steps"]) / elapsed
                grad_sps = (grad_steps - window["grad_steps"]) / elapsed
                scalars = {"charts/epsilon": epsilon,
                           "charts/importance_exponent": schedules.importance_exponent(
                               config.replay, loop["env_steps"], total, grad_steps),
                           "charts/episodes": loop["episodes"],
                           "perf/env_steps_per_sec": env_sps,
                           "perf/grad_steps_per_sec": grad_sps,
                           "perf/transitions_learned_per_sec": grad_sps * training.batch_size,
                           "perf/learner_busy_share": busy_time / elapsed,
                           "perf/env_wait_share": wait_time / elapsed,
                           "train/grad_steps": grad_steps}
                if realtime:
                    share = late["late"] / max(late["steps"], 1)
                    scalars.update({"perf/late_steps": late["late"], "perf/late_step_share": share,
                                    "perf/grad_credit_backlog": loop["grad_credit"]})
                    scalars.update({f"perf/{k}": v for k, v in late["timings"].items()})
                    if share > tm.late_step_warning:
                        log.warning("%.1f%% of the last %d steps were late (over %.0f ms): the "
                                    "actor missed the game's 20 Hz clock; lower the learner's "
                                    "load (trackmania.learner_budget, training.replay_ratio) or "
                                    "free the CPU (see docs/trackmania.md, 'timeouts')",
                                    100 * share, late["steps"],
                                    1000 * tm.time_step * (1 + tm.time_step_timeout_factor))
                    late.update(steps=0, late=0)
                metrics = agent_lib.fold_means(interval)
                interval = agent_lib.metrics_fold(metric_names)
                scalars.update({f"train/{k}": v for k, v in metrics.items()})
                scalars.update(episode_stats.scalars(loop["env_steps"]))
                if expert is not None:
                    scalars["expert/ratio"] = schedules.expert_ratio(
                        config.expert, loop["env_steps"], floor_raise)
                    share = episode_stats.expert_step_share()
                    if share is not None:
                        scalars["expert/step_share"] = share
                if metrics:
                    last_loss = metrics.get("loss", metrics.get("critic_loss"))
                if demo_weight is not None:
                    weight = schedules.demo_sampling_weight(config.demos, loop["env_steps"])
                    if weight != demo_weight:
                        replay_state = set_demo_weight(replay_state, weight)
                        demo_weight = weight
                    scalars["charts/demo_sampling_weight"] = demo_weight
                for tag, value in scalars.items():
                    writer.add_scalar(tag, value, loop["env_steps"])
                window = dict(time=now, env_steps=loop["env_steps"], grad_steps=grad_steps)
                on_health(monitor.check(loop["env_steps"], metrics,
                                        epsilon if uses_epsilon else None))
                if diverged:
                    break
                # Checked once per log interval, so a run of improving episodes is one save;
                # none while a divergence flag is up (the mean spans episodes of before it).
                if train_window and len(own_returns) >= train_window and \
                        not monitor.diverging():
                    train_return = float(np.mean(own_returns))
                    best = loop["best_train_return"]
                    if best is None or train_return > best:
                        loop["best_train_return"] = train_return
                        checkpoints.save_best(loop["env_steps"], state, loop, train_return,
                                              kind="train")
                busy_time = wait_time = 0.0
                postfix = dict(env_sps=f"{env_sps:.0f}", grad_sps=f"{grad_sps:.1f}",
                               eps=f"{epsilon:.2f}")
                if expert is not None:
                    postfix["expert"] = f"{scalars['expert/ratio']:.0%}"
                if recent_returns:
                    postfix["return"] = f"{np.mean(recent_returns):.1f}"
                if last_loss is not None:
                    postfix["loss"] = f"{last_loss:.3f}"
                if monitor.raised:
                    postfix["health"] = ",".join(sorted(monitor.raised))
                bar.set_postfix(postfix, refresh=False)
                if loop["env_steps"] >= next_summary:
                    next_summary += logging_cfg.summary_interval
                    hard = config.agent.target_update in ("hard", "both")
                    log.info(curriculum.summary_line(
                        loop["env_steps"], total, scalars, logging_cfg.return_windows,
                        config.agent.target_update_period if hard else None))
            if loop["env_steps"] >= next_eval:
                next_eval += training.eval_interval
                evaluate()
            if loop["env_steps"] >= next_ckpt:
                next_ckpt += training.checkpoint_interval
                save("periodic")
    finally:
        bar.close()
        stop.restore()
    interrupted = stop.requested
    if interrupted:
        log.warning("interrupted at env step %d: saving a checkpoint", loop["env_steps"])
    try:
        ended = "interrupted" if interrupted else "game lost" if game_lost else \
            "diverged" if diverged else None
        if ended or checkpoints.latest_step() != loop["env_steps"]:
            save(ended or "final")
        health_path.write_text(json.dumps(monitor.summary(), indent=2) + "\n")
        if ended:
            log.info("resume with: python launch/run.py --resume %s", run_dir)
        else:
            log.info("done: %d env steps, %d grad steps, %d episodes", loop["env_steps"],
                     grad_steps, loop["episodes"])
    finally:
        writer.close()
        checkpoints.close()
        try:
            collector.close()
        except Exception as e:  # workers may already be gone after Ctrl-C
            log.warning("closing env workers: %s", e)
    return 130 if interrupted else EXIT_GAME_LOST if game_lost else \
        EXIT_DIVERGED if diverged else 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, set up the run directory and train (or, with --print-config,
    print the resolved config as JSON). Returns the exit code: 0 done, 2 bad input (one
    message on stderr), 130 interrupted after checkpointing."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        invocation = cli.parse(argv)
        config = invocation.config
        if invocation.print_config:
            print(json.dumps(config_lib.to_dict(config), indent=2))
            return 0
        envs.check_env_id(config.env.id, action_space=config.env.action_space)
        spec = envs.env_spec(config.env.id, **envs.make_kwargs(config))
        resolve_torso(config.network.torso, spec.is_image)
        if spec.continuous != (config.agent.learner == "tqc"):
            kind = "continuous" if spec.continuous else "discrete"
            raise ConfigError("agent.learner", config.agent.learner,
                              f"does not fit {config.env.id} with {kind} actions: tqc needs "
                              "continuous actions, iqn / c51 / dqn discrete ones (see "
                              "env.action_space)")
        demo_slots = load_demo_slots(config, spec)
        expert = build_expert(config, spec)
        run_dir = invocation.resume_dir or Path(config.logging.run_dir or default_run_dir(config))
        if invocation.resume_dir is None and (run_dir / "config.json").exists():
            raise ConfigError("logging.run_dir", str(run_dir),
                              "already holds a run; continue it with --resume "
                              f"{run_dir} or pick another --run-dir")
    except (ValueError, FileNotFoundError) as e:  # ConfigError, EnvIdError, torso mismatch
        print(f"error: {e}", file=sys.stderr)
        return 2
    run_dir.mkdir(parents=True, exist_ok=True)
    config_lib.save(config, run_dir / "config.json")
    _setup_logging(run_dir)
    log.info("run directory %s (tensorboard --logdir %s)", run_dir, run_dir.parent)
    return train(config, spec, run_dir, resume=invocation.resume_dir is not None,
                 demo_slots=demo_slots, expert=expert)


if __name__ == "__main__":
    sys.exit(main())
