"""A headless stand-in for TrackMania 2020 with tmrl's OpenPlanet plugin, for tests without it.

The env worker drives TrackMania through tmrl's real code: ``TM2020OpenPlanetClient`` reads the
plugin's telemetry records, ``control_gamepad`` / ``gamepad_reset`` drive a vgamepad, and a
``WindowInterface`` grabs screenshots. The classes here plug in where the game, the gamepad and
the screen are:

* :class:`StandinGame`: the game and its plugin. A kinematic car on a walled road
  (:func:`standin_track`), simulated in wall-clock real time, with two TCP servers:

  - data port (the plugin, port 9000 in the real game): streams, at ``rate_hz``, 44-byte records
    ``struct.pack('<11f', speed_kmh, distance_m, x, y, z, steer, gas, brake, finished, gear,
    rpm)`` to every connected client; positions are in the game's layout, y up.
  - control port (what the gamepad and the screen reach in the real game): newline-delimited
    JSON requests, one JSON line replied to each:

    ``{"op": "input", "gas": g, "brake": b, "steer": s}`` -> ``{"ok": true}`` (g, b in [0, 1],
    s in [-1, 1], +s steers right);
    ``{"op": "button", "name": "B"}`` -> ``{"ok": true}`` ("B" respawns the car at the start;
    the other XInput button names in :data:`BUTTONS` are accepted and ignored);
    ``{"op": "pose"}`` -> ``{"ok": true, "x", "y", "z", "heading", "speed", "finished"}``;
    ``{"op": "track"}`` -> ``{"ok": true, "points": [[x, y, z], ...], "road_half_width"}``;
    a bad request -> ``{"ok": false, "error": "..."}``.

  Fault injection for watchdog tests: :meth:`StandinGame.go_silent`, :meth:`StandinGame.resume`,
  :meth:`StandinGame.hang_on_reset`, :meth:`StandinGame.crash`.
* :class:`StandinGamepad`: the subset of ``vgamepad.VX360Gamepad`` that tmrl's control functions
  call; ``update()`` sends the pad state to the control port.
* :class:`StandinWindow`: tmrl's ``WindowInterface`` (``screenshot()``, ``move_and_resize()``):
  a top-down chase view of the road around the car, BGRA like tmrl's screen captures.

Conventions: the track lies in the x-z plane at constant y. ``heading`` is the yaw in radians
(not wrapped to one turn); the car's forward direction is ``(sin heading, cos heading)`` in
(x, z): heading 0 drives towards +z, and +steer increases the heading, i.e. turns right as seen
from above with x to the right and z up (the view :class:`StandinWindow` renders).

Host-only: numpy, cv2, the standard library and the record layout of
``envs.trackmania.plugin``. It does not import tmrl (whose package import reads
``~/TmrlData/config/config.json``), jax, ``rl`` or the env (``envs.trackmania.env``, which
starts this game).
"""

from __future__ import annotations

import json
import math
import selectors
import socket
import threading
import time

import cv2
import numpy as np

from envs.trackmania.plugin import RECORD  # the plugin's record layout, defined once

__all__ = ["BUTTONS", "RECORD", "StandinGame", "StandinGamepad", "StandinWindow", "standin_track"]

BUTTONS = {
    "DPAD_UP": 0x0001, "DPAD_DOWN": 0x0002, "DPAD_LEFT": 0x0004, "DPAD_RIGHT": 0x0008,
    "START": 0x0010, "BACK": 0x0020, "LEFT_THUMB": 0x0040, "RIGHT_THUMB": 0x0080,
    "LEFT_SHOULDER": 0x0100, "RIGHT_SHOULDER": 0x0200, "GUIDE": 0x0400,
    "A": 0x1000, "B": 0x2000, "X": 0x4000, "Y": 0x8000,
}
"""XInput (XUSB) button bits by name, as ``vgamepad.XUSB_BUTTON``; tmrl presses B (0x2000) to
respawn and A (0x1000) to close the finish pop-up."""

