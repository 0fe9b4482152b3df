"""Tests for envs/trackmania/standin.py: the headless TrackMania + OpenPlanet stand-in, over real
sockets on 127.0.0.1 (OS-assigned ports).

The tmrl parts run tmrl's own client, gamepad functions and LIDAR in a subprocess, so this
process never imports tmrl (whose package import reads ~/TmrlData/config/config.json).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from envs.trackmania.standin import (RECORD, StandinGame, StandinGamepad, StandinWindow,
                                     standin_track)

REPO = Path(__file__).resolve().parents[1]


class Control:
    """A raw control-port client: one JSON request, one JSON line back."""

    def __init__(self, game: StandinGame):
        self.sock = socket.create_connection(("127.0.0.1", game.control_port), timeout=2.0)
        self.lines = self.sock.makefile("rb")

    def __call__(self, **msg) -> dict:
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        return json.loads(self.lines.readline())

    def close(self) -> None:
        self.lines.close()
        self.sock.close()


class Records:
    """A raw data-port client, as tmrl's: reads '<11f' records."""

    def __init__(self, game: StandinGame):
        self.sock = socket.create_connection(("127.0.0.1", game.data_port), timeout=2.0)
        self.buf = b""

    def read(self, seconds: float) -> list[tuple[float, ...]]:
        """Every record received during the next `seconds`."""
        records = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                break
            assert chunk, "the game closed the data connection"
            self.buf += chunk
            n = len(self.buf) // RECORD.size
            records += [RECORD.unpack_from(self.buf, i * RECORD.size) for i in range(n)]
            self.buf = self.buf[n * RECORD.size:]
        return records

    def latest(self, settle: float = 0.1) -> tuple[float, ...]:
        return self.read(settle)[-1]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def game():
    with StandinGame() as g:
        yield g


@pytest.fixture
def control(game):
    c = Control(game)
    yield c
    c.close()


@pytest.fixture
def records(game):
    r = Records(game)
    yield r
    r.close()


def test_track_layout():
    track = standin_track()
    steps = np.linalg.norm(np.diff(track, axis=0), axis=1)
    assert track.shape == (1601, 3) and track.dtype == np.float64
    np.testing.assert_allclose(steps, 0.1, atol=1e-4)
    assert np.all(track[:, 1] == track[0, 1])  # flat, y up
    np.testing.assert_allclose(track[600], [0.0, 12.0, 60.0])  # end of the straight along +z
    end_direction = (track[-1] - track[-2]) / steps[-1]
    np.testing.assert_allclose(end_direction, [1.0, 0.0, 0.0], atol=1e-9)  # turned right, to +x
    left = standin_track(turn_deg=-90.0)
    np.testing.assert_allclose(left[:, 0], -track[:, 0], atol=1e-9)
    with pytest.raises(ValueError, match="must cover"):
        standin_track(length_m=80.0)


def test_records_driving_and_respawn(game, control, records):
    start = records.latest()
    assert start[0] == 0.0 and start[1] == 0.0 and start[8] == 0.0 and start[9] == 1.0
    np.testing.assert_allclose(start[2:5], game.track[0], atol=1e-5)

    assert control(op="input", gas=1.0, brake=0.0, steer=0.0) == {"ok": True}
    driving = records.read(1.0)
    assert 25 <= len(driving) <= 60  # ~rate_hz = 50 per second
    speed, distance, x, y, z, steer, gas, brake, finished, gear, rpm = driving[-1]
    assert speed > 20.0 and distance > 2.0  # km/h, m
    assert z > 2.0 and abs(x) < 1e-3 and y == 12.0  # straight ahead, along +z
    assert (steer, gas, brake, finished) == (0.0, 1.0, 0.0, 0.0)  # the driver's inputs
    assert gear >= 2 and 1500.0 <= rpm <= 10500.0
    assert np.all(np.diff([r[0] for r in driving]) >= 0.0)

    control(op="input", gas=0.0, brake=0.0, steer=0.0)
    assert control(op="button", name="B") == {"ok": True}
    respawned = records.latest()
    assert respawned[0] == 0.0 and respawned[1] == 0.0
    np.testing.assert_allclose(respawned[2:5], game.track[0], atol=1e-5)


