"""Camera features as MP4: ffmpeg (through imageio-ffmpeg) encodes, decodes and joins H.264 files.

H.264 without B-frames (no reordering delay, exact frame counts), its index up front (a
truncated file still plays), yuv420p, as LeRobot's own videos.

    encoder = VideoEncoder(path, height=96, width=96, fps=10)
    encoder.add(image)                  # (96, 96, 3) uint8, once per frame
    encoder.close()
    frames = decode(path, 96, 96)       # (n, 96, 96, 3) uint8
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from s2r.dataset.layout import DatasetError

VIDEO_CODEC = "h264"
FFMPEG_ENCODE = ["-crf", "18", "-bf", "0", "-movflags", "+faststart"]
"""H.264 without B-frames, index up front."""


def ffmpeg() -> str:
    """The ffmpeg executable imageio-ffmpeg ships; DatasetError when it is not installed."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise DatasetError("camera features need imageio-ffmpeg (pip install imageio-ffmpeg)") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


class VideoEncoder:
    """An ffmpeg process encoding RGB frames (H, W, 3) uint8 to an MP4 file."""

    def __init__(self, path: Path, height: int, width: int, fps: float) -> None:
        ffmpeg()
        import imageio_ffmpeg

        self.path = path
        self.frames = 0
        self._writer = imageio_ffmpeg.write_frames(
            str(path), (width, height), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
            quality=None, macro_block_size=1, ffmpeg_log_level="error", output_params=FFMPEG_ENCODE)
        self._writer.send(None)

    def add(self, image: np.ndarray) -> None:
        self._writer.send(np.ascontiguousarray(image))
        self.frames += 1

    def close(self) -> None:
        self._writer.close()


class Undecodable(Exception):
    """An MP4 of which not one frame decodes; the message is ffmpeg's reason."""


def decode(path: Path, height: int, width: int) -> np.ndarray:
    """Every frame of an MP4 that decodes, (n, H, W, 3) uint8; raises Undecodable when none can be read."""
    import imageio_ffmpeg

    frames = []
    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
        if tuple(meta["size"]) != (width, height):
            raise Undecodable(f"frames are {meta['size'][0]}×{meta['size'][1]}, features say {width}×{height}")
        for buffer in reader:
            frames.append(np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3))
    except (RuntimeError, OSError, StopIteration) as error:
        if not frames:
            raise Undecodable(_ffmpeg_reason(error)) from None
    return np.stack(frames)


def _ffmpeg_reason(error: BaseException) -> str:
    """ffmpeg's own complaint, out of the log that imageio-ffmpeg wraps in its exception."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    component = [line.split("] ", 1)[1] for line in lines if line.startswith("[") and "] " in line]
    return component[0] if component else (lines[0] if lines else type(error).__name__)


def concat_videos(parts: list[Path], out: Path, *, frames: int) -> None:
    """Join MP4 files of one encoding into `out` without re-encoding, keeping the first `frames` frames.

    Without B-frames packets come in display order, so cutting after `frames` packets is exact:
    it drops what a close() that crashed before its commit point had already appended.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.writelines(f"file '{p.resolve()}'\n" for p in parts)
    try:
        subprocess.run([ffmpeg(), "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", listing.name,
                        "-frames:v", str(frames), "-c", "copy", "-movflags", "+faststart", str(out)],
                       check=True, capture_output=True)
    except subprocess.CalledProcessError as error:
        reason = error.stderr.decode().strip()
        raise DatasetError(f"{out}: joining {len(parts)} episode videos failed: {reason}") from None
    finally:
        os.unlink(listing.name)
