"""Writing videos people look at: labelled side-by-side panels, as GIF and MP4, a frame at a time.

GIF plays anywhere (READMEs, tensorboard-less machines); MP4 (H.264 through the ffmpeg binary that
``imageio-ffmpeg`` ships) is a hundredth of the size for long rollouts. :class:`VideoWriter` appends
frames as they are made, so a rollout of any length is written at constant memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import imageio
import numpy as np
from PIL import Image, ImageDraw

LABEL_HEIGHT = 12  # pixels of the caption strip above each panel, before scaling
FORMATS = (".gif", ".mp4")


def side_by_side(panels: Sequence[np.ndarray], labels: Sequence[str] | None = None, scale: int = 1) -> np.ndarray:
    """Frames ``(..., H, W, 3)`` of equal shape next to each other -> ``(..., H', W * len, 3)``.

    With ``labels``, a caption strip is drawn above each panel; ``scale`` enlarges by pixel repetition.
    """
    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    shapes = {np.shape(p) for p in panels}
    if len(shapes) != 1:
        raise ValueError(f"panels must have one shape, got {sorted(shapes)}")
    if labels is not None and len(labels) != len(panels):
        raise ValueError(f"{len(labels)} labels for {len(panels)} panels")
    frames = np.concatenate([np.asarray(p, dtype=np.uint8) for p in panels], axis=-2)
    frames = frames.repeat(scale, axis=-3).repeat(scale, axis=-2)
    if labels is None:
        return frames
    width = frames.shape[-2] // len(panels)
    strip = Image.new("RGB", (frames.shape[-2], LABEL_HEIGHT * scale), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    for i, label in enumerate(labels):
        size = 10 * scale  # shrunk until the label fits its panel, so that neighbours never overlap
        while size > 5 * scale and draw.textlength(label, font_size=size) > width - 4:
            size -= 1
        draw.text((i * width + 2, 0), label, fill=(255, 255, 255), font_size=size)
    caption = np.asarray(strip)
    header = np.broadcast_to(caption, (*frames.shape[:-3], *caption.shape))
    return np.concatenate([header, frames], axis=-3)


class VideoWriter:
    """Append uint8 frames ``(H, W, 3)`` to one or more files (``.gif`` loops, ``.mp4`` is H.264).

    Files are written under a temporary name and moved into place on a clean close, so an
    interrupted rollout never leaves a truncated video that looks complete.
    """

    def __init__(self, paths: Sequence[str | Path], fps: float) -> None:
        self.paths = [Path(p) for p in paths]
        bad = [str(p) for p in self.paths if p.suffix not in FORMATS]
        if bad:
            raise ValueError(f"video files must end in {' or '.join(FORMATS)}, got {bad}")
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = fps
        self.frames = 0
        self._writers = []
        self._tmp = []
        for path in self.paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
            self._tmp.append(tmp)
            if path.suffix == ".gif":
                self._writers.append(imageio.get_writer(tmp, mode="I", duration=1000 / fps, loop=0))
            else:  # macro_block_size 1: any frame size, no silent resizing
                self._writers.append(imageio.get_writer(tmp, fps=fps, macro_block_size=1, quality=8))

    def append(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[-1] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected a uint8 frame (H, W, 3), got {frame.shape} {frame.dtype}")
        for path, writer in zip(self.paths, self._writers):
            if path.suffix == ".mp4":  # H.264 in yuv420p needs even sides
                frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)))
            writer.append_data(frame)
        self.frames += 1

    def close(self, keep: bool = True) -> list[Path]:
        """Finish the files; move them into place when ``keep``, else delete them."""
        for writer in self._writers:
            writer.close()
        for tmp, path in zip(self._tmp, self.paths):
            if keep and self.frames:
                tmp.replace(path)
            else:
                tmp.unlink(missing_ok=True)
        return self.paths if keep and self.frames else []

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close(keep=kind is None)


def save_video(frames: np.ndarray, paths: Sequence[str | Path], fps: float) -> list[Path]:
    """Write all ``frames (T, H, W, 3)`` uint8 to each path (see :class:`VideoWriter`)."""
    with VideoWriter(paths, fps) as writer:
        for frame in frames:
            writer.append(frame)
    return writer.paths