@pytest.mark.parametrize("steer", [1.0, -1.0])
def test_steering_direction(control, steer):
    control(op="input", gas=1.0, brake=0.0, steer=steer)
    time.sleep(0.8)
    pose = control(op="pose")
    # +steer turns right: the heading grows and the car drifts to +x, the right of +z.
    assert np.sign(pose["heading"]) == np.sign(pose["x"]) == steer
    assert abs(pose["heading"]) > 0.2 and pose["z"] > 1.0


def test_wall_clamps_and_hugging(game, control):
    control(op="input", gas=1.0, brake=0.0, steer=1.0)
    time.sleep(1.5)  # turns right into the right wall of the first straight (x = +6)
    control(op="input", gas=1.0, brake=0.0, steer=0.0)
    time.sleep(0.2)
    before = control(op="pose")
    time.sleep(0.5)
    after = control(op="pose")
    assert before["x"] == pytest.approx(game.road_half_width)
    assert after["x"] == pytest.approx(game.road_half_width)
    # Full gas into the wall: a small speed (m/s; ~0 head-on) and next to no progress.
    assert after["speed"] < 1.0 and abs(after["z"] - before["z"]) < 0.3


def test_finish_stops_the_car_until_respawn():
    with StandinGame(track=standin_track(length_m=8.0, straight_m=8.0, turn_deg=0.0)) as game:
        control, records = Control(game), Records(game)
        control(op="input", gas=1.0, brake=0.0, steer=0.0)
        deadline = time.monotonic() + 3.0
        while not any(r[8] for r in records.read(0.1)):
            assert time.monotonic() < deadline, "the car never finished"
        held = records.read(0.3)
        assert all(r[8] == 1.0 and r[0] == 0.0 for r in held)
        assert held[-1][4] >= 8.0 - game.finish_tolerance_m
        assert control(op="button", name="A") == {"ok": True}  # the finish pop-up: no effect
        assert records.latest()[8] == 1.0
        control(op="button", name="B")
        assert records.latest()[8] == 0.0
        control.close()
        records.close()


def test_control_errors_keep_the_connection(control):
    for msg in ({"op": "fly"}, {"op": "input", "gas": 2.0, "brake": 0.0, "steer": 0.0},
                {"op": "input", "gas": 1.0}, {"op": "button", "name": "Z"}, {"nop": 1}):
        reply = control(**msg)
        assert reply["ok"] is False and reply["error"]
    control.sock.sendall(b"not json\n")
    assert json.loads(control.lines.readline())["ok"] is False
    assert control(op="pose")["ok"] is True


# tmrl's package import reads ~/TmrlData/config/config.json: load only the files used, with the
# one constant tools.py imports from the config (a constant there, not read from the json).
TMRL_SCRIPT = r"""
import importlib.util, json, sys, time, types
import numpy as np
from envs.trackmania.standin import StandinGamepad, StandinWindow

root = importlib.util.find_spec("tmrl").submodule_search_locations[0]
for name in ("tmrl", "tmrl.config", "tmrl.config.config_constants"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["tmrl.config.config_constants"].LIDAR_BLACK_THRESHOLD = [55, 55, 55]

def load(name, path):
    spec = importlib.util.spec_from_file_location(name, f"{root}/custom/tm/utils/{path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

tools, pad = load("tm_tools", "tools.py"), load("tm_pad", "control_gamepad.py")
address, data_port = sys.argv[1], int(sys.argv[2])
client = tools.TM2020OpenPlanetClient(port=data_port)
out = {"first": client.retrieve_data()}
gamepad = StandinGamepad(address)
pad.control_gamepad(gamepad, np.array([1.0, 0.0, 0.0]))
time.sleep(1.0)
out["driving"] = client.retrieve_data()
pad.gamepad_reset(gamepad)
time.sleep(0.1)
out["reset"] = client.retrieve_data()
pad.gamepad_close_finish_pop_up_tm20(gamepad)
img = StandinWindow(address).screenshot()
out["lidar"] = tools.Lidar(img).lidar_20(img[:, :, :3]).tolist()
out["undelivered"] = gamepad.undelivered
print(json.dumps(out))
"""


