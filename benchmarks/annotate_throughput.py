"""Annotation throughput on sim ground truth.

1. Primitives + template reasoning, one core: steps per second of ``move_vectors`` +
   ``describe_all`` + ``template_reasoning`` on episodes already in memory (goal ≥ 20 000).
   Baseline, same run: the original per-step primitive code (a window, a diff, a Python
   describe per step) followed by the same template.
2. End to end: ``run_annotation`` on the dataset directory (read LeRobot episodes incl. PNG
   decoding, all stages with the offline backends, atomic per-episode results, assembly of the
   features file + step columns + validation report), 1 worker and 2 workers.

Usage: python benchmarks/annotate_throughput.py [--episodes 24] [--image-size 128] [--dataset DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import peak_rss_mib, write_result  # noqa: E402


def original_style_primitives(states: np.ndarray) -> list[str]:
    """The per-step loop of the original scripts (the baseline)."""
    from ecot.annotate.primitives import label_trajectory_per_step

    return [description for description, _ in label_trajectory_per_step(states)]


def time_loop(fn, min_seconds: float = 2.0) -> tuple[int, float]:
    reps, start = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return reps, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=24)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--dataset", default=None, help="existing sim dataset (default: collect one in a temp dir)")
    parser.add_argument("--out-dir", default=None, help="results directory (default benchmarks/results)")
    args = parser.parse_args()

    from ecot.annotate.boxes import GroundTruthBoxes
    from ecot.annotate.pipeline import AnnotateConfig
    from ecot.annotate.primitives import describe_all, move_vectors
    from ecot.annotate.runner import RunConfig, run_annotation
    from ecot.annotate.template import template_reasoning
    from ecot.data import open_dataset

    tmp = Path(tempfile.mkdtemp(prefix="ecot_annotate_bench_"))
    try:
        if args.dataset:
            root = Path(args.dataset)
        else:
            from ecot.sim.collect import CollectConfig, collect

            root = tmp / "sim"
            collect(root, CollectConfig(episodes=args.episodes, image_size=args.image_size), progress=False)
        ds = open_dataset(root)
        episodes = [ds[i] for i in range(len(ds))]
        steps = sum(len(e) for e in episodes)
        inputs = [(e, GroundTruthBoxes().boxes(e), e.ground_truth.gripper_points) for e in episodes]

        def ours():
            for e, boxes, points in inputs:
                template_reasoning(e, describe_all(move_vectors(e.states)), points, boxes)

        def baseline():
            for e, boxes, points in inputs:
                template_reasoning(e, original_style_primitives(e.states.copy()), points, boxes)

        def primitives_only():
            for e, _, _ in inputs:
                describe_all(move_vectors(e.states))

        def baseline_primitives_only():
            for e, _, _ in inputs:
                original_style_primitives(e.states.copy())

        ours()  # warm up
        reps, secs = time_loop(ours)
        ours_sps = reps * steps / secs
        reps, secs = time_loop(baseline)
        base_sps = reps * steps / secs
        reps, secs = time_loop(primitives_only)
        prim_sps = reps * steps / secs
        reps, secs = time_loop(baseline_primitives_only)
        base_prim_sps = reps * steps / secs

        end_to_end = {}
        for workers in (1, 2):
            out = tmp / f"out{workers}"
            start = time.perf_counter()
            summary = run_annotation(RunConfig(dataset_dir=str(root), out_dir=str(out), workers=workers,
                                               progress=False, annotate=AnnotateConfig()))
            secs = time.perf_counter() - start
            assert summary.complete and not summary.failed
            end_to_end[f"workers_{workers}"] = {
                "seconds": round(secs, 3),
                "steps_per_second": round(steps / secs, 1),
                "episodes_per_second": round(len(episodes) / secs, 2),
            }
        identical = (tmp / "out1" / "embodied_features.json").read_bytes() == (tmp / "out2" / "embodied_features.json").read_bytes()

        # LLM backend against a local OpenAI-protocol server that answers instantly: the cost of
        # prompting, HTTP, strict parsing and caching (a real model adds its own latency).
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "annotate"))
        from annotate_llm_server import ScriptedLLMServer

        with ScriptedLLMServer() as server:
            llm = AnnotateConfig(reasoning="openai", llm_model="bench", llm_base_url=server.url + "/v1")
            start = time.perf_counter()
            summary = run_annotation(RunConfig(dataset_dir=str(root), out_dir=str(tmp / "llm"), progress=False, annotate=llm))
            secs = time.perf_counter() - start
            assert summary.complete and not summary.failed
            requests = len(server.requests)
        end_to_end["openai_backend_local_instant_server"] = {
            "seconds": round(secs, 3), "steps_per_second": round(steps / secs, 1), "requests": requests,
        }

        write_result("annotate_throughput", {
            "dataset": {"episodes": len(episodes), "steps": steps, "image_size": int(episodes[0].images.shape[1])},
            "primitives_plus_template": {
                "steps_per_second_one_core": round(ours_sps, 1),
                "baseline_original_per_step_primitives_plus_template": round(base_sps, 1),
                "ratio": round(ours_sps / base_sps, 2),
                "goal_steps_per_second": 20000,
                "meets_goal": ours_sps >= 20000,
            },
            "primitives_only": {
                "steps_per_second_one_core": round(prim_sps, 1),
                "baseline_original_per_step": round(base_prim_sps, 1),
                "ratio": round(prim_sps / base_prim_sps, 2),
            },
            "end_to_end": end_to_end,
            "end_to_end_outputs_identical_across_worker_counts": identical,
            "peak_rss_mib": round(peak_rss_mib(), 1),
        }, Path(args.out_dir) if args.out_dir else None)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
