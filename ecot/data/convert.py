"""Convert a dataset ecot reads (LeRobot v2.1 or v3.0, RLDS/TFDS) into a LeRobot v3.0 directory.

Episode by episode through the typed interface: each source episode (primary camera, state,
action, instruction, ecot metadata and ground truth) becomes one episode of the output. The
output writer is resumable, so an interrupted conversion continues where it stopped when run
again with the same arguments.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ecot.data import detect_format, open_dataset
from ecot.errors import UsageError
from ecot.io import write_atomic

CONVERT_META = "meta/ecot_convert.json"
TARGETS = ("lerobot-v3",)


def convert(src: str | Path, dst: str | Path, to: str = "lerobot-v3", video: bool = False, progress: bool = True,
            limit: int | None = None, **writer_kwargs: Any) -> dict:
    """Write the episodes of ``src`` into ``dst`` (LeRobot v3.0); returns a summary dict."""
    from tqdm import tqdm

    from ecot.data.lerobot import LeRobotWriter

    if to not in TARGETS:
        raise ValueError(f"unknown target format {to!r}; expected one of {', '.join(TARGETS)}")
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ValueError(f"source and destination are the same directory ({src}); write to a new directory")
    fmt = detect_format(src)
    ds = open_dataset(src)
    n = len(ds) if limit is None else min(len(ds), int(limit))
    settings = {"source": str(src.resolve()), "source_format": fmt, "to": to, "video": bool(video)}
    meta = dst / CONVERT_META
    if meta.exists():
        previous = json.loads(meta.read_text())
        if previous != settings:
            raise UsageError(f"{dst} holds a conversion with other settings ({previous}); "
                             "use the same arguments to resume, or another destination")
    elif (dst / "meta" / "info.json").exists():
        raise ValueError(f"{dst} already holds a dataset that is not a conversion of {src}; choose a new destination")
    name = next(iter(ds.norm_stats.keys()), src.name) if fmt.startswith("lerobot") else getattr(ds, "name", src.name)
    writer = LeRobotWriter(dst, fps=ds.fps or 5, robot_type=getattr(ds, "info", {}).get("robot_type") if hasattr(ds, "info") else None,
                           dataset_name=name, version="v3.0", video=video, **writer_kwargs)
    write_atomic(meta, json.dumps(settings, indent=2))
    start = len(writer)
    bar = tqdm(total=n, initial=min(start, n), desc="convert", unit="ep", disable=not progress, dynamic_ncols=True)
    try:
        for i in range(start, n):
            writer.add_episode(ds.episode(i))
            bar.update(1)
    finally:
        writer.close()
        bar.close()
    return {"source": str(src), "source_format": fmt, "out": str(dst), "episodes": len(writer), "new_episodes": max(0, n - start)}


def describe(path: str | Path) -> dict:
    """What ``ecot data info`` prints: format, counts, cameras, features, statistics keys."""
    fmt = detect_format(path)
    ds = open_dataset(path)
    out: dict[str, Any] = {"path": str(path), "format": fmt, "episodes": len(ds), "fps": ds.fps}
    if fmt.startswith("lerobot"):
        out["frames"] = ds.total_frames
        out["robot_type"] = ds.info.get("robot_type")
        out["tasks"] = len(ds.tasks)
        out["cameras"] = {c: {"stored_as": ds.features[c]["dtype"], "shape": ds.features[c]["shape"],
                              **({"codec": ds.features[c].get("info", {}).get("video.codec")} if ds.features[c]["dtype"] == "video" else {})}
                          for c in ds.camera_names}
        out["features"] = {k: {"dtype": v["dtype"], "shape": v["shape"]} for k, v in ds.features.items()}
        out["ground_truth"] = ds.has_ground_truth
    else:
        out["frames"] = sum(ds.episode_length(i) for i in range(len(ds)))
        out["cameras"] = {ds.image_key: {"stored_as": "image"}}
    out["image_key"] = ds.image_key
    out["norm_stats"] = ds.norm_stats.keys() if len(ds) else []
    return out