@pytest.mark.skipif(importlib.util.find_spec("tmrl") is None, reason="tmrl is not installed")
def test_tmrl_client_gamepad_and_lidar(game):
    proc = subprocess.run([sys.executable, "-c", TMRL_SCRIPT, game.address, str(game.data_port)],
                          cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert len(out["first"]) == 11 and out["first"][0] == 0.0
    assert out["driving"][0] > 20.0 and out["driving"][6] == 1.0  # km/h; gas from the trigger
    assert out["reset"][0] < 2.0 and out["reset"][1] < 0.1  # B respawned at the start
    assert out["undelivered"] == 0
    lidar = out["lidar"]  # 19 beams from right (90 deg) through ahead (180) to left (270)
    assert len(lidar) == 19
    assert lidar[9] > 80  # the straight road ahead reaches the top of the image
    assert 0 < lidar[0] < 30 and abs(lidar[0] - lidar[18]) <= 2  # walls 6 m either side


def test_screenshot(game, control):
    window = StandinWindow(game.address)
    shot = window.screenshot()
    assert shot.shape == (128, 256, 4) and shot.dtype == np.uint8
    assert np.all(shot[..., 3] == 255)
    row, col = 44 * 128 // 49, 128  # the car, where tmrl's LIDAR casts from
    bgr = shot[..., :3]
    assert np.all(bgr[row - 40, col - 10] > 55)  # road ahead
    assert np.all(bgr[row, :10] < 55) and np.all(bgr[row, -10:] < 55)  # dark 20+ m aside

    n = 50
    t0 = time.perf_counter()
    for _ in range(n):
        window.screenshot()
    ms = (time.perf_counter() - t0) / n * 1e3
    print(f"screenshot 256x128: {ms:.2f} ms")
    assert ms < 20.0  # ~0.3 ms here; generous for a shared CI machine

    control(op="input", gas=1.0, brake=0.0, steer=1.0)
    time.sleep(0.5)
    heading = control(op="pose")["heading"]
    turned = window.screenshot()
    # Heading-up: the road, along +z, now runs towards the upper left.
    ahead_left = (row - 30, col - round(30 * math.tan(heading)))
    assert np.all(turned[ahead_left][:3] > 55) and not np.array_equal(turned, shot)

    window.move_and_resize(x=0, y=0, w=128, h=64)
    assert window.screenshot().shape == (64, 128, 4)
    window.close()


def test_go_silent_and_resume(game, records):
    assert records.read(0.2)
    game.go_silent()
    records.read(0.1)  # drain records in flight
    assert records.read(0.3) == []
    game.resume()
    assert records.read(0.3)


def test_hang_on_reset(game, control, records):
    game.hang_on_reset()
    control.sock.sendall(b'{"op": "button", "name": "B"}\n')
    control.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        control.sock.recv(4096)  # no reply: frozen
    records.read(0.1)
    assert records.read(0.3) == []
    game.resume()
    control.sock.settimeout(2.0)
    assert json.loads(control.sock.recv(4096)) == {"ok": True}  # the request sent during the hang
    assert records.read(0.3)


def test_crash_and_a_lost_game(game, records):
    gamepad, window = StandinGamepad(game.address), StandinWindow(game.address)
    gamepad.update()
    last = window.screenshot()
    game.crash()
    records.sock.settimeout(2.0)
    while records.sock.recv(4096):  # the records in flight, then end-of-stream
        pass
    for port in (game.data_port, game.control_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    # A pad and a screen capture never fail on a lost game.
    gamepad.update()
    assert gamepad.undelivered == 1
    np.testing.assert_array_equal(window.screenshot(), last)
    gamepad.close()
    window.close()
