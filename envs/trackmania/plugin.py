"""TrackMania 2020's data link: the OpenPlanet plugin's telemetry records and their client.

tmrl's OpenPlanet plugin (TMRL_GrabData) streams one :data:`RECORD` per game frame over TCP
(127.0.0.1:9000 in the game); :class:`OpenPlanetClient` keeps the newest. The stand-in game
(``envs.trackmania.standin``) serves the same records. :class:`GameConnectionError` is what
every part of the TrackMania env raises when the game cannot be reached or stops answering.

Standard library only: no tmrl, gymnasium or jax, so the stand-in and the env both import it.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

__all__ = ["DOCS", "GameConnectionError", "OpenPlanetClient", "RECORD"]

DOCS = "docs/trackmania.md"
"""The setup and troubleshooting guide the error messages point to."""
RECORD = struct.Struct("<11f")
"""One telemetry record of tmrl's OpenPlanet plugin: speed (km/h), distance (m), x, y, z (m),
steer, gas, brake, finished (0/1), gear, rpm; little-endian float32, 44 bytes."""


class GameConnectionError(RuntimeError):
    """The game (or its stand-in) cannot be reached, stopped sending data, or did not answer
    a reset or step in time. The message says what failed and where to look."""


class OpenPlanetClient:
    """Reads the plugin's '<11f' records over TCP, keeping the newest (as tmrl's
    ``TM2020OpenPlanetClient``, which gives no error when it cannot connect and never
    reconnects; this one says what went wrong).

    Args:
      host, port: the plugin's address (tmrl: 127.0.0.1:9000).
      connect_timeout: seconds to wait for the TCP connection.

    Raises:
      GameConnectionError: nothing listens at host:port, or the connection times out.
    """

    def __init__(self, host: str, port: int, connect_timeout: float = 5.0):
        self.address = f"{host}:{port}"
        try:
            self._sock = socket.create_connection((host, port), timeout=connect_timeout)
        except ConnectionRefusedError:
            raise GameConnectionError(
                f"connection refused at {self.address}: no OpenPlanet TMRL_GrabData plugin "
                "listens there. Start TrackMania 2020 with OpenPlanet, enable the plugin "
                f"(OpenPlanet menu > Developer > (Re)load plugin > TMRL Grab Data), see {DOCS}"
            ) from None
        except OSError as e:
            raise GameConnectionError(f"cannot connect to the plugin at {self.address}: {e} "
                                      f"(see {DOCS})") from None
        self._sock.settimeout(None)
        self._lock = threading.Lock()
        self._record: bytes | None = None
        self._error: str | None = None
        threading.Thread(target=self._read, daemon=True, name="openplanet-client").start()

    def _read(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = self._sock.recv(4096)
                if not chunk:
                    raise ConnectionError("the plugin closed the connection")
                buffer += chunk
                whole = len(buffer) // RECORD.size * RECORD.size
                if whole:
                    with self._lock:
                        self._record = buffer[whole - RECORD.size:whole]
                    buffer = buffer[whole:]
        except OSError as e:
            with self._lock:
                self._error = f"{type(e).__name__}: {e}"

    def retrieve_data(self, sleep_if_empty: float = 0.002, timeout: float = 10.0) -> tuple:
        """The newest record not returned before (waiting for one), as 11 floats.

        Raises:
          GameConnectionError: the connection broke, or no record came within ``timeout`` s.
        """
        deadline = time.perf_counter() + timeout
        while True:
            with self._lock:
                record, self._record, error = self._record, None, self._error
            if record is not None:
                return RECORD.unpack(record)
            if error is not None:
                raise GameConnectionError(f"lost the plugin at {self.address} ({error}): the "
                                          "game closed or crashed")
            if time.perf_counter() > deadline:
                raise GameConnectionError(
                    f"the plugin at {self.address} sent nothing for {timeout:.0f} s: is the game "
                    "paused, minimised or in a menu, or the plugin stopped? (see "
                    f"{DOCS}, 'plugin silent')")
            time.sleep(sleep_if_empty)

    def close(self) -> None:
        """Close the connection (the reader thread ends)."""
        try:
            self._sock.close()
        except OSError:
            pass
