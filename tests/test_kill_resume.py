"""kill -9 at random moments, then resume (benchmarks/kill_resume.py, 2 kills here; the
10-kill loop is the benchmark): every resume continues from at least the last checkpoint
the killed run completed, with a replay and train state of one step, the killed run's env
workers exit without a traceback, and the last run reaches its total."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_two_kill_9s_at_random_moments_resume_and_reach_the_total(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "kill_resume.py"), "--kills", "2",
         "--seed", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "FAILED" not in result.stdout
    assert len(re.findall(r"round \d: from env step \d+, killed", result.stdout)) == 2
    assert re.search(r"round 2: from env step [1-9]\d*, ran to the end at (\d+)", result.stdout)
    assert "kills: 2, resumes: 2, failed checks: 0" in result.stdout
