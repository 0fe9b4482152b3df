"""Weights & Biases beside TensorBoard (launch/wandb_log.py), offline only (no network): a
run's scalars, videos, config and health alerts and its resume, read back from the W&B files
under RUN_DIR/wandb and compared with the TensorBoard event files; Ctrl-C; the missing
``[wandb]`` extra; disabled mode; launch/compare.py given W&B files."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from launch import compare, wandb_log
from launch import run as run_py
from launch.evaluation import VIDEO_TAG
from test_loop import CARTPOLE
from test_run_e2e import ROOT, run, scalars

# Lockstep: reproducible by seed, so a run with W&B off can be compared value by value.
# Q above 0.1 raises the divergence flag q_above_bound (health.on_divergence warn: no stop).
TINY = [*CARTPOLE, "--actors.mode", "lockstep", "--training.eval-interval", "150",
        "--training.eval-episodes", "1", "--health.q-bound", "0.1"]
VIDEOS = ["--logging.video-interval", "150"]
OFFLINE = ["--logging.wandb-project", "tmrl-jax-tests", "--logging.wandb-mode", "offline"]
BLOCK = 32 * 1024
"""Block size of W&B's record log (leveldb's log format)."""


@pytest.fixture(autouse=True, scope="module")
def wandb_sandbox(tmp_path_factory):
    """W&B's settings, cache and data directories in a temporary one, its console lines
    off and its server unreachable, for this module's runs (subprocesses inherit the
    variables)."""
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            patch.setenv(name, str(home / name.lower()))
        patch.setenv("WANDB_SILENT", "true")
        patch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # were a run online: no network
        patch.delenv("WANDB_API_KEY", raising=False)
        yield


def read_records(path: Path) -> list:
    """The records of a W&B record log (``run-<id>.wandb``): a 7-byte file header (':W&B',
    magic, version), then blocks of 32 KiB holding chunks with a 7-byte header (CRC-32,
    length, type 1 full / 2 first / 3 middle / 4 last) that make up protobuf Records; a
    block's tail too short for a header is padding."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    records, chunks, pos = [], [], 7
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zeros past the last record
            break
        chunks.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(b"".join(chunks)))
            chunks = []
    return records


def wandb_parts(run_dir: Path) -> list[list]:
    """The records of each offline W&B run under RUN_DIR/wandb (one per start), oldest
    first."""
    dirs = sorted((run_dir / "wandb").glob("offline-run-*"))
    return [read_records(next(d.glob("run-*.wandb"))) for d in dirs]


def of_type(records: list, kind: str) -> list:
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def history_rows(records: list) -> list[dict]:
    """The logged rows, W&B's own keys (``_step``, ``_runtime``, ...) left out; a media value
    (a video: nested keys [tag, field]) is the dict of its fields (``_type``, ``path``, ...)."""
    rows = []
    for history in of_type(records, "history"):
        row: dict = {}
        for item in history.item:
            key, *field = [item.key] if item.key else list(item.nested_key)
            value = json.loads(item.value_json)
            if field:
                row.setdefault(key, {})[field[0]] = value
            else:
                row[key] = value
        rows.append({key: value for key, value in row.items() if not key.startswith("_")})
    return rows


