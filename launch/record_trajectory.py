"""Record the reward trajectory of a TrackMania map: drive it once, to the finish.

    python launch/record_trajectory.py                      # ~/TmrlData/reward/reward.pkl
    python launch/record_trajectory.py --out maps/a01.pkl --max-seconds 120

Start the game with the OpenPlanet plugin (``docs/trackmania.md``), load the map, run this,
then drive the line the agent should follow. Positions are read from the plugin's records
(x, y, z in metres) from the first one until the finish flag is set; ``--max-seconds`` or
Ctrl-C stop earlier and save what was driven. Repeated positions (the plugin sends a record
every frame, also while the car waits for the countdown) are skipped, and so are records
that still carry the finish flag of a previous run (the finish screen). The path is then
resampled every ``--spacing`` metres along it
(:func:`envs.trackmania.reward.resample_trajectory`, tmrl's ``tools/record.py``) and saved in
tmrl's ``reward.pkl`` format (a pickled float64 [N, 3] array; ``.npy`` when the name ends so),
which tmrl's own tools read too, and which ``--trackmania.trajectory FILE`` (or the default
path) feeds to our reward.

An existing file is never overwritten. Exit status: 0 saved, 2 error (the game cannot be
reached or went silent, the file exists, fewer than 2 distinct positions); messages on
stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from envs.trackmania import GameConnectionError, OpenPlanetClient
from envs.trackmania.reward import resample_trajectory, save_trajectory
from rl.config import TrackmaniaConfig

DEFAULT_OUT = Path.home() / "TmrlData" / "reward" / "reward.pkl"
"""Where tmrl (and ``envs.trackmania`` without ``trackmania.trajectory``) looks."""


def record_positions(client: OpenPlanetClient, max_seconds: float | None) -> np.ndarray:
    """Positions of the driven car, from the first record until the finish flag.

    Parameters
    ----------
    client : OpenPlanetClient
        A connected plugin client; its records are ``(speed, distance, x, y, z, steer, gas,
        brake, finished, gear, rpm)``.
    max_seconds : float or None
        Stop after this many wall-clock seconds (None: only at the finish).

    Returns
    -------
    np.ndarray
        float64 [K, 3] positions in metres, consecutive ones distinct; on Ctrl-C, those
        recorded so far.

    Raises
    ------
    GameConnectionError
        The plugin closed the connection or sent nothing for 10 s.
    """
    positions: list[tuple[float, float, float]] = []
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    seen_running = False
    try:
        while deadline is None or time.monotonic() < deadline:
            data = client.retrieve_data()
            finished = data[8] > 0.5
            if finished and not seen_running:  # the finish screen of a previous run
                continue
            seen_running = True
            position = tuple(float(v) for v in data[2:5])
            if not positions or position != positions[-1]:
                positions.append(position)
            if finished:
                break
    except KeyboardInterrupt:
        print("interrupted: saving the path driven so far", file=sys.stderr)
    return np.asarray(positions, np.float64).reshape(-1, 3)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, record, resample and save. Returns the exit status (0, or 2
    with one message on stderr)."""
    defaults = TrackmaniaConfig()
    parser = argparse.ArgumentParser(
        prog="launch/record_trajectory.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"trajectory file, .pkl or .npy (default {DEFAULT_OUT})")
    parser.add_argument("--host", default=defaults.host, help="the plugin's host")
    parser.add_argument("--port", type=int, default=defaults.port, help="the plugin's port")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop recording after this many seconds (default: at the finish)")
    parser.add_argument("--spacing", type=float, default=0.1,
                        help="metres between trajectory points (tmrl: 0.1)")
    args = parser.parse_args(argv)
    out = args.out.expanduser()
    try:
        # Checked before driving a whole lap for nothing (save_trajectory checks again).
        if out.exists():
            raise FileExistsError(f"trajectory file {str(out)!r} exists; not overwriting it")
        if out.suffix.lower() not in (".pkl", ".npy"):
            raise ValueError(f"--out {str(out)!r}: the name must end in .pkl (tmrl's format) "
                             "or .npy")
        if args.max_seconds is not None and not args.max_seconds > 0:
            raise ValueError(f"--max-seconds must be > 0, got {args.max_seconds}")
        client = OpenPlanetClient(args.host, args.port)
        print(f"connected to the plugin at {client.address}: drive the track to the finish "
              "(Ctrl-C stops and saves)")
        try:
            positions = record_positions(client, args.max_seconds)
        finally:
            client.close()
        if len(positions) < 2:
            raise ValueError(f"recorded {len(positions)} distinct position(s): the car did not "
                             "move; nothing saved")
        points = resample_trajectory(positions, args.spacing)
        save_trajectory(out, points)
    except FileExistsError as e:
        print(f"error: {e}: pass --out NEW_FILE", file=sys.stderr)
        return 2
    except (GameConnectionError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    length = float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())
    print(f"saved {len(points)} points, {length:.1f} m of track, to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