# Top speed (m/s) of gears 1..5; rpm climbs within each band.
_GEAR_TOP_MPS = (7.0, 12.0, 17.0, 22.0, 27.0)
_MAX_SUBSTEP_S = 0.02
# A starved tick (e.g. a stalled host) advances at most this much: no teleporting after a pause.
_MAX_TICK_S = 0.5
_MAX_LINE_BYTES = 1 << 20

# BGRA colours; every channel of the outside is < 55 so tmrl's LIDAR stops at the road edge.
_ROAD = (110, 110, 110, 255)
_OUTSIDE = (30, 50, 35, 255)
_MARKING = (200, 200, 200, 255)
_CAR = (40, 40, 190, 255)


def standin_track(length_m: float = 160.0, straight_m: float = 60.0, radius_m: float = 25.0,
                  turn_deg: float = 90.0, spacing_m: float = 0.1,
                  origin: tuple[float, float, float] = (0.0, 12.0, 0.0)) -> np.ndarray:
    """A deterministic track centreline: a straight, a circular turn, then a straight to the end.

    The track starts at ``origin`` heading towards +z and lies in the x-z plane at the origin's
    height (y up, as tmrl records positions).

    Parameters
    ----------
    length_m : float
        Total length along the centreline, m; the exit straight takes what the first straight and
        the turn leave.
    straight_m : float
        Length of the first straight, m.
    radius_m : float
        Radius of the turn's centreline, m.
    turn_deg : float
        Turn angle, degrees; positive turns right (towards +x from the start), 0 makes the whole
        track straight.
    spacing_m : float
        Distance between consecutive points along the centreline, m.
    origin : tuple of float
        Start point (x, y, z), m.

    Returns
    -------
    np.ndarray
        float64 [N, 3] points (x, y, z), m, ``spacing_m`` apart along the centreline.
    """
    turn = math.radians(turn_deg)
    arc_m = abs(turn) * radius_m
    if not (spacing_m > 0 and straight_m >= 0 and radius_m > 0 and length_m >= straight_m + arc_m):
        raise ValueError(f"bad track: length_m={length_m} must cover straight_m={straight_m} plus "
                         f"the turn's {arc_m:.2f} m, with spacing_m > 0 and radius_m > 0")
    s = np.arange(int(round(length_m / spacing_m)) + 1) * spacing_m
    sign = 1.0 if turn >= 0 else -1.0
    # Heading along the track: 0 on the first straight, growing through the turn to `turn`.
    heading = sign * np.clip(s - straight_m, 0.0, arc_m) / radius_m
    # Turn centre: radius_m to the side the turn goes (right of +z is +x).
    cx, cz = sign * radius_m, straight_m
    in_turn_x = cx - sign * radius_m * np.cos(heading)
    in_turn_z = cz + sign * radius_m * np.sin(heading)
    after = np.maximum(s - straight_m - arc_m, 0.0)
    x = np.where(s <= straight_m, 0.0, in_turn_x) + after * math.sin(turn)
    z = np.where(s <= straight_m, s, in_turn_z) + after * math.cos(turn)
    return np.stack([x + origin[0], np.full_like(s, origin[1]), z + origin[2]], axis=1)


def _control_endpoint(address: str) -> tuple[str, int]:
    """(host, control port) from ``"host:data_port:control_port"`` or ``"host:control_port"``."""
    parts = address.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"address {address!r} is not 'host:data_port:control_port' "
                         "or 'host:control_port'")
    return parts[0], int(parts[-1])


