"""Property-based config fuzzing (hypothesis) over every field of ``rl.config.Config``.

The fields and their types are read from the dataclasses, so a new field is fuzzed without
touching this file. Each config either builds, holding values of its declared types, or is
refused with a ``ConfigError`` that names the field; no other exception escapes. Configs
that build on a tiny learner run one jitted update.

Examples per test: ``TMRL_JAX_FUZZ_EXAMPLES`` (invalid values and command lines) and
``TMRL_JAX_FUZZ_VALID_EXAMPLES`` (valid combinations, each compiling an update) raise the
suite's small defaults for a long run; ``-s`` prints how many configs were tried, refused
and built.
"""

import collections
import contextlib
import dataclasses
import io
import math
import os
import types
import typing

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import test_learner_jit
import test_tqc
from launch import run
from rl import config as config_lib
from rl import presets
from rl.config import Config, ConfigError

INVALID_EXAMPLES = int(os.environ.get("TMRL_JAX_FUZZ_EXAMPLES", "300"))
VALID_EXAMPLES = int(os.environ.get("TMRL_JAX_FUZZ_VALID_EXAMPLES", "10"))
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow])

COUNTS = collections.Counter()
"""(test, outcome) -> configs, printed at the end of the module (``-s``)."""


def _fields(cls=Config, prefix=""):
    """Every field of ``cls`` as (dotted name, type hint), sections first, then recursing."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        name, hint = f"{prefix}{f.name}", hints[f.name]
        out.append((name, hint))
        if dataclasses.is_dataclass(hint):
            out += _fields(hint, f"{name}.")
    return out


FIELDS = _fields()
FIELD_NAMES = {name for name, _ in FIELDS}


def conforms(value, hint) -> bool:
    """Whether ``value`` is of type ``hint`` as a config holds it: bools are not numbers,
    floats are finite, tuples and dicts hold members of their element types. Written apart
    from rl/config.py's own type check on purpose: it is the oracle that check is tested
    against."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(conforms(value, h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is typing.Literal:
        return any(type(value) is type(a) and value == a for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(conforms(v, args[0]) for v in value)
        return len(value) == len(args) and all(map(conforms, value, args))
    if typing.get_origin(hint) is dict:
        key, val = typing.get_args(hint)
        return isinstance(value, dict) and all(
            conforms(k, key) and conforms(v, val) for k, v in value.items())
    if hint is type(None):
        return value is None
    if hint is bool:
        return type(value) is bool
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
    return isinstance(value, hint)


def _assert_conforms(cfg, cls=Config, prefix=""):
    """Every value of a built config is of its field's declared type."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value, hint = getattr(cfg, f.name), hints[f.name]
        assert conforms(value, hint), f"{prefix}{f.name}={value!r} built, but is not a {hint}"
        if dataclasses.is_dataclass(hint):
            _assert_conforms(value, hint, f"{prefix}{f.name}.")


def _names_field(error: ConfigError, field: str) -> bool:
    return error.field == field or field in str(error)


# --- invalid values through config.json (rl.config.from_dict) --------------------------

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                         st.floats(), st.text(max_size=12))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)
EDGE_NUMBERS = st.sampled_from([0, -1, 1, 2, 0.5, -0.5, 1e-300, 1e300, 2**63, -2**63,
                                math.nan, math.inf, -math.inf, True, False])


BAD_VALUES = st.one_of(JSON_VALUES, EDGE_NUMBERS,
                       st.lists(st.one_of(EDGE_NUMBERS, JSON_SCALARS), max_size=3))
"""Values for any field: any JSON value (mostly of a wrong type), numbers at and beyond the
usual range edges (NaN, inf, 0, negative, huge, bools), lists of such numbers."""


def _with(data: dict, field: str, value) -> dict:
    """A copy of the nested ``data`` with the dotted ``field`` set to ``value``."""
    head, _, rest = field.partition(".")
    return {**data, head: _with(data[head], rest, value) if rest else value}


BASES = {name: config_lib.to_dict(presets.get(name)) for name in ("iqn", "tqc", "iqn_tm20")}


@settings(max_examples=INVALID_EXAMPLES, **FUZZ)
@given(base=st.sampled_from(sorted(BASES)), field=st.sampled_from(FIELDS), data=st.data())
def test_any_value_of_any_field_builds_or_is_refused_naming_it(base, field, data):
    """config.json (``from_dict``, as ``--resume`` reads it) with one field of a preset set
    to a drawn value: the config builds and holds values of the declared types, or a
    ConfigError names that field."""
    name = field[0]
    value = data.draw(BAD_VALUES, label=name)
    COUNTS["from_dict", "tried"] += 1
    try:
        cfg = config_lib.from_dict(_with(BASES[base], name, value))
    except ConfigError as e:
        COUNTS["from_dict", "refused"] += 1
        assert _names_field(e, name), f"{name}={value!r} refused naming {e.field}: {e}"
        return
    COUNTS["from_dict", "built"] += 1
    _assert_conforms(cfg)


# --- invalid values on the command line (launch/run.py's main) --------------------------

CLI_TOKENS = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "-1", "0", "1", "2", "0.5", "1e400", "None",
                     "True", "false", "auto", "all", "[]", "{}", '{"a": 1}', "a:b", ""]),
    st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=8))
LEAVES = [(name, hint) for name, hint in FIELDS if not dataclasses.is_dataclass(hint)]


@settings(max_examples=max(INVALID_EXAMPLES // 20, 10), **FUZZ)
@given(field=st.sampled_from(LEAVES), tokens=st.lists(CLI_TOKENS, max_size=3))
def test_any_command_line_value_exits_0_or_2_before_work(field, tokens, tmp_path_factory):
    """``launch/run.py --print-config --section.field TOKENS``: main prints the config (exit
    0; --print-config starts no work) or refuses it with exit code 2 (SystemExit 2 where
    tyro itself rejects a token), one message naming the field; nothing else escapes."""
    name = field[0]
    flag = "--" + name.replace("_", "-")
    run_dir = tmp_path_factory.mktemp("run") / "run"
    argv = ["--algo", "iqn", "--env", "CartPole-v1", "--run-dir", str(run_dir),
            "--print-config", flag, *tokens]
    out, err = io.StringIO(), io.StringIO()
    COUNTS["run.main", "tried"] += 1
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = run.main(argv)
        except SystemExit as e:  # tyro's own parse errors (launch/cli.py parse)
            code = e.code
    COUNTS["run.main", {0: "built", 2: "refused"}.get(code, f"exit {code}")] += 1
    assert code in (0, 2), (argv, code, err.getvalue())
    assert "Traceback" not in err.getvalue(), err.getvalue()
    if "invalid config value" in err.getvalue():
        assert name in err.getvalue(), (argv, err.getvalue())
    assert not run_dir.exists()


# --- random combinations of valid values: build, then one jitted update ---------------

UPDATE_SECTIONS = ("network", "agent", "tqc", "replay")
"""The sections the update reads; the base preset picks the learner (agent.learner) and the
tiny env fitting it, the other sections keep its values."""
UPDATE_FIELDS = [(name, hint) for name, hint in FIELDS
                 if name.split(".")[0] in UPDATE_SECTIONS and "." in name
                 and name != "agent.learner"]
TINY = {"iqn": lambda: test_learner_jit.tiny("iqn", network=dict(torso="auto")),
        "iqn_btr": lambda: test_learner_jit.tiny("iqn_btr"),
        "dqn": lambda: test_learner_jit.tiny("dqn", network=dict(torso="auto")),
        "rainbow": lambda: test_learner_jit.tiny("rainbow", network=dict(torso="auto")),
        "tqc": test_tqc.tiny}


def good_values(hint, default):
    """Values of type ``hint``, small so that networks stay tiny: the base's own value,
    every Literal choice, booleans, ints 1..3, a few floats in and at the edges of the
    usual ranges, None where allowed, lists of 1..2 small widths."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return st.one_of(*(good_values(h, default) for h in typing.get_args(hint)))
    if typing.get_origin(hint) is typing.Literal:
        return st.sampled_from(typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple)
    if hint is bool:
        return st.booleans()
    if hint is int:
        return st.sampled_from([default, 1, 2, 3])
    if hint is float:
        return st.sampled_from([default, 0.0, 1e-3, 0.5, 0.99, 1.0, -1.0])
    if hint is type(None):
        return st.none()
    return st.just(default)


def _get(cfg, name):
    for part in name.split("."):
        cfg = getattr(cfg, part)
    return cfg


# No shrinking: each example compiles an update, and the failing one is printed as drawn.
@settings(max_examples=VALID_EXAMPLES, phases=(Phase.explicit, Phase.generate), **FUZZ)
@given(base=st.sampled_from(sorted(TINY)), image=st.booleans(),
       fields=st.lists(st.sampled_from(UPDATE_FIELDS), min_size=1, max_size=6,
                       unique_by=lambda f: f[0]), data=st.data())
def test_valid_combinations_build_and_update_or_are_refused(base, image, fields, data):
    """A tiny preset with up to 6 fields of the update's sections set to drawn values of
    their types: it is refused with a ConfigError naming a field (or, for a torso that does
    not fit the observations, the ValueError naming network.torso that launch/run.py turns
    into exit code 2), or it builds, and one jitted update on a replay of random
    transitions runs and leaves the train state finite (non-finite grad steps are
    skipped)."""
    cfg = TINY[base]()
    changes = collections.defaultdict(dict)
    for name, hint in fields:
        section, field = name.split(".")
        changes[section][field] = data.draw(good_values(hint, _get(cfg, name)), label=name)
    COUNTS["update", "tried"] += 1
    try:
        cfg = presets.replace(cfg, **changes)
        if cfg.agent.learner == "tqc":
            agent, state, replay_state = test_tqc.filled(cfg)
        else:
            agent, state, replay_state = test_learner_jit.filled(cfg, image=image)
    except ConfigError as e:
        COUNTS["update", "refused"] += 1
        assert e.field in FIELD_NAMES, e
        return
    except ValueError as e:
        COUNTS["update", "refused"] += 1
        assert str(e).startswith("network.torso="), e
        return
    COUNTS["update", "built"] += 1
    update = jax.jit(agent.update, donate_argnums=(0, 1))
    state, _, metrics = update(state, replay_state, jnp.float32(0.5))
    assert all(np.shape(v) == () for v in metrics.values())
    chex.assert_tree_all_finite([x for x in jax.tree.leaves(state)
                                 if jnp.issubdtype(x.dtype, jnp.floating)])


@pytest.fixture(autouse=True, scope="module")
def _report_counts():
    """Prints the configs tried / refused / built per test (``pytest -s``)."""
    yield
    for test in sorted({test for test, _ in COUNTS}):
        print(f"\n{test}: " + ", ".join(f"{outcome} {n}" for (t, outcome), n
                                        in sorted(COUNTS.items()) if t == test))
