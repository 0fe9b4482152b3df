"""benchmarks/drive.py on a small budget: the iqn_cpu preset end to end on CarRacing-v3 (with
grad steps), its JSON read back against the run's own log, and its PNG."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image

from launch.compare import load_run

ROOT = Path(__file__).resolve().parents[1]


def test_drive_writes_the_curve_of_a_short_iqn_cpu_run(tmp_path):
    out = tmp_path / "drive"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "drive.py"), "--total-steps", "2000",
         "--seed", "3", "--out", str(out), "--",
         # Small enough for the suite: 2 envs in this process, a 4,096-slot replay, learning
         # from 1,800 steps (50 grad steps), two evaluations of one episode.
         "--env.num-envs", "2", "--env.no-asynchronous", "--replay.capacity", "4096",
         "--training.learning-starts", "1800",
         "--training.eval-interval", "1000", "--training.eval-episodes", "1",
         "--training.checkpoint-interval", "1000", "--training.no-save-replay"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    # Exit 1: the target of 700 is not reached in 2,000 steps; anything else is a failure.
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "target 700 not reached" in proc.stdout

    result = json.loads((out / "drive.json").read_text())
    assert result["algo"] == "iqn_cpu" and result["seed"] == 3 and result["reached"] is None
    assert result["stopped_by"] == "total steps" and result["machine"].startswith("machine:")
    points = result["evaluations"]
    assert [p["env_step"] for p in points] == [1000, 2000]
    walls = [p["wall_s"] for p in points]
    assert 0 < walls[0] < walls[1] <= result["wall_s"]
    # The same numbers as the run's own log lines (rounded there to 2 decimals).
    logged = re.findall(r"eval at env step (\d+).*?: return (-?[\d.]+) \+- ([\d.]+) over 1",
                        (out / "run" / "console.log").read_text())
    assert [int(s) for s, _, _ in logged] == [1000, 2000]
    for p, (_, mean, std) in zip(points, logged):
        assert abs(p["eval_mean"] - float(mean)) <= 0.006
        assert abs(p["eval_std"] - float(std)) <= 0.006

    run = load_run(out / "run")
    assert run.scalars["train/loss"].steps.size > 0, "the preset took no grad step"
    # Training episodes without a new tile for 30 steps were cut: more episodes than
    # 2,000 steps of whole (250-step) episodes could hold.
    lengths = run.scalars["episode/length"].values
    assert lengths.size > 2000 // 250 and np.min(lengths) < 250

    with PIL.Image.open(out / "drive.png") as picture:
        assert picture.format == "PNG" and picture.size == (1000, 380)
        # Not a blank figure: the curve and its band add colours beyond white, black and grey.
        pixels = np.asarray(picture.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 50

    # --combine: the figure and table of several --out directories, without a run.
    combined = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "drive.py"), "--combine", str(out),
         "--png", str(tmp_path / "seeds.png")], capture_output=True, text=True, timeout=120)
    assert combined.returncode == 0, combined.stderr
    rows = [line for line in combined.stdout.splitlines() if line.startswith("| ")]
    assert rows[0] == "| env steps | seed 3 |" and [r.split(" | ")[0] for r in rows[1:]] == \
        ["| 1k", "| 2k"]
    assert f"{points[1]['eval_mean']:.0f} +- " in rows[2]
    with PIL.Image.open(tmp_path / "seeds.png") as picture:
        assert picture.size == (1000, 380)
    missing = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "drive.py"), "--combine", str(tmp_path),
         "--png", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "holds no drive.json" in missing.stderr