class StandinGame:
    """TrackMania 2020 with tmrl's OpenPlanet plugin, headless: a car on a walled road served
    over TCP (see the module docstring for the protocols).

    One daemon thread runs everything: the car simulation, the record stream and the control
    requests (a selector loop woken at least every 1 / ``rate_hz`` s).

    The car: gas accelerates (``accel_mps2`` from rest, linear drag to a top speed near
    ``max_speed_mps``), brake decelerates down to a stop (no reverse gear), steer turns at
    ``steer * min(speed / min_turn_radius_m, max_yaw_rate)`` rad/s. The road is walled: the car
    stays within ``road_half_width`` of the centreline and cannot go behind the start; hitting a
    wall clamps it to the wall and keeps only the speed along the wall (driving into a wall keeps
    a small speed and makes no progress). Within ``finish_tolerance_m`` of the end of the track
    the car has finished: records report finished = 1 and the car stands still until respawned.

    Parameters
    ----------
    track : np.ndarray, optional
        [N, 3] centreline points (x, y, z), m, in driving order, a few tenths of a metre apart;
        default :func:`standin_track`.
    host : str
        Interface both servers bind to.
    data_port, control_port : int
        TCP ports; 0 lets the OS choose (read the bound ones from :attr:`data_port`,
        :attr:`control_port` after :meth:`start`).
    rate_hz : float
        Records sent per second, and simulation ticks per second.
    road_half_width : float
        Distance from the centreline to each wall, m.
    max_speed_mps, accel_mps2, brake_mps2 : float
        Top speed (m/s), full-gas acceleration from rest and full-brake deceleration (m/s^2).
    min_turn_radius_m, max_yaw_rate : float
        Full-steer turn radius (m) and the yaw-rate cap (rad/s) that limits it at speed.
    finish_tolerance_m : float
        The car finishes this far (m, along the centreline) before the last point.
    """

    def __init__(self, track: np.ndarray | None = None, host: str = "127.0.0.1",
                 data_port: int = 0, control_port: int = 0, rate_hz: float = 50.0,
                 road_half_width: float = 6.0, max_speed_mps: float = 25.0,
                 accel_mps2: float = 10.0, brake_mps2: float = 20.0,
                 min_turn_radius_m: float = 6.0, max_yaw_rate: float = 2.0,
                 finish_tolerance_m: float = 2.0):
        self.track = np.asarray(standin_track() if track is None else track, dtype=np.float64)
        if self.track.ndim != 2 or self.track.shape[1] != 3 or len(self.track) < 2:
            raise ValueError(f"track must be [N >= 2, 3] points, got shape {self.track.shape}")
        self.host = host
        self.rate_hz = float(rate_hz)
        self.road_half_width = float(road_half_width)
        self.max_speed_mps = float(max_speed_mps)
        self.accel_mps2 = float(accel_mps2)
        self.brake_mps2 = float(brake_mps2)
        self.min_turn_radius_m = float(min_turn_radius_m)
        self.max_yaw_rate = float(max_yaw_rate)
        self.finish_tolerance_m = float(finish_tolerance_m)
        self._ports = (int(data_port), int(control_port))

        xz = self.track[:, [0, 2]]
        self._xz = xz
        seg = np.linalg.norm(np.diff(xz, axis=0), axis=1)
        self._arc = np.concatenate([[0.0], np.cumsum(seg)])
        tangent = xz[np.r_[1:len(xz), len(xz) - 1]] - xz[np.r_[0, 0:len(xz) - 1]]
        self._tangent = tangent / np.linalg.norm(tangent, axis=1, keepdims=True)
        self._right = np.stack([self._tangent[:, 1], -self._tangent[:, 0]], axis=1)
        # The car moves well under 5 m per substep: a local search around the last index is
        # enough, and keeps a track that comes back near its start from matching the wrong stretch.
        self._search = int(np.ceil(5.0 / max(seg.mean(), 1e-6)))

        self._gas = self._brake = self._steer = 0.0
        self._respawn()

        self._silent = False
        self._hang_next_reset = False
        self._frozen = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listeners: dict[str, socket.socket] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> StandinGame:
        """Bind both servers and start the game thread.

        Returns
        -------
        StandinGame
            self.
        """
        if self._thread is not None:
            raise RuntimeError("StandinGame already started")
        self._listeners = {name: socket.create_server((self.host, port))
                           for name, port in zip(("data", "control"), self._ports)}
        self._ports = tuple(self._listeners[name].getsockname()[1] for name in ("data", "control"))
        self._thread = threading.Thread(target=self._run, name="StandinGame", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the game thread and close every socket; the ports then refuse connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def crash(self) -> None:
        """Fault injection: the game crashes. Every socket closes (clients read end-of-stream)
        and new connections are refused; there is no coming back (start a new game)."""
        self.stop()

    def __enter__(self) -> StandinGame:
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def data_port(self) -> int:
        """Telemetry port (bound after :meth:`start`)."""
        return self._ports[0]

    @property
    def control_port(self) -> int:
        """Control port (bound after :meth:`start`)."""
        return self._ports[1]

    @property
    def address(self) -> str:
        """``"host:data_port:control_port"``, what :class:`StandinGamepad` and
        :class:`StandinWindow` take."""
        return f"{self.host}:{self.data_port}:{self.control_port}"

    # ------------------------------------------------------------------ fault injection

    def go_silent(self) -> None:
        """Fault injection: the plugin stops sending records; connections stay open and the car
        and the control port keep running."""
        self._silent = True

    def resume(self) -> None:
        """Undo :meth:`go_silent` and a hang from :meth:`hang_on_reset`: records flow again and
        control requests are answered, the B press that hung the game and those sent during the
        hang first."""
        self._silent = False
        self._frozen = False

    def hang_on_reset(self, flag: bool = True) -> None:
        """Fault injection: on the next B press the game freezes, like a hung game: the car stops
        (after respawning), no records are sent, control requests (that B press included) are
        not answered and new connections are not served, while every socket stays open; until
        :meth:`resume`."""
        self._hang_next_reset = bool(flag)

    # ------------------------------------------------------------------ simulation

    def _respawn(self) -> None:
        self._pos = self._xz[0].copy()
        self._heading = math.atan2(self._tangent[0, 0], self._tangent[0, 1])
        self._speed = 0.0
        self._distance = 0.0
        self._index = 0
        self._finished = False

    def _advance(self, dt: float) -> None:
        """Advance the car by dt seconds, in substeps of at most ``_MAX_SUBSTEP_S``."""
        n = max(1, math.ceil(dt / _MAX_SUBSTEP_S))
        for _ in range(n):
            if self._finished:
                self._speed = 0.0
                return
            self._substep(dt / n)

    def _substep(self, dt: float) -> None:
        v = self._speed
        accel = (self._gas * self.accel_mps2 - self.accel_mps2 / self.max_speed_mps * v
                 - self._brake * self.brake_mps2)
        v = max(0.0, v + accel * dt)
        self._heading += self._steer * min(v / self.min_turn_radius_m, self.max_yaw_rate) * dt
        forward = np.array([math.sin(self._heading), math.cos(self._heading)])
        old = self._pos
        pos = old + v * dt * forward

        lo = max(0, self._index - self._search)
        near = self._xz[lo:self._index + self._search + 1]
        i = lo + int(np.argmin(((near - pos) ** 2).sum(axis=1)))
        offset = pos - self._xz[i]
        along = float(offset @ self._tangent[i])
        lateral = float(offset @ self._right[i])
        along_c = max(along, 0.0) if i == 0 else along
        lateral_c = min(max(lateral, -self.road_half_width), self.road_half_width)
        if (along_c, lateral_c) != (along, lateral):
            clamped = self._xz[i] + along_c * self._tangent[i] + lateral_c * self._right[i]
            normal = (pos - clamped) / np.linalg.norm(pos - clamped)
            # An inelastic hit: the speed into the wall is lost, the speed along it kept.
            v *= math.sqrt(max(0.0, 1.0 - float(forward @ normal) ** 2))
            pos = clamped

        self._pos = pos
        self._speed = v
        self._index = i
        self._distance += float(np.linalg.norm(pos - old))
        if self._arc[i] + along_c >= self._arc[-1] - self.finish_tolerance_m:
            self._finished = True
            self._speed = 0.0

    def _record(self) -> bytes:
        v = self._speed
        gear = 1 + sum(v >= top for top in _GEAR_TOP_MPS[:-1])
        lo = _GEAR_TOP_MPS[gear - 2] if gear > 1 else 0.0
        rpm = 1500.0 + 9000.0 * min(1.0, (v - lo) / (_GEAR_TOP_MPS[gear - 1] - lo))
        x, z = self._pos
        return RECORD.pack(v * 3.6, self._distance, x, self.track[self._index, 1], z, self._steer,
                           self._gas, self._brake, float(self._finished), gear, rpm)

    # ------------------------------------------------------------------ control requests

    def _handle(self, line: bytes) -> dict:
        """Serve one control request; returns the reply."""
        try:
            msg = json.loads(line)
            op = msg["op"]
            if op == "input":
                values = {key: float(msg[key]) for key in ("gas", "brake", "steer")}
                if not (0.0 <= values["gas"] <= 1.0 and 0.0 <= values["brake"] <= 1.0
                        and -1.0 <= values["steer"] <= 1.0):
                    raise ValueError(f"inputs out of range: {values}")
                self._gas, self._brake, self._steer = (values[k] for k in ("gas", "brake", "steer"))
            elif op == "button":
                if msg["name"] not in BUTTONS:
                    raise ValueError(f"unknown button {msg['name']!r}")
                if msg["name"] == "B":
                    self._respawn()
                    self._frozen, self._hang_next_reset = self._hang_next_reset, False
            elif op == "pose":
                x, z = self._pos
                y = float(self.track[self._index, 1])
                return {"ok": True, "x": float(x), "y": y, "z": float(z), "heading": self._heading,
                        "speed": self._speed, "finished": self._finished}
            elif op == "track":
                return {"ok": True, "points": self.track.tolist(),
                        "road_half_width": self.road_half_width}
            else:
                raise ValueError(f"unknown op {op!r}")
        except (ValueError, KeyError, TypeError) as err:
            return {"ok": False, "error": f"{type(err).__name__}: {err}"}
        return {"ok": True}

    # ------------------------------------------------------------------ the game thread

    def _tick(self, dt: float, data_clients: list[socket.socket]) -> None:
        """One game step of ``dt`` seconds, its record sent to every data client; nothing while
        frozen (a hung game), no record while silent."""
        if not self._frozen:
            self._advance(dt)
            if not self._silent:
                _broadcast(self._record(), data_clients)

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        data_clients: list[socket.socket] = []
        control_clients: dict[socket.socket, bytearray] = {}
        held: dict[socket.socket, bytes] = {}  # replies not sent yet
        served = False  # whether listeners and control clients are registered in `sel`

        def close_control(sock: socket.socket) -> None:
            if sock in sel.get_map():
                sel.unregister(sock)
            del control_clients[sock]
            held.pop(sock, None)
            sock.close()

        def serve_lines(sock: socket.socket) -> None:
            buf = control_clients[sock]
            while not self._frozen and (sock in held or b"\n" in buf):
                if sock not in held:
                    line, _, rest = bytes(buf).partition(b"\n")
                    buf[:] = rest
                    held[sock] = json.dumps(self._handle(line)).encode() + b"\n"
                if self._frozen:  # this request froze the game: the reply waits for resume()
                    return
                try:
                    sock.sendall(held.pop(sock))
                except OSError:
                    close_control(sock)
                    return

        def set_served(on: bool) -> None:
            socks = [*self._listeners.values(), *control_clients]
            for sock in socks:
                if on:
                    sel.register(sock, selectors.EVENT_READ)
                else:
                    sel.unregister(sock)
            if on:  # requests that arrived during a hang
                for sock in list(control_clients):
                    if sock in control_clients:
                        serve_lines(sock)

        period = 1.0 / self.rate_hz
        next_tick = last_step = time.monotonic()
        try:
            while not self._stop.is_set():
                if served == self._frozen:
                    served = not served
                    set_served(served)
                for key, _ in sel.select(max(0.0, next_tick - time.monotonic())):
                    sock = key.fileobj
                    if sock is self._listeners["data"]:
                        client = _accept(sock)
                        client.setblocking(False)
                        data_clients.append(client)
                    elif sock is self._listeners["control"]:
                        client = _accept(sock)
                        client.settimeout(1.0)  # bounds sendall to a client that stopped reading
                        control_clients[client] = bytearray()
                        sel.register(client, selectors.EVENT_READ)
                    elif sock in control_clients and not self._frozen:
                        chunk = _recv(sock)
                        control_clients[sock] += chunk
                        if not chunk or len(control_clients[sock]) > _MAX_LINE_BYTES:
                            close_control(sock)
                        else:
                            serve_lines(sock)

                now = time.monotonic()
                if now < next_tick:
                    continue
                self._tick(min(now - last_step, _MAX_TICK_S), data_clients)
                last_step = now
                next_tick = max(next_tick + period, now)
        finally:
            sel.close()
            for sock in [*data_clients, *control_clients, *self._listeners.values()]:
                sock.close()


def _recv(sock: socket.socket) -> bytes:
    """What ``sock`` has to read (up to 64 KiB); b"" when it closed or failed."""
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _accept(listener: socket.socket) -> socket.socket:
    """A new client of ``listener``, with Nagle's delay off (records are small and timed)."""
    client, _ = listener.accept()
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def _broadcast(record: bytes, clients: list[socket.socket]) -> None:
    """Send one data record to every client. A client that stopped reading (full buffer) or
    left is closed and removed from ``clients``: a partial record would misalign its stream."""
    for client in list(clients):
        try:
            sent = client.send(record)
        except OSError:
            sent = 0
        if sent != len(record):
            clients.remove(client)
            client.close()


class _ControlLink:
    """A client connection to a StandinGame's control port that never raises on a lost game:
    it reconnects on the next call, as tmrl's gamepad and screen capture keep working whatever
    the game does."""

    def __init__(self, address: str, timeout_s: float):
        self._sock: socket.socket | None = None
        self._endpoint = _control_endpoint(address)
        self._timeout_s = timeout_s

    def _connected(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection(self._endpoint, timeout=self._timeout_s)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self._sock

    def send(self, messages: list[dict]) -> bool:
        """Send without waiting for the replies (dropping those already in); True if sent."""
        try:
            sock = self._connected()
            sock.settimeout(self._timeout_s)
            sock.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
            sock.settimeout(0.0)
            while True:
                try:
                    if not sock.recv(65536):
                        raise ConnectionResetError("game closed the control connection")
                except BlockingIOError:
                    return True
        except OSError:
            self.close()
            return False

    def request(self, message: dict, timeout_s: float) -> dict | None:
        """Send and read the one-line reply; None if the game does not answer within timeout_s."""
        try:
            sock = self._connected()
            sock.sendall(json.dumps(message).encode() + b"\n")
            sock.settimeout(timeout_s)
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    raise ConnectionResetError("game closed the control connection")
                buf += chunk
            return json.loads(buf)
        except OSError:
            # A late reply would answer the next request: start over on a new connection.
            self.close()
            return None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    __del__ = close


class StandinGamepad:
    """The part of ``vgamepad.VX360Gamepad`` that tmrl's ``control_gamepad``,
    ``gamepad_reset`` and ``gamepad_close_finish_pop_up_tm20`` use, wired to a
    :class:`StandinGame`: gas = right trigger, brake = left trigger, steer = left stick x.

    As with vgamepad, setters only change the pad's state and :meth:`update` sends it: the
    triggers and stick as an ``input`` request, and a ``button`` request per newly pressed
    button. Like a virtual pad driver it never waits for the game: replies are not awaited, and
    a lost game is reconnected on the next update (updates sent meanwhile are lost and counted
    in :attr:`undelivered`). Values are quantised as vgamepad does (triggers to 1/255, stick to
    1/32767).

    Parameters
    ----------
    address : str
        ``"host:data_port:control_port"`` (:attr:`StandinGame.address`) or ``"host:control_port"``.
    """

    def __init__(self, address: str):
        self._link = _ControlLink(address, timeout_s=1.0)
        self._names = {bit: name for name, bit in BUTTONS.items()}
        self.undelivered = 0
        """Number of :meth:`update` calls that could not reach the game."""
        self.reset()
        self._sent_buttons = 0

    def right_trigger_float(self, value_float: float) -> None:
        """Gas, in [0, 1]."""
        self._right_trigger = _quantise(value_float, 0.0, 1.0, 255)

    def left_trigger_float(self, value_float: float) -> None:
        """Brake, in [0, 1]."""
        self._left_trigger = _quantise(value_float, 0.0, 1.0, 255)

    def left_joystick_float(self, x_value_float: float, y_value_float: float) -> None:
        """Steer = x in [-1, 1] (+ right); the game ignores y."""
        self._left_x = _quantise(x_value_float, -1.0, 1.0, 32767)

    def press_button(self, button: int) -> None:
        """Press an XUSB button (a bit of :data:`BUTTONS`)."""
        self._buttons |= self._bit(button)

    def release_button(self, button: int) -> None:
        """Release an XUSB button."""
        self._buttons &= ~self._bit(button)

    def reset(self) -> None:
        """Release everything (sent on the next :meth:`update`)."""
        self._right_trigger = self._left_trigger = self._left_x = 0.0
        self._buttons = 0

    def update(self) -> None:
        """Send the pad's state to the game."""
        pressed = self._buttons & ~self._sent_buttons
        messages = [{"op": "input", "gas": self._right_trigger, "brake": self._left_trigger,
                     "steer": self._left_x}]
        messages += [{"op": "button", "name": name} for bit, name in self._names.items()
                     if pressed & bit]
        if not self._link.send(messages):
            self.undelivered += 1
        self._sent_buttons = self._buttons

    def close(self) -> None:
        """Close the connection to the game."""
        self._link.close()

    def _bit(self, button: int) -> int:
        button = int(button)
        if button not in self._names:
            raise ValueError(f"unknown XUSB button 0x{button:04x}")
        return button


def _quantise(value: float, lo: float, hi: float, steps: int) -> float:
    value = float(value)
    if not lo <= value <= hi:
        raise ValueError(f"{value} is outside [{lo}, {hi}]")
    return round(value * steps) / steps


class StandinWindow:
    """tmrl's ``WindowInterface`` for a :class:`StandinGame`: screenshots of a top-down chase
    view, car-centred and heading-up.

    The car sits at column ``w // 2``, row ``44 * h // 49`` (where tmrl's LIDAR casts its rays
    from); the view is ``view_width_m`` wide. The road is mid-gray (110) with a dashed centre
    line and white start and finish lines, the outside dark (every channel < 55, where tmrl's
    LIDAR stops), the car a red box. The road is rasterised once per window size; a screenshot
    is one pose request and one ``cv2.warpAffine``.

    Like a screen capture it never fails on a lost game: when the game does not answer within
    ``pose_timeout_s`` (hung) or is gone, it returns the last frame again (a dark frame before
    the first one).

    Parameters
    ----------
    address : str
        ``"host:data_port:control_port"`` (:attr:`StandinGame.address`) or ``"host:control_port"``.
    width, height : int
        Screenshot size, pixels (tmrl's defaults: 256 x 128).
    view_width_m : float
        Width of the road view, m.
    pose_timeout_s : float
        How long a screenshot waits for the car's pose, s.
    """

    def __init__(self, address: str, width: int = 256, height: int = 128,
                 view_width_m: float = 50.0, pose_timeout_s: float = 0.1):
        self._link = _ControlLink(address, timeout_s=1.0)
        self.view_width_m = float(view_width_m)
        self.pose_timeout_s = float(pose_timeout_s)
        self._track: tuple[np.ndarray, float] | None = None
        self.move_and_resize(w=width, h=height)

    def move_and_resize(self, x: int = 0, y: int = 0, w: int | None = None,
                        h: int | None = None) -> None:
        """tmrl's signature: the position (x, y) has no meaning here; (w, h) set the screenshot
        size in pixels (None keeps the current one)."""
        self.w = int(w if w is not None else self.w)
        self.h = int(h if h is not None else self.h)
        self.x, self.y = x, y
        self._raster: np.ndarray | None = None
        self._last = np.empty((self.h, self.w, 4), np.uint8)
        self._last[:] = _OUTSIDE

    def screenshot(self) -> np.ndarray:
        """The current view.

        Returns
        -------
        np.ndarray
            uint8 [h, w, 4], BGRA (alpha 255), like tmrl's captures.
        """
        if self._raster is None and not self._build_raster():
            return self._last.copy()
        pose = self._link.request({"op": "pose"}, self.pose_timeout_s)
        if pose is None:
            return self._last.copy()
        scale = self.w / self.view_width_m
        u0, r0 = self.w // 2, 44 * self.h // 49
        c, s = math.cos(pose["heading"]), math.sin(pose["heading"])
        uc = (pose["x"] - self._x_min) * scale
        rc = (self._z_max - pose["z"]) * scale
        # Output pixel (u, r) -> raster pixel: the right of the car is (cos h, -sin h) in (x, z),
        # its front (sin h, cos h); raster columns grow with x, rows with -z.
        inverse = np.array([[c, -s, uc - c * u0 + s * r0],
                            [s, c, rc - s * u0 - c * r0]])
        frame = cv2.warpAffine(self._raster, inverse, (self.w, self.h),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=_OUTSIDE)
        half_w, half_l = round(scale), round(2 * scale)  # a 2 m x 4 m car
        frame[max(0, r0 - half_l):r0 + half_l, max(0, u0 - half_w):u0 + half_w] = _CAR
        self._last = frame
        return frame

    def close(self) -> None:
        """Close the connection to the game."""
        self._link.close()

    def _build_raster(self) -> bool:
        """Rasterise the road at the output scale; False if the game did not answer."""
        if self._track is None:
            reply = self._link.request({"op": "track"}, timeout_s=1.0)
            if reply is None:
                return False
            self._track = (np.asarray(reply["points"])[:, [0, 2]], reply["road_half_width"])
        xz, half = self._track
        scale = self.w / self.view_width_m
        margin = half + 2.0
        self._x_min = xz[:, 0].min() - margin
        self._z_max = xz[:, 1].max() + margin
        rows = math.ceil((self._z_max - xz[:, 1].min() + margin) * scale)
        cols = math.ceil((xz[:, 0].max() + margin - self._x_min) * scale)
        raster = np.empty((rows, cols, 4), np.uint8)
        raster[:] = _OUTSIDE

        shift = 4  # sub-pixel vertices: cv2 takes fixed-point coordinates
        pix = np.stack([(xz[:, 0] - self._x_min) * scale, (self._z_max - xz[:, 1]) * scale], 1)
        tangent = np.gradient(pix, axis=0)
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
        # In raster pixels (rows grow with -z) the car's right is the tangent turned clockwise.
        right = np.stack([-tangent[:, 1], tangent[:, 0]], 1) * half * scale

        def fixed(points: np.ndarray) -> np.ndarray:
            return np.round(points * (1 << shift)).astype(np.int32)

        def fixed_point(point: np.ndarray) -> tuple[int, int]:
            return tuple(int(v) for v in fixed(point))

        edges = np.concatenate([pix - right, (pix + right)[::-1]])
        cv2.fillPoly(raster, [fixed(edges)], _ROAD, cv2.LINE_AA, shift)
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xz, axis=0), axis=1))])
        dashed = (arc % 4.0) < 2.0  # 2 m dashes every 4 m: the road visibly moves on straights
        starts = np.flatnonzero(np.diff(np.r_[0, dashed.astype(np.int8)]) == 1)
        stops = np.flatnonzero(np.diff(np.r_[dashed.astype(np.int8), 0]) == -1) + 1
        dashes = [fixed(pix[a:b]) for a, b in zip(starts, stops) if b - a > 1]
        thin = max(1, round(0.3 * scale))
        if dashes:
            cv2.polylines(raster, dashes, False, _MARKING, thin, cv2.LINE_AA, shift)
        for i in (0, len(pix) - 1):
            cv2.line(raster, fixed_point(pix[i] - right[i]), fixed_point(pix[i] + right[i]),
                     _MARKING, max(1, round(0.5 * scale)), cv2.LINE_AA, shift)
        self._raster = raster
        return True
