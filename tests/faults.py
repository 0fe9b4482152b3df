"""``launch/run.py`` with a slow or failing actor or learner, for the loop tests.

    python tests/faults.py [--slow-update S] [--slow-step S] [--fail actor|learner]
                           [--fail-after N] -- RUN.PY ARGUMENTS

``--slow-update S`` sleeps S seconds in every update call of the learner, ``--slow-step S``
in every env step the actor collects; ``--fail`` raises a RuntimeError in the actor's N-th
env step or the learner's N-th update call (after printing ``fault at <unix time>``).
``--bad-value FIELD`` registers :data:`BAD_ENV_ID`, CartPole whose instances first reset
with seed ``--bad-seed`` (env index 0 of the training envs when that is the run's seed;
every instance without it) return NaN as their reward or in their observation (FIELD
reward / obs), or raise a RuntimeError (FIELD raise), at their ``--bad-after``-th step;
every other step is sound (use it with ``--env.no-asynchronous`` so that the envs are
built in this process). The process exits like launch/run.py does
(an uncaught exception: traceback and exit code 1). The faults travel in the environment
variable FAULTS_JSON, so that an actor process (``actors.backend=process``, started with
spawn, which imports this module as ``__mp_main__``) has them too.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# launch (JAX, orbax, ...) is imported in main() and _install(), not here: every spawned env
# worker imports this module as __mp_main__, and the project's imports took it 8 s of CPU.

FAULT_MESSAGE = "injected fault"
BAD_ENV_ID = "BadCartPole-v1"
"""Registered by ``--bad-value``: see the module docstring."""


class SpoilsOneStep:
    """Mixin for a gymnasium env: at its ``bad_after``-th step (counted over episodes), when
    ``emits``, the reward becomes ``bad_reward`` (``field`` reward), the observation's
    element 1 NaN (obs), or the step raises a RuntimeError (raise)."""

    bad_reward = float("nan")

    def spoil_setup(self, field: str, bad_after: int, emits: bool | None = True) -> None:
        self.field, self.bad_after, self.emits, self.steps = field, bad_after, emits, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        self.steps += 1
        if self.emits and self.steps == self.bad_after:
            if self.field == "raise":
                raise RuntimeError(f"{FAULT_MESSAGE} in {type(self).__name__} step {self.steps}")
            if self.field == "reward":
                reward = self.bad_reward
            else:
                obs = obs.copy()
                obs[1] = np.nan
        return obs, reward, terminated, truncated, info


class BadCartPole(SpoilsOneStep, CartPoleEnv):
    """CartPole that emits one NaN (reward or observation) or raises at its ``bad_after``-th
    step if its first reset had seed ``bad_seed`` (None: any)."""

    def __init__(self, field: str, bad_after: int, bad_seed: int | None, **kwargs):
        super().__init__(**kwargs)
        self.spoil_setup(field, bad_after, emits=None)  # decided at the first reset
        self.bad_seed = bad_seed

    def reset(self, *, seed=None, options=None):
        if self.emits is None:
            self.emits = self.bad_seed is None or seed == self.bad_seed
        return super().reset(seed=seed, options=options)


def _wrap(cls, name: str, delay: float, fail_after: int | None) -> None:
    original = getattr(cls, name)
    calls = [0]

    def wrapped(self, *args, **kwargs):
        calls[0] += 1
        if fail_after is not None and calls[0] >= fail_after:
            print(f"fault at {time.time():.3f}", file=sys.stderr, flush=True)
            raise RuntimeError(f"{FAULT_MESSAGE} in {cls.__name__}.{name} (call {calls[0]})")
        if delay:
            time.sleep(delay)
        return original(self, *args, **kwargs)

    setattr(cls, name, wrapped)


def main(argv: list[str]) -> int:
    split = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--slow-update", type=float, default=0.0)
    parser.add_argument("--slow-step", type=float, default=0.0)
    parser.add_argument("--fail", choices=("actor", "learner"))
    parser.add_argument("--fail-after", type=int, default=20)
    parser.add_argument("--bad-value", choices=("reward", "obs", "raise"))
    parser.add_argument("--bad-after", type=int, default=150)
    parser.add_argument("--bad-seed", type=int, default=None)
    args = parser.parse_args(argv[:split])
    if args.bad_value:
        gym.register(BAD_ENV_ID, entry_point=BadCartPole, max_episode_steps=500,
                     kwargs=dict(field=args.bad_value, bad_after=args.bad_after,
                                 bad_seed=args.bad_seed))
    os.environ["FAULTS_JSON"] = json.dumps(vars(args))
    _install()
    from launch import run

    return run.main(argv[split + 1:])


def _install() -> None:
    """Wrap the learner's update and the actor's finish with the faults of FAULTS_JSON."""
    from launch import actor as actor_lib
    from launch import learner as learner_lib

    faults = json.loads(os.environ["FAULTS_JSON"])
    fail, after = faults["fail"], faults["fail_after"]
    _wrap(learner_lib.Learner, "update", faults["slow_update"],
          after if fail == "learner" else None)
    _wrap(actor_lib.Actor, "finish", faults["slow_step"], after if fail == "actor" else None)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
elif (__name__ == "__mp_main__" and "FAULTS_JSON" in os.environ
      and multiprocessing.current_process().name == "actor"):  # not in an env worker
    _install()
