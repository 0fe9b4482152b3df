"""Device-resident replay: one ring per env stream, frame-stack dedup, n-step, PER.

Everything lives in one :class:`ReplayState` pytree of jax arrays; a
:class:`DeviceReplay` (frozen, static config) supplies pure, jit-able functions over
it. Each slot stores a single frame; stacks of ``frame_stack`` frames, the last
``action_history`` actions and n-step returns are rebuilt at sample time from
contiguous slots of the same stream.

Slot layout (one per env per vector step, gymnasium NEXT_STEP autoreset): a slot at
logical step t holds ``o_t, a_t, r_t, terminated_t, truncated_t, valid_t,
steps_since_start_t``; the slot after an episode end holds the final observation with
``valid=False`` and is only ever read as bootstrap observation or stack history.

Groups: the E streams may be split into G groups of ``E_g = E / G`` consecutive streams
that are written independently (one group per actor of a distributed run, each with its
own E_g envs and its own ``count``); they share one sum tree, so PER stays exact over all.

References:
  Schaul et al., "Prioritized Experience Replay", ICLR 2016 (proportional variant).
  Sutton & Barto, "Reinforcement Learning: An Introduction", 2nd ed., Sec. 7.1 (n-step).
  Hessel et al., "Rainbow", AAAI 2018 (n-step targets inside DQN-style replay).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np

from replay import sum_tree

__all__ = ["ReplayState", "Batch", "DeviceReplay"]


def _write_column(ring: jax.Array, rows: Any, first: int | jax.Array,
                  write: jax.Array) -> jax.Array:
    """``ring`` [E, C, ...] with ``rows`` [E_g, ...] (cast to its dtype) written at streams
    ``first ..`` and ring index ``write``; dynamic_update_slice lets XLA write in place into
    a donated buffer."""
    rows = jnp.asarray(rows, ring.dtype)
    start = (first, write) + (0,) * (ring.ndim - 2)
    return jax.lax.dynamic_update_slice(ring, rows[:, None], start)


@flax.struct.dataclass
class ReplayState:
    """Replay contents; a pytree of device arrays (E streams, C slots per stream, G groups).

    Attributes:
      obs: pytree of ``[E, C, *frame]`` arrays, one frame per slot.
      action: ``[E, C, *action_shape]``, dtype of the action example (scalar integer
        when ``action_history > 0``: the last h actions are read back from here).
      reward: float32 ``[E, C]``, reward after the slot's action.
      terminated: bool ``[E, C]``, episode ended in a terminal state after the action.
      truncated: bool ``[E, C]``, episode was cut after the action (bootstrap).
      valid: bool ``[E, C]``, False for autoreset (final-observation) slots.
      steps_since_start: int32 ``[E, C]``, steps since the episode began for ``obs``.
      is_demo: bool ``[E, C]``, the slot comes from a recorded demonstration.
      is_expert: bool ``[E, C]``, an expert policy took the slot's action (the expert
        curriculum, ``rl/curriculum.py``).
      sum_tree: float32 ``[2L]`` sampling weights, leaf ``stream * C + ring_index``:
        ``(priority + eps) ** alpha`` (1 when uniform), times ``demo_weight`` for demo
        slots; 0 for positions that may not be sampled.
      max_priority: float32 ``[]``, largest ``priority + eps`` seen (starts at 1.0).
      demo_weight: float32 ``[]``, current demo sampling weight (starts at 1.0; see
        :meth:`DeviceReplay.set_demo_weight`).
      count: int32 ``[G]``, number of ``add`` calls so far per group of streams
        (:attr:`DeviceReplay.num_groups`); group g's streams were last written at ring
        index ``(count[g] - 1) % C``.
    """

    obs: Any
    action: jax.Array
    reward: jax.Array
    terminated: jax.Array
    truncated: jax.Array
    valid: jax.Array
    steps_since_start: jax.Array
    is_demo: jax.Array
    is_expert: jax.Array
    sum_tree: jax.Array
    max_priority: jax.Array
    demo_weight: jax.Array
    count: jax.Array


@flax.struct.dataclass
class Batch:
    """A batch of n-step transitions with stacked observations.

    Attributes:
      obs: pytree of ``[B, k, *frame]`` stacks at the start slot (oldest frame first).
      prev_actions: int32 ``[B, h]``, the actions ``a_{p-h} .. a_{p-1}`` taken before
        the start slot p (oldest first); -1 where the action precedes the episode
        start (offset j back is real iff ``j <= steps_since_start[p]``). ``[B, 0]``
        when ``action_history == 0``.
      action: ``[B, *action_shape]`` action at the start slot.
      reward: float32 ``[B]``, ``sum_{j<m} gamma^j r_{p+j}``.
      discount: float32 ``[B]``, ``gamma^m``, or 0 if the window ended in termination.
      next_obs: pytree of ``[B, k, *frame]`` stacks at slot ``p + m``.
      next_prev_actions: int32 ``[B, h]``, as ``prev_actions`` for slot ``p + m``.
      n_steps: int32 ``[B]``, ``m`` (steps actually summed, <= n_step).
      indices: int32 ``[B]`` flat leaf indices ``stream * C + ring_index``, to pass to
        :meth:`DeviceReplay.set_priorities`.
      weights: float32 ``[B]`` importance weights, max-normalised within the batch
        (all 1 in uniform mode).
      is_demo: bool ``[B]``, the start slot comes from a recorded demonstration.
      is_expert: bool ``[B]``, an expert policy took the start slot's action.
    """

    obs: Any
    prev_actions: jax.Array
    action: jax.Array
    reward: jax.Array
    discount: jax.Array
    next_obs: Any
    next_prev_actions: jax.Array
    n_steps: jax.Array
    indices: jax.Array
    weights: jax.Array
    is_demo: jax.Array
    is_expert: jax.Array


@dataclasses.dataclass(frozen=True)
class DeviceReplay:
    """Replay buffer of E per-stream rings on device, with optional proportional PER.

    All methods are pure functions of a :class:`ReplayState`; jit them with this object
    closed over, e.g. ``add = jax.jit(replay.add, donate_argnums=0)`` and
    ``sample = jax.jit(replay.sample, static_argnames="batch_size")``.

    A start position p of a stream is sampleable after ``count`` adds of its group iff
    ``valid[p]``, ``p <= count - 1 - n_step`` (its n future slots exist) and
    ``p >= count - C + H`` with ``H = max(frame_stack - 1, action_history)`` (its
    frame and action history is not overwritten). The sum tree keeps exactly these
    leaves positive.

    With ``num_groups = G > 1`` the E streams form G groups of ``E_g = E / G``
    consecutive streams (group g: streams ``g * E_g .. (g + 1) * E_g - 1``), each written
    by its own :meth:`add` calls (``group=g``) at its own pace, e.g. one group per actor
    of a distributed run; all share one sum tree, so sampling and PER span every group.

    Attributes:
      num_streams: E, env streams in all (>= 1).
      capacity_per_stream: C, ring size per stream; must exceed ``n_step + H + 1``
        (``n_step + frame_stack`` without action history).
      frame_stack: k, frames per stacked observation (>= 1).
      n_step: n, steps summed in the return (>= 1).
      gamma: per-step discount in [0, 1].
      prioritized: proportional PER (Schaul et al. 2016) if True, else uniform.
      priority_exponent: alpha in [0, inf); leaf = (priority + eps) ** alpha.
      priority_eps: eps > 0 added to priorities so a zero |TD| stays sampleable.
      action_history: h >= 0, previous actions rebuilt per transition
        (:attr:`Batch.prev_actions`); h > 0 needs scalar integer actions.
      num_groups: G >= 1, dividing E; groups of streams written independently, each
        :meth:`add` call writes the ``E_g = E / G`` streams of one group.
      stratified: one draw per equal segment of the sampling mass (Schaul et al. 2016,
        App. B.2.1) if True, else i.i.d. draws (``sum_tree.sample``).
    """

    num_streams: int
    capacity_per_stream: int
    frame_stack: int
    n_step: int
    gamma: float
    prioritized: bool
    priority_exponent: float = 0.6
    priority_eps: float = 1e-6
    action_history: int = 0
    num_groups: int = 1
    stratified: bool = True

    def __post_init__(self):
        def check_int(name, low):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")

        check_int("num_streams", 1)
        check_int("frame_stack", 1)
        check_int("n_step", 1)
        check_int("capacity_per_stream", 1)
        check_int("action_history", 0)
        check_int("num_groups", 1)
        if self.num_streams % self.num_groups:
            raise ValueError(
                f"num_groups must divide num_streams={self.num_streams}, got {self.num_groups}"
            )
        if self.capacity_per_stream <= self.n_step + self.history + 1:
            raise ValueError(
                f"capacity_per_stream must be > n_step + max(frame_stack - 1, action_history)"
                f" + 1 = {self.n_step + self.history + 1}, got {self.capacity_per_stream}"
            )
        if not 0.0 <= float(self.gamma) <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma!r}")
        for name in ("prioritized", "stratified"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not 0.0 <= float(self.priority_exponent) < float("inf"):
            raise ValueError(
                f"priority_exponent must be finite and >= 0, got {self.priority_exponent!r}"
            )
        if not 0.0 < float(self.priority_eps) < float("inf"):
            raise ValueError(f"priority_eps must be finite and > 0, got {self.priority_eps!r}")

    # ------------------------------------------------------------------ state
    @property
    def num_leaves(self) -> int:
        """E * C, number of sum-tree leaves in use (Python int)."""
        return self.num_streams * self.capacity_per_stream

    @property
    def streams_per_group(self) -> int:
        """E_g = E / G, streams written by one :meth:`add` call (Python int)."""
        return self.num_streams // self.num_groups

    @property
    def history(self) -> int:
        """H = max(frame_stack - 1, action_history): slots a transition reads back (int)."""
        return max(self.frame_stack - 1, self.action_history)

    def init(self, obs_example: Any, action_example: Any) -> ReplayState:
        """Builds an empty state.

        Args:
          obs_example: ONE slot's observation (pytree of arrays, no env axis), e.g.
            uint8 ``[84, 84]``; only shapes and dtypes are used.
          action_example: ONE slot's action, e.g. ``jnp.int32(0)`` or float32 ``[d]``;
            a scalar integer when ``action_history > 0``.

        Returns:
          A :class:`ReplayState` with zeroed rings, zero sum tree, ``max_priority=1``,
          ``demo_weight=1`` and ``count`` zeros ``[G]``.

        Raises:
          ValueError: if ``action_history > 0`` and the action is not a scalar integer.
        """
        action = jnp.asarray(action_example)
        scalar_int = action.shape == () and jnp.issubdtype(action.dtype, jnp.integer)
        if self.action_history and not scalar_int:
            raise ValueError(
                f"action_history={self.action_history} needs scalar integer actions, got "
                f"{action.dtype}{list(action.shape)}"
            )
        lead = (self.num_streams, self.capacity_per_stream)

        def ring(x):
            x = jnp.asarray(x)
            return jnp.zeros(lead + x.shape, x.dtype)

        return ReplayState(
            obs=jax.tree.map(ring, obs_example),
            action=ring(action_example),
            reward=jnp.zeros(lead, jnp.float32),
            terminated=jnp.zeros(lead, jnp.bool_),
            truncated=jnp.zeros(lead, jnp.bool_),
            valid=jnp.zeros(lead, jnp.bool_),
            steps_since_start=jnp.zeros(lead, jnp.int32),
            is_demo=jnp.zeros(lead, jnp.bool_),
            is_expert=jnp.zeros(lead, jnp.bool_),
            sum_tree=sum_tree.init(self.num_leaves),
            max_priority=jnp.ones((), jnp.float32),
            demo_weight=jnp.ones((), jnp.float32),
            count=jnp.zeros((self.num_groups,), jnp.int32),
        )

    # -------------------------------------------------------------------- add
    def _group_start(self, group: int | jax.Array) -> tuple[int | jax.Array, int | jax.Array]:
        """``(group, first stream)`` of a group: Python ints stay Python ints (so the
        indexing they drive is static), anything else becomes an int32 scalar.

        Raises:
          ValueError: a Python int group outside ``[0, G)`` (a traced one cannot be
            checked inside jit; out of range, what is written is unspecified).
          AssertionError (chex, at trace time): a traced group that is not a scalar.
        """
        if isinstance(group, (bool, np.bool_)):
            raise ValueError(f"group must be an int in [0, {self.num_groups}), got {group!r}")
        if isinstance(group, (int, np.integer)):
            if not 0 <= group < self.num_groups:
                raise ValueError(f"group must be an int in [0, {self.num_groups}), got {group!r}")
            return int(group), int(group) * self.streams_per_group
        group = jnp.asarray(group, jnp.int32)
        chex.assert_shape(group, ())
        return group, group * self.streams_per_group

    def add(
        self,
        state: ReplayState,
        obs: Any,
        action: jax.Array,
        reward: jax.Array,
        terminated: jax.Array,
        truncated: jax.Array,
        valid: jax.Array,
        steps_since_start: jax.Array,
        is_demo: jax.Array | None = None,
        is_expert: jax.Array | None = None,
        group: int | jax.Array = 0,
    ) -> ReplayState:
        """Writes one slot per stream of ``group`` at ring index ``count[group] % C`` and
        updates the tree.

        Args:
          state: current state (donate it when jitting: ``donate_argnums=0``).
          obs: pytree of ``[E_g, *frame]`` (o_t, the observation a_t was chosen at).
          action: ``[E_g, *action_shape]``.
          reward: ``[E_g]`` reward after a_t.
          terminated: bool ``[E_g]``.
          truncated: bool ``[E_g]``.
          valid: bool ``[E_g]``; False for autoreset slots (obs = final observation).
          steps_since_start: int ``[E_g]``.
          is_demo: bool ``[E_g]``, the slot comes from a demonstration (None: all False).
          is_expert: bool ``[E_g]``, an expert policy took ``action`` (None: all False).
          group: which group's streams (``group * E_g ..``) the rows are for: a Python
            int or an int32 scalar, which may be traced (jit it as an ordinary argument:
            one compilation serves every group). Always 0 when ``num_groups == 1``.

        Every input is cast to the stored dtype. ``E_g`` = :attr:`streams_per_group`
        (= E when ``num_groups == 1``).

        Returns:
          The new state, ``count[group]`` one higher and the other groups untouched. With
          ``t = count[group]``, for each stream of the group: the leaf of position
          ``t - n_step`` (which now has its n future slots) is set to
          ``max_priority ** alpha`` (1 if uniform), times ``demo_weight`` if it is a demo
          slot, when valid; leaves ``t .. t + H`` (mod C, ``H`` = :attr:`history`) are
          zeroed: the new slot has no future yet and the oldest H positions just lost the
          start of their frame or action history.

        Raises:
          AssertionError (chex, at trace time): if a leading axis is not E_g.
          ValueError: a Python int ``group`` outside ``[0, num_groups)``.
        """
        per_group = self.streams_per_group
        chex.assert_tree_shape_prefix(
            (obs, action, reward, terminated, truncated, valid, steps_since_start),
            (per_group,),
        )
        is_demo, is_expert = (jnp.zeros((per_group,), jnp.bool_) if flags is None else flags
                              for flags in (is_demo, is_expert))
        chex.assert_shape((reward, terminated, truncated, valid, steps_since_start, is_demo,
                           is_expert), (per_group,))
        group, first = self._group_start(group)
        write = state.count[group] % self.capacity_per_stream

        def put(ring, x):
            return _write_column(ring, x, first, write)

        new_valid = put(state.valid, valid)
        new_is_demo = put(state.is_demo, is_demo)
        indices, values = self._leaf_updates(state, new_valid, new_is_demo, group, first)
        return state.replace(
            obs=jax.tree.map(put, state.obs, obs),
            action=put(state.action, action),
            reward=put(state.reward, reward),
            terminated=put(state.terminated, terminated),
            truncated=put(state.truncated, truncated),
            valid=new_valid,
            steps_since_start=put(state.steps_since_start, steps_since_start),
            is_demo=new_is_demo,
            is_expert=put(state.is_expert, is_expert),
            sum_tree=sum_tree.set(state.sum_tree, indices, values),
            count=state.count.at[group].add(1),
        )

    def _leaf_updates(self, state: ReplayState, new_valid: jax.Array, new_is_demo: jax.Array,
                      group: int | jax.Array, first: int | jax.Array
                      ) -> tuple[jax.Array, jax.Array]:
        """Sum-tree (flat indices int32, values float32) of :meth:`add` at
        ``state.count[group]`` for the E_g streams from ``first`` on: the leaf that now
        has its n future slots (only if ``new_valid`` there), and zeros for the written
        slot and the H oldest positions. ``new_valid`` / ``new_is_demo``: the rings after
        the write; ``group`` / ``first`` from :meth:`_group_start`."""
        capacity, per_group = self.capacity_per_stream, self.streams_per_group
        t = state.count[group]
        streams = (first + jnp.arange(per_group, dtype=jnp.int32)) * capacity

        def rows(column):  # [E] -> the group's [E_g]
            return jax.lax.dynamic_slice_in_dim(column, first, per_group)

        # Position t - n now has its n future slots.
        ready_ring = (t - self.n_step) % capacity
        ready = (t >= self.n_step) & rows(new_valid[:, ready_ring])
        fresh = (
            state.max_priority ** jnp.float32(self.priority_exponent)
            if self.prioritized
            else jnp.float32(1.0)
        )
        ready_values = jnp.where(
            ready, fresh * self._demo_factor(state, rows(new_is_demo[:, ready_ring])), 0.0)
        # The written slot and the H oldest positions are no longer sampleable.
        stale_rings = (t + jnp.arange(self.history + 1, dtype=jnp.int32)) % capacity
        stale_idx = (streams[:, None] + stale_rings[None, :]).reshape(-1)
        # C > n + H + 1 guarantees the two index sets never overlap.
        indices = jnp.concatenate([streams + ready_ring, stale_idx])
        values = jnp.concatenate([ready_values, jnp.zeros(stale_idx.shape, jnp.float32)])
        return indices, values

    def add_sequence(self, state: ReplayState, slots: dict[str, Any],
                     group: int | jax.Array = 0) -> ReplayState:
        """Applies :meth:`add` to L consecutive vector steps of one group in one
        ``lax.scan``.

        Used to inject recorded demonstrations without one host round trip per step.

        Args:
          state: current state.
          slots: dict of :meth:`add`'s keyword arguments (``obs`` .. ``is_expert``), each
            with leading axes ``[L, E_g]``.
          group: as in :meth:`add` (Python int or int32 scalar, may be traced).

        Returns:
          The state after the L adds (``count[group]`` grows by L).
        """

        def step(carry, slot):
            return self.add(carry, **slot, group=group), None

        state, _ = jax.lax.scan(step, state, slots)
        return state

    def drop_partial_episodes(self, state: ReplayState, group: int | jax.Array,
                              streams: jax.Array | None = None) -> ReplayState:
        """Makes the episodes in progress in ``group``'s streams unsampleable, for good.

        Call it when the actor writing the group died or was restarted (or, for the
        ``streams`` given, when an env's episode was cut by a bad value): its envs start
        again from fresh resets in the same streams, so the next slot of a stream opens a
        new episode right after a slot of the old one without the final-observation slot
        between. A transition of the old episode whose n-step window reached its last
        slot would then read the restarted actor's first episode as its future (returns,
        bootstrap observation) and mix two episodes. The earlier, whole episodes of the
        stream stay: their windows end at their own done flag.

        For each stream of the group, with ``p`` its last written position
        (``count[group] - 1``): nothing happens if ``count[group] == 0`` or ``valid[p]``
        is False (p is a final-observation slot: the episode had ended); otherwise the
        positions ``p - s .. p`` with ``s = min(steps_since_start[p], count[group] - 1,
        C - 1)`` (mod C; the slots of the running episode still stored) get
        ``valid = False`` and leaf 0. :meth:`add` readies a leaf only where ``valid``, so
        these positions are never sampled later either; their frames stay until
        overwritten but nothing reads them (the new episode's stacks and action history
        stop at its start, ``steps_since_start = 0``). Other groups are untouched, and so
        are ``count`` and the rings but ``valid``.

        Args:
          state: current state (may be donated when jitting).
          group: Python int or int32 scalar (may be traced: one compilation serves
            every group).
          streams: bool ``[E_g]``, the group's streams to drop (None: all of them).

        Returns:
          The new state; the group's E_g * C leaves are rewritten (O(E_g * C * log(E C))),
          so this is for restarts, not for every step.

        Raises:
          ValueError: a Python int ``group`` outside ``[0, num_groups)``.
        """
        capacity, per_group = self.capacity_per_stream, self.streams_per_group
        group, first = self._group_start(group)
        t = state.count[group]
        last = (t - 1) % capacity

        def rows(ring):  # [E, C] -> the group's [E_g, C]
            return jax.lax.dynamic_slice_in_dim(ring, first, per_group, axis=0)

        valid = rows(state.valid)
        running = (t > 0) & valid[:, last]  # [E_g]: an episode is in progress
        if streams is not None:
            running &= jnp.asarray(streams, bool)
        since = rows(state.steps_since_start)[:, last]
        back = jnp.minimum(jnp.minimum(since, t - 1), capacity - 1)  # [E_g]
        rings = jnp.arange(capacity, dtype=jnp.int32)
        offset = (last - rings) % capacity  # [C]: slots back from the last one
        drop = running[:, None] & (offset[None, :] <= back[:, None])  # [E_g, C]

        streams = first + jnp.arange(per_group, dtype=jnp.int32)
        indices = (streams[:, None] * capacity + rings[None, :]).reshape(-1)
        values = jnp.where(drop.reshape(-1), 0.0, sum_tree.get(state.sum_tree, indices))
        return state.replace(
            valid=jax.lax.dynamic_update_slice_in_dim(state.valid, valid & ~drop, first, axis=0),
            sum_tree=sum_tree.set(state.sum_tree, indices, values),
        )

    def _demo_factor(self, state: ReplayState, is_demo: jax.Array) -> jax.Array:
        """float32, ``demo_weight`` where ``is_demo`` else 1 (same shape as ``is_demo``)."""
        return jnp.where(is_demo, state.demo_weight, jnp.float32(1.0))

    def set_demo_weight(self, state: ReplayState, weight: float | jax.Array) -> ReplayState:
        """Sets the demo sampling weight: every sampleable demo leaf is rescaled by
        ``weight / demo_weight``, so a demo position is drawn ``weight`` times as often as
        a non-demo one of equal priority (seed 004's DEMO_SAMPLING_WEIGHT, decayed by the
        caller with :func:`rl.schedules.demo_sampling_weight`).

        The importance weights of :meth:`sample` do not undo this bias; they correct
        only the priorities.

        Args:
          state: current state.
          weight: float scalar > 0 (may be traced; not checked inside jit).

        Returns:
          The new state; its whole sum tree is rebuilt from the leaves (O(E * C)), so
          call it once per log interval, not per step.
        """
        weight = jnp.asarray(weight, jnp.float32)
        leaves = sum_tree.get(state.sum_tree, jnp.arange(self.num_leaves, dtype=jnp.int32))
        demo = state.is_demo.reshape(-1)
        leaves = jnp.where(demo, leaves * (weight / state.demo_weight), leaves)
        return state.replace(sum_tree=sum_tree.build(leaves), demo_weight=weight)

    # ----------------------------------------------------------------- sample
    def _stack(self, state: ReplayState, stream: jax.Array, ring_index: jax.Array) -> Any:
        """Stacked obs ``[B, k, *frame]`` at ring positions ``ring_index`` ``[B]``.

        Frame i (oldest first) comes from offset ``min(k - 1 - i, steps_since_start)``
        back, so history before the episode start repeats the reset frame.
        """
        capacity = self.capacity_per_stream
        back = jnp.arange(self.frame_stack - 1, -1, -1, dtype=jnp.int32)  # [k]
        since = state.steps_since_start[stream, ring_index]  # [B]
        offset = jnp.minimum(back[None, :], since[:, None])  # [B, k]
        pos = (ring_index[:, None] - offset) % capacity
        return jax.tree.map(lambda leaf: leaf[stream[:, None], pos], state.obs)

    def _prev_actions(
        self, state: ReplayState, stream: jax.Array, ring_index: jax.Array
    ) -> jax.Array:
        """int32 ``[B, h]`` actions before ring positions ``ring_index`` ``[B]``.

        Entry i (oldest first) is the action ``h - i`` slots back, or -1 when that is
        before the episode start (``h - i > steps_since_start``).
        """
        h = self.action_history
        if h == 0:
            # Always present so the Batch pytree structure does not depend on h.
            return jnp.zeros(ring_index.shape + (0,), jnp.int32)
        back = jnp.arange(h, 0, -1, dtype=jnp.int32)  # [h]
        since = state.steps_since_start[stream, ring_index]  # [B]
        pos = (ring_index[:, None] - back[None, :]) % self.capacity_per_stream
        actions = state.action[stream[:, None], pos].astype(jnp.int32)
        return jnp.where(back[None, :] <= since[:, None], actions, -1)

    def _gather(self, state: ReplayState, indices: jax.Array) -> Batch:
        """Builds n-step transitions for flat leaf ``indices`` ``[B]`` (weights = 1).

        Only meaningful for sampleable positions (positive leaves).
        """
        capacity, n = self.capacity_per_stream, self.n_step
        indices = jnp.asarray(indices, jnp.int32)
        stream = indices // capacity
        start = indices % capacity

        ahead = (start[:, None] + jnp.arange(n, dtype=jnp.int32)[None, :]) % capacity
        rewards = state.reward[stream[:, None], ahead]  # [B, n]
        term = state.terminated[stream[:, None], ahead]
        done = term | state.truncated[stream[:, None], ahead]
        # m = index of the first done + 1, or n if no done in the window.
        m = jnp.where(done.any(axis=1), jnp.argmax(done, axis=1) + 1, n).astype(jnp.int32)
        powers = jnp.asarray(np.float32(self.gamma) ** np.arange(n + 1, dtype=np.float32))
        in_window = jnp.arange(n)[None, :] < m[:, None]
        n_step_reward = jnp.sum(jnp.where(in_window, powers[None, :n] * rewards, 0.0), axis=1)
        ended_terminal = jnp.take_along_axis(term, (m - 1)[:, None], axis=1)[:, 0]
        discount = jnp.where(ended_terminal, 0.0, powers[m])

        bootstrap = (start + m) % capacity
        return Batch(
            obs=self._stack(state, stream, start),
            prev_actions=self._prev_actions(state, stream, start),
            action=state.action[stream, start],
            reward=n_step_reward.astype(jnp.float32),
            discount=discount.astype(jnp.float32),
            next_obs=self._stack(state, stream, bootstrap),
            next_prev_actions=self._prev_actions(state, stream, bootstrap),
            n_steps=m,
            indices=indices,
            weights=jnp.ones(indices.shape, jnp.float32),
            is_demo=state.is_demo[stream, start],
            is_expert=state.is_expert[stream, start],
        )

    def sample(
        self,
        state: ReplayState,
        key: jax.Array,
        batch_size: int,
        importance_exponent: float | jax.Array,
    ) -> Batch:
        """Samples ``batch_size`` n-step transitions (with replacement; stratified or
        i.i.d., :attr:`stratified`).

        Start i is drawn with probability ``P(i) = leaf_i / total`` (uniform over
        sampleable positions when ``prioritized=False``). Importance weights follow
        Schaul et al. 2016, Sec. 3.4: ``w_i = (N * P(i)) ** (-beta) / max_j w_j``, with
        N = :meth:`size` and beta = ``importance_exponent`` (annealed by the learner),
        where P(i) leaves out the demo weight: the demo bias is deliberate and is not
        importance-corrected (``w_i ∝ ((p_i + eps) ** alpha) ** (-beta)``).

        Args:
          state: current state; must satisfy :meth:`can_sample`, else the batch is
            garbage (no error can be raised inside jit).
          key: PRNG key.
          batch_size: static Python int B.
          importance_exponent: beta, float scalar (may be traced).

        Returns:
          A :class:`Batch` (see its docstring for shapes).
        """
        indices = sum_tree.sample(state.sum_tree, key, batch_size, self.stratified)
        batch = self._gather(state, indices)
        if not self.prioritized:
            return batch
        priority = sum_tree.get(state.sum_tree, indices) / self._demo_factor(state, batch.is_demo)
        # Log space avoids overflow of (N P)^-beta; the max-normalisation cancels N / total,
        # so only the priority term is left.
        log_w = -jnp.asarray(importance_exponent, jnp.float32) * jnp.log(priority)
        weights = jnp.exp(log_w - jnp.max(log_w))
        return batch.replace(weights=weights.astype(jnp.float32))

    # ------------------------------------------------------------- priorities
    def set_priorities(
        self, state: ReplayState, indices: jax.Array, priorities: jax.Array
    ) -> ReplayState:
        """Stores ``(priority + eps) ** alpha`` at flat ``indices`` (Schaul et al. 2016).

        Demo slots get that times ``demo_weight``. Leaves that are currently 0 (no longer
        sampleable, e.g. overwritten since they were sampled) are left at 0.
        ``max_priority`` becomes
        ``max(max_priority, max(priorities + eps))``. A no-op when uniform.

        Args:
          state: current state.
          indices: int32 ``[B]`` from :attr:`Batch.indices`.
          priorities: float ``[B]`` non-negative, typically |TD error|.

        Returns:
          The new state.
        """
        if not self.prioritized:
            return state
        indices = jnp.asarray(indices, jnp.int32)
        priorities = jnp.asarray(priorities, jnp.float32) + jnp.float32(self.priority_eps)
        demo = state.is_demo.reshape(-1)[indices]
        values = priorities ** jnp.float32(self.priority_exponent) * self._demo_factor(state, demo)
        alive = sum_tree.get(state.sum_tree, indices) > 0
        values = jnp.where(alive, values, 0.0)
        return state.replace(
            sum_tree=sum_tree.set(state.sum_tree, indices, values),
            max_priority=jnp.maximum(state.max_priority, jnp.max(priorities)),
        )

    # ------------------------------------------------------------------ sizes
    def size(self, state: ReplayState) -> jax.Array:
        """Stored slots, ``sum_g E_g * min(count[g], C)``, as int32 scalar (N in the IS
        weights)."""
        stored = jnp.minimum(state.count, self.capacity_per_stream)
        return jnp.sum(self.streams_per_group * stored, dtype=jnp.int32)

    def num_sampleable(self, state: ReplayState) -> jax.Array:
        """Number of positions that can start a transition (positive leaves), int32."""
        leaves = state.sum_tree[sum_tree.num_leaves_capacity(state.sum_tree) :]
        return jnp.sum(leaves > 0, dtype=jnp.int32)

    def can_sample(self, state: ReplayState, batch_size: int | None = None) -> jax.Array:
        """Whether :meth:`sample` is meaningful: bool scalar, ``total > 0``.

        ``batch_size`` is accepted for interface symmetry; sampling is with
        replacement, so any batch size works once one position is sampleable.
        """
        del batch_size
        return sum_tree.total(state.sum_tree) > 0
