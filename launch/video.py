"""Videos of greedy episodes: MP4 files (imageio with imageio-ffmpeg, the ``[video]`` extra)
and animated GIFs in TensorBoard.

TensorBoard has no video dashboard: tensorboardX's ``add_video`` writes an image summary whose
picture is an animated GIF (encoded with moviepy), which the Images tab plays. :func:`add_gif`
writes the same summary with a GIF that imageio encodes.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["GIF_MAX_SIDE", "Mp4Writer", "VIDEO_EXTRA", "add_gif", "check_installed",
           "gif_bytes", "thumbnail"]

VIDEO_EXTRA = 'pip install -e ".[video]"'
"""How to install what videos need (imageio, imageio-ffmpeg)."""
_MODULES = ("imageio", "imageio_ffmpeg")
GIF_MAX_SIDE = 256
"""Longest side (pixels) of the GIFs written to TensorBoard: full-size pictures (CarRacing's
600x400) would add megabytes to the event file at every video."""


def check_installed(what: str) -> None:
    """Check, before any work starts, that videos can be written.

    Raises:
      ModuleNotFoundError: imageio or imageio-ffmpeg is not installed; the message names
        ``what`` (the option that asked for a video) and the ``[video]`` extra.
    """
    missing = [name for name in _MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(f"{what}: writing videos needs {' and '.join(missing)}, "
                                  f"which is not installed: install the [video] extra: "
                                  f"{VIDEO_EXTRA}")


def rgb(picture: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] of a gray uint8 [H, W] or RGB [H, W, 3] picture (the same array when
    it is RGB already)."""
    picture = np.asarray(picture, np.uint8)
    return np.repeat(picture[:, :, None], 3, axis=2) if picture.ndim == 2 else picture


class Mp4Writer:
    """An H.264 MP4 file written one picture at a time (a context manager; :meth:`close`
    finishes the file).

    Pictures keep their size; all must have the same. H.264 needs an even width and height:
    imageio's ``macro_block_size=2`` stretches an odd side by one pixel (its default of 16
    would resize most pictures, e.g. 600x400 to 608x400).

    Args:
      path: the file to write (its folder is made); fps: frames per second (> 0).

    Raises:
      ModuleNotFoundError: the ``[video]`` extra is not installed (:func:`check_installed`).
    """

    def __init__(self, path: str | Path, fps: float):
        check_installed(str(path))
        import imageio.v2 as imageio

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(path)
        self.frames = 0
        """Pictures written so far."""
        self._writer = imageio.get_writer(self.path, format="FFMPEG", fps=fps,
                                          codec="libx264", macro_block_size=2)

    def append(self, picture: np.ndarray) -> None:
        """Write one uint8 picture, gray [H, W] or RGB [H, W, 3]."""
        with warnings.catch_warnings():
            # The first picture starts ffmpeg (fork + exec, safe): JAX warns at any fork.
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called",
                                    category=RuntimeWarning)
            self._writer.append_data(rgb(picture))
        self.frames += 1

    def close(self) -> None:
        """Finish the file (ffmpeg writes the index at the end)."""
        self._writer.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def thumbnail(picture: np.ndarray, max_side: int = GIF_MAX_SIDE) -> np.ndarray:
    """RGB uint8 [h, w, 3] of a gray [H, W] or RGB [H, W, 3] picture with its longest side
    at most ``max_side``: every s-th pixel, s = ceil(max(H, W) / max_side) (1: unchanged)."""
    picture = rgb(picture)
    step = max(1, math.ceil(max(picture.shape[:2]) / max_side))
    return picture[::step, ::step]


def gif_bytes(pictures: list[np.ndarray], fps: float) -> bytes:
    """An animated GIF (looping) of RGB uint8 [H, W, 3] pictures of one size, played at
    ``fps`` (GIF delays are whole hundredths of a second).

    Raises:
      ModuleNotFoundError: the ``[video]`` extra is not installed.
    """
    check_installed("a GIF for TensorBoard")
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", np.stack(pictures), extension=".gif",
                       duration=1000.0 / fps, loop=0)


def add_gif(writer: Any, tag: str, pictures: list[np.ndarray], fps: float, step: int) -> None:
    """Write ``pictures`` (RGB uint8 [H, W, 3], one size) as an animated GIF image summary at
    ``step`` to a tensorboardX ``SummaryWriter``: TensorBoard's Images tab plays it under
    ``tag``."""
    from tensorboardX.proto.summary_pb2 import Summary

    height, width, channels = pictures[0].shape
    image = Summary.Image(height=height, width=width, colorspace=channels,
                          encoded_image_string=gif_bytes(pictures, fps))
    # As SummaryWriter.add_video writes its summary (it has no public call for encoded bytes).
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]),
                                          step)
