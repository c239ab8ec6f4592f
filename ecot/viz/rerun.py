"""Evaluation episodes as a Rerun recording (``.rrd``), the viewer LeRobot users already know.

Optional: ``pip install 'ecot[viz]'`` (rerun-sdk). Per step of every episode, on the timeline
``step`` (and the episode as a path prefix ``episode_0007/``): the camera image, the policy's
VISIBLE OBJECTS boxes (labelled), its GRIPPER POSITION points and trail, the ground-truth
gripper point, and the reasoning text; per episode the instruction and the outcome.
Open with ``rerun out.rrd``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class RerunLogger:
    def __init__(self, path: str | Path, application_id: str = "ecot eval"):
        try:
            import rerun as rr
        except ImportError as err:
            raise ImportError("--rerun needs the Rerun SDK: pip install 'ecot[viz]' (rerun-sdk)") from err
        self.rr = rr
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.stream = rr.RecordingStream(application_id)
        self.stream.save(str(self.path))

    def log_episode(self, record: dict, frames: dict) -> None:
        rr, s = self.rr, self.stream
        prefix = f"episode_{record['index']:04d}"
        gt = frames.get("ground_truth")
        s.log(f"{prefix}/instruction", rr.TextDocument(
            f"{record['instruction']}\n\n{'success' if record['success'] else 'failure'} after {record['steps']} steps"),
            static=True)
        for t, step in enumerate(record["per_step"]):
            s.set_time("step", sequence=t)
            s.log(f"{prefix}/camera", rr.Image(frames["images"][t]))
            r = step.get("reasoning")
            if gt is not None:
                s.log(f"{prefix}/camera/gt_gripper", rr.Points2D([gt.gripper_points[t].tolist()], radii=1.5,
                                                                colors=[[0, 255, 0]]))
            if r:
                if r["visible_objects"]:
                    s.log(f"{prefix}/camera/objects", rr.Boxes2D(
                        array=[b for _, b in r["visible_objects"]], array_format=rr.Box2DFormat.XYXY,
                        labels=[n for n, _ in r["visible_objects"]]))
                if r["gripper_positions"]:
                    pts = [list(p) for p in r["gripper_positions"]]
                    s.log(f"{prefix}/camera/gripper", rr.Points2D(pts, radii=1.5, colors=[[255, 0, 255]]))
                    s.log(f"{prefix}/camera/gripper_trail", rr.LineStrips2D([pts], colors=[[255, 0, 255]]))
                text = "\n".join(f"{k.upper().replace('_', ' ')}: {r[k]}" for k in
                                 ("task", "plan", "subtask_reasoning", "subtask", "move_reasoning", "move"))
                s.log(f"{prefix}/reasoning", rr.TextDocument(text))
            s.log(f"{prefix}/action", rr.TextDocument(str(step["action"])))

    def close(self) -> None:
        self.stream.flush()
        self.stream.disconnect()

