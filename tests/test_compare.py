"""launch/compare.py on synthetic event files with known values and wall times.

Three runs (wall time T0 + 60 * minute):
  alpha  IQN-like, last step 1000, 50 min: eval/return_mean 1, 3, 2, 5, 4 at steps 200..1000
         (minutes 10..50); 30 episodes; train/loss k at step 100k (minute 5k); busy 0.608.
  beta   last step 600, 80 min: eval 2, 6, 4 at steps 200, 400, 600 (minutes 25, 50, 80);
         train/loss 10k at step 100k; busy 0.893.
  gamma  TQC-like, last step 800, 100 min: train/critic_loss 0.5k, train/q_taken_mean 2k.
alpha is the longer run by step but the shorter by time: the common window is step 600
(beta) and 50 minutes (alpha).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboardX import SummaryWriter

from launch import compare

T0 = 1_600_000_000.0  # before the writers' own opening records (real time), as in a real run
ROOT = Path(__file__).resolve().parents[1]


def _write(logdir: Path, points: dict[str, list[tuple[int, float, float]]],
           suffix: str = "", purge_step: int | None = None) -> None:
    """points: tag -> [(step, value, minute)], written tag by tag in list order."""
    writer = SummaryWriter(str(logdir), filename_suffix=suffix, purge_step=purge_step)
    for tag, rows in points.items():
        for step, value, minute in rows:
            writer.add_scalar(tag, value, step, walltime=T0 + 60.0 * minute)
    writer.close()


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    episodes = [(10 * i, float(i) if i <= 25 else 0.0, 0.5 * i) for i in range(1, 31)]
    _write(root / "alpha", {
        "charts/epsilon": [(0, 1.0, 0.0)],
        "eval/return_mean": [(200 * k, v, 10.0 * k) for k, v in enumerate([1, 3, 2, 5, 4], 1)],
        "episode/return": episodes,
        "train/loss": [(100 * k, float(k), 5.0 * k) for k in range(1, 11)],
        "train/q_mean": [(100 * k, -k / 10, 5.0 * k) for k in range(1, 11)],
        "perf/learner_busy_share": [(100 * k, 0.608, 5.0 * k) for k in range(1, 11)],
        "health/loss_spike": [(100, 0.0, 5.0), (500, 1.0, 25.0)],
    })
    loss_minutes = [10, 20, 30, 40, 60, 80]
    _write(root / "beta", {
        "charts/epsilon": [(0, 1.0, 0.0)],
        "eval/return_mean": [(200, 2.0, 25.0), (400, 6.0, 50.0), (600, 4.0, 80.0)],
        "train/loss": [(100 * k, 10.0 * k, m) for k, m in enumerate(loss_minutes, 1)],
        "perf/learner_busy_share": [(100 * k, 0.893, m) for k, m in enumerate(loss_minutes, 1)],
    })
    _write(root / "gamma", {
        "charts/epsilon": [(0, 1.0, 0.0)],
        "train/critic_loss": [(100 * k, 0.5 * k, 12.5 * k) for k in range(1, 9)],
        "train/q_taken_mean": [(100 * k, 2.0 * k, 12.5 * k) for k in range(1, 9)],
    })
    return root


@pytest.fixture(scope="module")
def runs(runs_root) -> list[compare.Run]:
    return compare.load_runs([runs_root / n for n in ("alpha", "beta", "gamma")])


def _metric(key: str) -> compare.Metric:
    return next(m for m in compare.DEFAULT_METRICS if m.key == key)


def test_load_run_arrays_and_durations(runs):
    alpha, beta, gamma = runs
    assert [r.name for r in runs] == ["alpha", "beta", "gamma"]
    loss = alpha.scalars["train/loss"]
    assert loss.steps.dtype == np.int64 and loss.values.dtype == np.float64
    np.testing.assert_array_equal(loss.steps, 100 * np.arange(1, 11))
    np.testing.assert_allclose(loss.wall_minutes, 5.0 * np.arange(1, 11))
    assert (alpha.last_step, beta.last_step, gamma.last_step) == (1000, 600, 800)
    assert [round(r.duration_minutes, 9) for r in runs] == [50.0, 80.0, 100.0]
    assert alpha.first_wall_time == T0
    assert alpha.health_flags_raised() == ["loss_spike"] and beta.health_flags_raised() == []


def test_common_window_names_the_limiting_runs(runs):
    window = compare.common_window(runs)
    # alpha is longer than beta by step but shorter by time
    assert (window.step, window.step_run) == (600, "beta")
    assert window.minutes == pytest.approx(50.0) and window.minutes_run == "alpha"
    assert compare.common_window(runs[::2]) == (800, "gamma", pytest.approx(50.0), "alpha")


def test_default_checkpoints():
    assert compare.default_steps(600) == [150, 300, 450, 600]
    # 2 significant digits except the window's end
    assert compare.default_steps(1_234_567) == [300_000, 610_000, 920_000, 1_234_567]
    assert compare.default_interval(50.0) == 10.0  # 5 rows (5 min: 10, 20 min: 2)
    assert compare.default_interval(1604.0) == 300.0  # 5 rows and the end
    assert compare.time_checkpoints(50.0) == [10, 20, 30, 40, 50]
    assert compare.time_checkpoints(50.0, 15) == [15, 30, 45, 50.0]
    assert compare.time_checkpoints(0.35, 0.1) == [0.1, 0.2, 0.3, 0.35]


def test_eval_by_step(runs):
    table = compare.step_table(runs, _metric("eval_return"), [150, 300, 450, 600, 1000])
    assert table.labels == ["150", "300", "450", "600 (end of common window)",
                            "1k (past common window)"]
    assert table.text() == [
        ["-", "-", "-"],  # no evaluation yet; gamma never evaluates
        ["best 1.00 (mean 1.00, std 0.00)", "best 2.00 (mean 2.00, std 0.00)", "-"],
        ["best 3.00 (mean 2.00, std 1.00)", "best 6.00 (mean 4.00, std 2.00)", "-"],
        ["best 3.00 (mean 2.00, std 0.8165)", "best 6.00 (mean 4.00, std 1.63)", "-"],
        ["best 5.00 (mean 3.00, std 1.41)", "-", "-"],  # beta ended at step 600
    ]
    cell = table.cells[3][1]
    assert cell["best"] == 6.0 and cell["mean"] == 4.0 and cell["count"] == 3
    assert cell["std"] == pytest.approx(math.sqrt(8 / 3))  # population std of 2, 6, 4


def test_eval_by_time(runs):
    window = compare.common_window(runs)
    table = compare.time_table(runs, _metric("eval_return"),
                               compare.time_checkpoints(window.minutes))
    assert table.labels == ["10", "20", "30", "40", "50 (end of common window)"]
    assert [row[:2] for row in table.text()] == [
        ["best 1.00 (mean 1.00, std 0.00)", "-"],
        ["best 3.00 (mean 2.00, std 1.00)", "-"],
        ["best 3.00 (mean 2.00, std 0.8165)", "best 2.00 (mean 2.00, std 0.00)"],
        ["best 5.00 (mean 2.75, std 1.48)", "best 2.00 (mean 2.00, std 0.00)"],
        ["best 5.00 (mean 3.00, std 1.41)", "best 6.00 (mean 4.00, std 2.00)"],
    ]
    # past a run's duration: '-' (gamma ran 100 minutes, alpha 50)
    assert compare.time_table(runs, _metric("loss"), [60.0]).text() == [["-", "50.00", "2.00"]]


def test_loss_q_and_busy_share_last_values(runs):
    loss = compare.step_table(runs, _metric("loss"), [150, 450, 800, 1000])
    # train/loss for alpha and beta, train/critic_loss for gamma, as one metric
    assert loss.text() == [["1.00", "10.00", "0.5000"], ["4.00", "40.00", "2.00"],
                           ["8.00", "-", "4.00"], ["10.00", "-", "-"]]
    assert compare.time_table(runs, _metric("loss"), [10.0, 50.0]).text() == [
        ["2.00", "10.00", "-"], ["10.00", "40.00", "2.00"]]
    q = compare.step_table(runs, _metric("q"), [450])
    assert q.text() == [["-0.4000", "-", "8.00"]]
    busy = compare.step_table(runs, _metric("busy_share"), [300])
    assert busy.text() == [["60.8%", "89.3%", "-"]]
    assert busy.cells[0][0] == {"value": pytest.approx(0.608)}


def test_training_episode_return(runs):
    table = compare.step_table(runs[:1], _metric("episode_return"), [150, 200, 300, 600])
    # 15 episodes 1..15; then 20 (mean 10.5); at 300 the last 20 are 11..25 and five zeros
    # (13.5) and the best window of 20 is 6..25 (15.5)
    assert table.text() == [["mean 8.00 (15 episodes)"], ["mean 10.50 (best 10.50)"],
                            ["mean 13.50 (best 15.50)"], ["mean 13.50 (best 15.50)"]]


def test_resumed_run_later_values_win(tmp_path):
    run_dir = tmp_path / "resumed"
    _write(run_dir, {"charts/epsilon": [(0, 1.0, 0.0)],
                     "episode/return": [(50, 1.0, 0.5), (50, 2.0, 0.5)],  # two envs, one step
                     "train/loss": [(100 * k, float(k), float(k)) for k in range(1, 6)]},
           suffix=".first")
    # resumed from the checkpoint at step 300: steps 400 and 500 are written again
    _write(run_dir, {"train/loss": [(100 * k, 10.0 * k, 6.0 + k) for k in range(4, 8)]},
           suffix=".second")
    run = compare.load_run(run_dir)
    assert len(run.event_files) == 2 and run.event_files[0].name.endswith(".first")
    loss = run.scalars["train/loss"]
    np.testing.assert_array_equal(loss.steps, [100, 200, 300, 400, 500, 600, 700])
    np.testing.assert_array_equal(loss.values, [1, 2, 3, 40, 50, 60, 70])
    np.testing.assert_allclose(loss.wall_minutes, [1, 2, 3, 10, 11, 12, 13])
    np.testing.assert_array_equal(run.scalars["episode/return"].values, [1, 2])
    assert run.superseded == 2 and run.last_step == 700
    assert run.duration_minutes == pytest.approx(13.0)
    table = compare.step_table([run], _metric("loss"), [450])
    assert table.text() == [["40.00"]]
    assert "2 (resumed; 2 superseded points dropped)" in compare.report([run])


def test_resume_with_purge_step(tmp_path):
    run_dir = tmp_path / "purged"
    _write(run_dir, {"train/loss": [(100 * k, float(k), float(k)) for k in range(1, 6)]},
           suffix=".first")
    _write(run_dir, {"train/loss": [(600, 60.0, 10.0)]}, suffix=".second", purge_step=300)
    loss = compare.load_run(run_dir).scalars["train/loss"]
    np.testing.assert_array_equal(loss.steps, [100, 200, 600])


def test_truncated_file_and_tensor_scalars(tmp_path):
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    # tf.summary.scalar's layout: a float tensor marked for the scalars plugin
    writer = EventFileWriter(str(tmp_path / "tf"))
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    for step in (1, 2):
        value = summary_pb2.Summary.Value(tag="train/loss", metadata=metadata,
                                          tensor=tensor_util.make_tensor_proto(0.25 * step))
        writer.add_event(event_pb2.Event(wall_time=T0 + 60 * step, step=step,
                                         summary=summary_pb2.Summary(value=[value])))
    writer.close()
    run = compare.load_run(tmp_path / "tf")
    np.testing.assert_array_equal(run.scalars["train/loss"].values, [0.25, 0.5])
    assert run.duration_minutes == pytest.approx(1.0)

    # a run killed while writing: the partial last record is left out
    _write(tmp_path / "cut", {"train/loss": [(k, float(k), float(k)) for k in range(1, 4)]})
    (file,) = (tmp_path / "cut").glob("events.out.tfevents.*")
    file.write_bytes(file.read_bytes()[:-5])
    np.testing.assert_array_equal(compare.load_run(tmp_path / "cut").scalars["train/loss"].steps,
                                  [1, 2])


def test_duplicate_basenames_are_told_apart(tmp_path):
    for parent in ("x", "y"):
        _write(tmp_path / parent / "run", {"train/loss": [(1, 1.0, 0.0)]})
    names = [r.name for r in compare.load_runs([tmp_path / "x" / "run", tmp_path / "y" / "run"])]
    assert names == ["x/run", "y/run"]
    assert compare.unique_names([tmp_path / "x" / "run"] * 2) == ["run", "run (2)"]
    assert compare.unique_names([tmp_path / "x" / "run", tmp_path / "y" / "run",
                                 tmp_path / "x" / "run"]) == ["x/run", "y/run", "x/run (2)"]


def test_parse_steps():
    assert compare.parse_steps("10M,500k,2000") == [2000, 500_000, 10_000_000]
    assert compare.parse_steps("1.5k, 20m,2000,2k") == [1500, 2000, 20_000_000]
    for bad in ("10X", "0", "1.5", "-3", "", "10M,", "nan", "5kk"):
        with pytest.raises(compare.CompareError, match=r"--at .*not a step count"):
            compare.parse_steps(bad)


def test_formatting():
    assert compare.format_step(10_000_000) == "10M"
    assert compare.format_step(2_500_000) == "2.5M"
    assert compare.format_step(500_000) == "500k"
    assert compare.format_step(1_234_567) == "1,234,567"
    assert [compare.format_value(v) for v in (546.07, -0.931, 24.58, 0, 123456.7)] == [
        "546.07", "-0.9310", "24.58", "0.00", "123,457"]


def test_plot_metric_writes_png(runs, tmp_path):
    path = tmp_path / "loss.png"
    compare.plot_metric(runs, _metric("loss"), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    with pytest.raises(compare.CompareError, match="perf/transitions_learned_per_sec"):
        compare.plot_metric(runs, _metric("transitions_per_sec"), tmp_path / "none.png")


def test_main_end_to_end(runs_root, tmp_path, capsys):
    out = tmp_path / "out"
    dirs = [str(runs_root / n) for n in ("alpha", "beta", "gamma")]
    assert compare.main(dirs + ["--out", str(out)]) == 0
    text = (out / "compare.md").read_text()
    assert capsys.readouterr().out.strip() == text.strip()
    assert text.startswith("# Run comparison: `alpha`, `beta`, `gamma`")
    assert ("up to env step 600, where `beta` (the run with the fewest env steps) "
            "ends") in text
    assert "up to 50 wall minutes, where `alpha` (the shortest run in wall time) ends" in text
    assert "| `alpha` | 50 | 1,000 | 1 | loss_spike |" in text
    assert "| `beta` | 80 | 600 | 1 | none |" in text
    assert text.count("### by step") == text.count("### by relative wall time") == 5
    assert "Metric: `train/loss` (`alpha`, `beta`); `train/critic_loss` (`gamma`)" in text
    assert "| 450 | best 3.00 (mean 2.00, std 1.00) | best 6.00 (mean 4.00, std 2.00) | - |" \
        in text
    assert "| 50 (end of common window) | 10.00 | 40.00 | 2.00 |" in text
    assert "## Not shown\n\n- Transitions learned per second" in text
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["busy_share.png", "episode_return.png", "eval_return.png", "loss.png",
                    "q.png"]
    assert all((out / p).stat().st_size > 1000 for p in pngs)
    assert "![Loss by step and by relative wall time](loss.png)" in text


def test_main_at_and_every_minutes(runs_root, tmp_path, capsys):
    dirs = [str(runs_root / n) for n in ("alpha", "beta")]
    assert compare.main(dirs + ["--at", "300,1k", "--every-minutes", "20", "--no-plots",
                                "--metrics", "eval_return", "train/q_mean", "--out",
                                str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert text.count("### by step") == 2 and "## Loss" not in text
    assert "## train/q_mean\n\nMetric: `train/q_mean` (`alpha`): last value" in text
    assert "| 300 | -0.3000 | - |" in text
    assert "| 1k (past common window) | best 5.00 (mean 3.00, std 1.41) | - |" in text
    assert "| 20 | best 3.00 (mean 2.00, std 1.00) | - |" in text
    assert "| 50 (end of common window) |" in text
    assert "![" not in text and not list(tmp_path.glob("*.png"))


def test_main_errors(runs_root, tmp_path, capsys):
    missing = tmp_path / "nope"
    assert compare.main([str(runs_root / "alpha"), str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"run directory {missing} does not exist" in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert compare.main([str(tmp_path / "empty")]) == 2
    assert "holds no TensorBoard event files" in capsys.readouterr().err
    assert compare.main([str(runs_root / "alpha"), "--at", "10X"]) == 2
    assert "--at '10X': '10X' is not a step count" in capsys.readouterr().err
    assert compare.main([str(runs_root / "alpha"), "--every-minutes", "0"]) == 2
    assert "--every-minutes 0.0" in capsys.readouterr().err
    assert compare.main([]) == 2
    assert "at least one RUN_DIR" in capsys.readouterr().err


def test_script_help_runs_as_a_file():
    result = subprocess.run([sys.executable, "launch/compare.py", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "RUN_DIR" in result.stdout and "--every-minutes" in result.stdout
