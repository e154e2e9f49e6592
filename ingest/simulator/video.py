"""Raw per-trial camera videos: real, playable MJPEG-in-AVI files with tiny frames.

Written with PyAV (`av` on PyPI, FFmpeg's libraries in-process: ~2 ms per file, no
subprocess) so the bytes are deterministic. Layout (petrel archiving convention):
`video/<h2o>/<YYYYMMDD>[_<k>]/video/<h2o>_<campos>_<NNN>-0000.avi`, NNN the same file index
as the DLC CSV. Frame content encodes the frame number (a brightness ramp)."""
from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from .model import Session

WIDTH, HEIGHT, FPS = 32, 24, 100


def write_avi(path: Path, n_frames: int, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="avi") as c:
        st = c.add_stream("mjpeg", rate=FPS)
        st.width, st.height, st.pix_fmt = WIDTH, HEIGHT, "yuvj420p"
        for i in range(n_frames):
            img = np.full((HEIGHT, WIDTH, 3), (shade * 37 + i * 40) % 256, np.uint8)
            img[:, : WIDTH // 4] = 255 - img[:, : WIDTH // 4]
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in st.encode():
            c.mux(pkt)


def video_dir(root: Path, s: Session) -> Path:
    return root / "video" / s.h2o / f"{s.date_str}{s.suffix}" / "video"


def write_videos(root: Path, s: Session, n_frames: int) -> list:
    """One AVI per filmed trial and camera; returns manifest entries."""
    d = video_dir(root, s)
    out = []
    for campos, filmed in s.tracked.items():
        for k, num in filmed:
            p = d / f"{s.h2o}_{campos}_{k:03d}-0000.avi"
            write_avi(p, n_frames, shade=num)
            out.append({"camera": campos, "trial": num, "file_index": k, "frames": n_frames,
                        "path": str(p.relative_to(root))})
    return out
