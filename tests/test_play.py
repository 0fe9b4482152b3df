"""launch/play.py (a run's greedy policy, its checkpoint choice, videos) and the training
videos of logging.video_interval."""

import importlib.util
import io
import re
import shutil
import subprocess
import sys

import imageio_ffmpeg
import jax
import numpy as np
import PIL.Image
import PIL.ImageSequence
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import envs
from launch import cli, play, run as run_py
from launch.checkpoint import NEW_LOOP, RunCheckpoints
from launch.video import GIF_MAX_SIDE
from rl import config as config_lib
from rl import presets
from rl.config import ConfigError
from rl.learners import make_agent
from test_loop import CARTPOLE
from test_run_e2e import run

needs_tmrl = pytest.mark.skipif(importlib.util.find_spec("tmrl") is None,
                                reason="tmrl (the [trackmania] extra) is not installed")

VIDEO_INTERVAL = 150


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    """DQN on CartPole for 300 env steps: checkpoints at 100, 200, 300, evaluations (best/)
    at the same steps, best_train/ over 3 episodes, videos every 150 steps."""
    run_dir = tmp_path_factory.mktemp("play") / "run"
    run(*CARTPOLE, "--env.num-envs", "1", "--total-steps", "300", "--run-dir", str(run_dir),
        "--training.eval-interval", "100", "--training.eval-episodes", "1",
        "--training.checkpoint-interval", "100", "--training.best-train-window", "3",
        "--logging.video-interval", str(VIDEO_INTERVAL))
    return run_dir


def frames(path, height: int, width: int) -> np.ndarray:
    """The pictures of an MP4 file of that size, uint8 [N, height, width, 3], decoded by the
    ffmpeg of imageio-ffmpeg (its readers leave pipes open, an error under -W error); and
    its duration is N / fps."""
    raw = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path),
                          "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    assert len(raw) % (height * width * 3) == 0
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def duration_s(path) -> float:
    return imageio_ffmpeg.count_frames_and_secs(str(path))[1]


def play_main(capsys, *argv) -> tuple[int, str, str]:
    code = play.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def played(out: str) -> list[tuple[float, int]]:
    """(return, length) of each episode line play.py printed."""
    return [(float(r), int(n)) for r, n in
            re.findall(r"episode \d+/\d+: return (-?[\d.]+), length (\d+)", out)]


def test_training_writes_videos_at_the_multiples_of_the_interval(cartpole_run):
    videos = sorted(int(p.stem) for p in (cartpole_run / "videos").glob("*.mp4"))
    assert videos == [150, 300]
    console = (cartpole_run / "console.log").read_text()
    acc = EventAccumulator(str(cartpole_run), size_guidance={"images": 0})
    acc.Reload()
    gifs = acc.Images("eval/video")
    assert [g.step for g in gifs] == videos
    for step, gif in zip(videos, gifs):
        length = int(re.search(rf"video of env step {step}: return [-\d.]+ in (\d+) steps",
                               console).group(1))
        path = cartpole_run / "videos" / f"{step}.mp4"
        # A picture after the reset and after every step (CartPole's 600x400 render), at
        # CartPole's 50 fps.
        assert len(frames(path, 400, 600)) == length + 1
        assert duration_s(path) == pytest.approx((length + 1) / 50)
        assert gif.encoded_image_string[:6] == b"GIF89a"
        # The same pictures, every 3rd pixel (600 / GIF_MAX_SIDE rounded up), 20 ms each
        # (50 fps); the GIF merges a picture equal to the one before into its time.
        animation = PIL.Image.open(io.BytesIO(gif.encoded_image_string))
        durations = []
        for picture in PIL.ImageSequence.Iterator(animation):
            durations.append(picture.info["duration"])
        assert animation.size == (gif.width, gif.height) == (200, 134)
        assert GIF_MAX_SIDE == 256 and sum(durations) == 20 * (length + 1)
        assert len(durations) > length / 2  # the pole moves: most pictures differ