def wandb_scalars(rows: list[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """tag -> (env steps, values) of the rows, sorted by step in write order (as
    ``compare.load_run`` sorts the TensorBoard points)."""
    points: dict[str, list] = {}
    for row in rows:
        row = dict(row)
        step = row.pop(wandb_log.STEP_METRIC)
        for tag, value in row.items():
            if not isinstance(value, dict):  # media are not scalars
                points.setdefault(tag, []).append((step, value))
    out = {}
    for tag, kept in points.items():
        array = np.asarray(kept, dtype=np.float64)
        array = array[np.argsort(array[:, 0], kind="stable")]
        out[tag] = (array[:, 0].astype(np.int64), array[:, 1])
    return out


def run_config(records: list) -> dict:
    (run_record,) = of_type(records, "run")
    return {u.key: json.loads(u.value_json) for u in run_record.config.update
            if u.key != "_wandb"}


def assert_same_scalars(run_dir: Path, parts: list[list]) -> dict:
    """The W&B rows of all parts hold the scalars of the run's TensorBoard event files: the
    same tags, steps (in the same order) and values; returns them (tag -> steps, values)."""
    tensorboard = compare.load_run(run_dir)
    assert tensorboard.superseded == 0  # a resume wrote no step twice: every point counts
    logged = wandb_scalars([row for part in parts for row in history_rows(part)])
    assert sorted(logged) == sorted(tensorboard.scalars)
    for tag, (steps, values) in logged.items():
        np.testing.assert_array_equal(steps, tensorboard.scalars[tag].steps, err_msg=tag)
        np.testing.assert_array_equal(values.astype(np.float32),  # TensorBoard keeps float32
                                      tensorboard.scalars[tag].values, err_msg=tag)
    return logged


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory) -> dict:
    """An offline W&B run of 300 env steps with a video every 150: its directory and
    TensorBoard scalars."""
    run_dir = tmp_path_factory.mktemp("wandb") / "run"
    run(*TINY, *OFFLINE, *VIDEOS, "--total-steps", "300", "--run-dir", str(run_dir))
    return dict(run_dir=run_dir, tensorboard=compare.load_run(run_dir).scalars)


def test_offline_run_logs_the_tensorboard_scalars_config_and_health_alerts(offline_run):
    run_dir = offline_run["run_dir"]
    (records,) = wandb_parts(run_dir)
    logged = assert_same_scalars(run_dir, [records])
    assert {"train/loss", "episode/return", "eval/return_mean", "perf/env_steps_per_sec",
            "health/q_above_bound"} <= set(logged)
    assert list(logged["eval/return_mean"][0]) == [150, 300]
    rows = history_rows(records)
    # Out-of-order steps are kept: an evaluation is logged at its multiple of 150 after the
    # step that passed it.
    back = [row for before, row in zip(rows, rows[1:])
            if row[wandb_log.STEP_METRIC] < before[wandb_log.STEP_METRIC]]
    assert back and all("eval/return_mean" in row for row in back)
    # A log interval's scalars are one row, not one row per scalar.
    assert any({"train/loss", "charts/epsilon", "perf/env_steps_per_sec"} <= set(row)
               for row in rows)
    (metric,) = [m for m in of_type(records, "metric") if m.glob_name == "*"]
    assert metric.step_metric == wandb_log.STEP_METRIC  # every metric against env_step
    (run_record,) = of_type(records, "run")
    assert (run_record.project, run_record.display_name) == ("tmrl-jax-tests", "run")
    assert run_config(records) == json.loads((run_dir / "config.json").read_text())
    assert of_type(records, "exit")  # finished
    # Health: an alert per flag raised (health.json's events), divergence flags as errors.
    alerts = [(a.title, a.level) for a in of_type(records, "alert")]
    events = json.loads((run_dir / "health.json").read_text())["events"]
    raised = [e for e in events if e.get("raised")]
    assert raised and alerts == [(f"{e['name']} raised",
                                  "ERROR" if e["severity"] == "divergence" else "WARN")
                                 for e in raised]


def test_training_videos_go_to_wandb_as_the_mp4_files_at_their_env_steps(offline_run):
    run_dir = offline_run["run_dir"]
    (records,) = wandb_parts(run_dir)
    videos = [row for row in history_rows(records) if VIDEO_TAG in row]
    # A row of its own: the env step and the video.
    assert [sorted(row) for row in videos] == [[wandb_log.STEP_METRIC, VIDEO_TAG]] * 2
    assert [row[wandb_log.STEP_METRIC] for row in videos] == [150, 300]
    (files_dir,) = (run_dir / "wandb").glob("offline-run-*/files")
    for row in videos:
        media = row[VIDEO_TAG]
        assert media["_type"] == "video-file" and media["path"].endswith(".mp4")
        sent = (files_dir / media["path"]).read_bytes()
        assert sent == (run_dir / "videos" / f"{row[wandb_log.STEP_METRIC]}.mp4").read_bytes()
        assert media["size"] == len(sent)
        assert media["sha256"] == hashlib.sha256(sent).hexdigest()


def test_a_resumed_run_continues_the_same_wandb_run(offline_run, tmp_path):
    run_dir = tmp_path / "run"  # a copy: the other tests read the run as it was
    shutil.copytree(offline_run["run_dir"], run_dir, symlinks=True)
    run_id = (run_dir / wandb_log.RUN_ID_FILE).read_text().strip()
    run("--resume", str(run_dir), "--total-steps", "600")
    assert (run_dir / wandb_log.RUN_ID_FILE).read_text().strip() == run_id
    parts = wandb_parts(run_dir)
    assert len(parts) == 2
    assert [of_type(part, "run")[0].run_id for part in parts] == [run_id, run_id]
    assert all(of_type(part, "exit") for part in parts)
    # The scalars of both parts: the first up to its last checkpoint, the resume from there.
    assert_same_scalars(run_dir, parts)
    steps = [[row[wandb_log.STEP_METRIC] for row in history_rows(part)] for part in parts]
    assert 300 <= max(steps[0]) < min(steps[1]) and max(steps[1]) >= 600
    # The resume's config is the resolved one with its override.
    assert run_config(parts[1]) == json.loads((run_dir / "config.json").read_text())
    assert run_config(parts[1])["training"]["total_steps"] == 600


def test_ctrl_c_finishes_the_wandb_run_with_every_scalar(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch" / "run.py"), *TINY, *OFFLINE,
                             "--total-steps", "10000000", "--run-dir", str(run_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not (any(run_dir.glob("events.out.tfevents.*"))
                                          and "train/loss" in scalars(run_dir)):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    (records,) = wandb_parts(run_dir)
    assert of_type(records, "exit")
    assert "train/loss" in assert_same_scalars(run_dir, [records])


def test_compare_says_it_needs_the_tensorboard_files_of_a_wandb_run(offline_run, tmp_path):
    run_dir = offline_run["run_dir"]
    offline = next((run_dir / "wandb").glob("offline-run-*"))
    for given in (run_dir / "wandb", offline):
        with pytest.raises(compare.CompareError, match="holds Weights & Biases files, which "
                           "compare.py does not read") as error:
            compare.load_run(given)
        assert str(error.value).endswith(f"; pass {run_dir.resolve()}")
    # Without the run directory around them (copied away): no directory to point at.
    shutil.copytree(offline, tmp_path / "copy")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert compare.main([str(tmp_path / "copy"), "--out", str(tmp_path / "out")]) == 2
    assert "TensorBoard event files that launch/run.py writes" in err.getvalue()
    assert "; pass " not in err.getvalue() and not (tmp_path / "out").exists()


def test_without_the_wandb_package_a_project_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb fails
    run_dir = tmp_path / "run"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run_py.main([*TINY, *OFFLINE, "--total-steps", "100", "--run-dir", str(run_dir)])
    assert code == 2
    assert err.getvalue().startswith("error: invalid config value logging.wandb_project="
                                     "'tmrl-jax-tests': needs the wandb package")
    assert 'pip install -e ".[wandb]"' in err.getvalue() and not run_dir.exists()


def test_a_wandb_run_that_cannot_start_stops_the_run_before_training(tmp_path):
    """Online without an API key (and the server address unreachable anyway): exit 3 with
    W&B's reason and the way out, before any training step."""
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, str(ROOT / "launch" / "run.py"), *TINY,
                             "--logging.wandb-project", "tmrl-jax-tests", "--total-steps",
                             "100", "--run-dir", str(run_dir)], capture_output=True, text=True,
                            timeout=300, cwd=ROOT, stdin=subprocess.DEVNULL)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "W&B run could not start (logging.wandb_mode=online): No API key" in result.stderr
    assert "--logging.wandb-mode offline" in result.stderr and "Traceback" not in result.stderr
    assert not (run_dir / "checkpoints").exists() and not any(run_dir.glob("events.*"))


def test_disabled_mode_needs_no_wandb_writes_no_wandb_files_and_the_same_tensorboard(
        offline_run, tmp_path, monkeypatch):
    """W&B disabled, with the wandb package made unimportable: the run of the offline part
    again, by seed, gives the same TensorBoard scalars (timings aside) and no W&B files."""
    run_dir = tmp_path / "run"
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb fails
    # In this process: no interpreter and JAX start-up for a second run.
    assert run_py.main([*TINY, "--logging.wandb-project", "tmrl-jax-tests",
                        "--logging.wandb-mode", "disabled", "--total-steps", "300",
                        "--run-dir", str(run_dir)]) == 0
    assert not (run_dir / "wandb").exists() and not (run_dir / wandb_log.RUN_ID_FILE).exists()
    disabled, offline = compare.load_run(run_dir).scalars, offline_run["tensorboard"]
    assert sorted(disabled) == sorted(offline)
    for tag, scalar in disabled.items():
        np.testing.assert_array_equal(scalar.steps, offline[tag].steps, err_msg=tag)
        if not tag.startswith("perf/"):  # rates and time shares
            np.testing.assert_array_equal(scalar.values, offline[tag].values, err_msg=tag)