def test_play_takes_best_then_best_train_then_latest_and_writes_the_video(
        cartpole_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(cartpole_run, run_dir)
    best = int(next((run_dir / "best").iterdir()).name)
    code, out, err = play_main(capsys, run_dir, "--episodes", "2", "--video",
                               tmp_path / "v" / "play.mp4")
    assert code == 0 and err == "", err  # no pygame noise on a headless machine
    assert f"checkpoint: best-by-eval checkpoint of env step {best} in {run_dir} (the default" \
        in out
    episodes = played(out)
    assert len(episodes) == 2 and all(r == n for r, n in episodes)  # CartPole: 1 per step
    assert f"mean return {np.mean([r for r, _ in episodes]):.2f}" in out
    total = sum(n + 1 for _, n in episodes)
    assert f"video: {tmp_path / 'v' / 'play.mp4'} ({total} frames at 50 fps)" in out
    assert len(frames(tmp_path / "v" / "play.mp4", 400, 600)) == total

    best_train = int(next((run_dir / "best_train").iterdir()).name)
    shutil.rmtree(run_dir / "best")
    code, out, _ = play_main(capsys, run_dir, "--episodes", "1")
    assert code == 0 and f"best-by-train checkpoint of env step {best_train}" in out
    shutil.rmtree(run_dir / "best_train")
    code, out, _ = play_main(capsys, run_dir, "--episodes", "1")
    assert code == 0 and "latest checkpoint, env step 300 in" in out
    code, out, _ = play_main(capsys, run_dir, "--episodes", "1", "--checkpoint", "200")
    assert code == 0 and "checkpoint: checkpoint of env step 200 in" in out


def test_play_errors_name_the_problem(cartpole_run, tmp_path, capsys):
    code, _, err = play_main(capsys, cartpole_run, "--checkpoint", "250")
    assert code == 2 and err.strip() == (
        f"error: {cartpole_run} has no checkpoint of env step 250; it has best (env step "
        f"{next((cartpole_run / 'best').iterdir()).name}), best_train (env step "
        f"{next((cartpole_run / 'best_train').iterdir()).name}), latest (env step 300); "
        "checkpoints/ holds env steps 300, 200, 100")
    code, _, err = play_main(capsys, cartpole_run, "--env", "Acrobot-v1")
    assert code == 2 and err.startswith("error: --env Acrobot-v1: it has observations "
                                        "float32[6], 3 discrete actions; the run")
    assert "trained on CartPole-v1 with observations float32[4], 2 discrete actions" in err
    code, _, err = play_main(capsys, cartpole_run, "--env.frame-stack", "3")
    assert code == 2 and "--env.frame-stack 3" in err and "env.frame_stack=1" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = play_main(capsys, empty)
    assert code == 2 and "no config.json there" in err
    shutil.copy(cartpole_run / "config.json", empty / "config.json")
    code, _, err = play_main(capsys, empty)
    assert code == 2 and err == f"error: {empty} has no checkpoint yet: train it first\n"
    assert sorted(p.name for p in empty.iterdir()) == ["config.json"]  # read only
    code, _, err = play_main(capsys, cartpole_run, "--video", tmp_path / "x.avi")
    assert code == 2 and "must name an .mp4 file" in err


def test_without_the_video_extra_video_options_stop_before_any_work(
        cartpole_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as if not installed
    code, out, err = play_main(capsys, cartpole_run, "--video", tmp_path / "x.mp4")
    assert code == 2 and out == "" and err == (
        "error: --video: writing videos needs imageio_ffmpeg, which is not installed: install "
        'the [video] extra: pip install -e ".[video]"\n')
    code = run_py.main([*CARTPOLE, "--run-dir", str(tmp_path / "run"),
                        "--logging.video-interval", "100"])
    assert code == 2 and "logging.video_interval=100: writing videos needs imageio_ffmpeg" \
        in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_evaluate_episodes_gives_a_picture_per_step_and_the_returns_of_evaluate():
    def always_left(obs):
        return np.zeros(len(obs), np.int32)

    pictures: dict[int, list[np.ndarray]] = {0: [], 1: []}
    episodes = envs.evaluate_episodes(always_left, "CartPole-v1", num_episodes=2, seed=7,
                                      frame_stack=2, on_frame=lambda i, p: pictures[i].append(p))
    returns = envs.evaluate(always_left, "CartPole-v1", num_episodes=2, seed=7, frame_stack=2)
    assert [e.return_ for e in episodes] == returns
    assert [e.length for e in episodes] == [e.return_ for e in episodes]  # reward 1 per step
    for i, episode in enumerate(episodes):
        assert len(pictures[i]) == episode.length + 1
        assert pictures[i][0].shape == (400, 600, 3) and pictures[i][0].dtype == np.uint8
        assert not np.array_equal(pictures[i][0], pictures[i][-1])  # the pole fell


def test_frame_rate_is_render_fps_over_the_frame_skip():
    tm = config_lib.TrackmaniaConfig(time_step=0.05)
    for env_id, skip, fps in [("CartPole-v1", 4, 50.0), ("CarRacing-v3", 4, 12.5),
                              ("trackmania", 1, 20.0)]:
        spec = envs.env_spec(env_id, frame_skip=skip, trackmania=tm, image_size=64)
        assert envs.frame_rate(spec, frame_skip=skip, trackmania=tm) == pytest.approx(fps)


def test_trackmania_runs_record_no_training_videos():
    with pytest.raises(ConfigError, match="logging.video_interval=100: must be 0 with "
                                          "env.id=trackmania.*launch/play.py"):
        presets.replace(presets.get("tqc_tm20"), logging=dict(video_interval=100))


@needs_tmrl
def test_play_drives_the_standin_game_and_records_its_frames(tmp_path, capsys):
    """A TrackMania run's checkpoint (untrained TQC, saved here) played on the stand-in game
    named on the command line, the run having been set up for the real one."""
    run_dir = tmp_path / "tm_run"
    config = cli.parse(["--algo", "tqc_tm20", "--network.cnn-channels", "4", "4",
                        "--network.feature-dim", "8", "--tqc.critic-hidden", "16",
                        "--tqc.actor-hidden", "16", "--tqc.num-quantiles", "5",
                        "--tqc.top-quantiles-to-drop", "1"]).config
    spec = envs.env_spec("trackmania", **envs.make_kwargs(config))
    config = config_lib.resolve_env_auto(config, spec.is_image)
    run_dir.mkdir()
    config_lib.save(config, run_dir / "config.json")
    agent = make_agent(config, spec.num_actions, spec.is_image, spec.feature_size)
    shapes = jax.eval_shape(agent.init, jax.random.PRNGKey(0),
                            envs.zeros_obs(spec, (config.env.frame_stack,)))
    rng = np.random.default_rng(0)  # random weights: running init would compile it for ~20 s
    state = jax.tree.map(lambda s: (0.1 * rng.normal(size=s.shape)).astype(s.dtype)
                         if np.issubdtype(s.dtype, np.floating) else np.zeros(s.shape, s.dtype),
                         shapes)
    checkpoints = RunCheckpoints(run_dir, 1)
    checkpoints.save(40, state, None, dict(NEW_LOOP))
    checkpoints.close()
    assert config.trackmania.backend == "game"
    code, out, err = play_main(capsys, run_dir, "--episodes", "1", "--video",
                               tmp_path / "tm.mp4", "--trackmania.backend", "standin",
                               "--trackmania.watchdog-timeout", "5",
                               "--env.max-episode-steps", "30")
    assert code == 0, err
    assert "checkpoint: latest checkpoint, env step 40" in out
    (_, length), = played(out)
    assert 1 <= length <= 30
    assert f"({length + 1} frames at 20 fps)" in out
    # The observation frames (64x64 gray) as RGB, at TrackMania's 20 Hz.
    assert len(frames(tmp_path / "tm.mp4", 64, 64)) == length + 1
    assert duration_s(tmp_path / "tm.mp4") == pytest.approx((length + 1) / 20)
