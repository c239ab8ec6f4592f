"""ecot.viz.overlay: boxes and gripper points land where the reasoning says."""

import numpy as np
from PIL import Image

from ecot.reasoning import Reasoning
from ecot.viz.overlay import GRIPPER_COLOUR, PALETTE, draw_reasoning, reasoning_frame, save_gif


def test_boxes_and_gripper_points_are_drawn_at_their_pixels():
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    r = Reasoning(visible_objects=[("the cup", [10, 20, 30, 40])], gripper_positions=[(50, 50), (52, 48)])
    out = np.asarray(draw_reasoning(image, r, scale=2))
    assert out.shape == (128, 128, 3)
    assert tuple(out[60, 20]) == PALETTE[0]  # left edge of the box at x=10*2, y=30*2
    assert tuple(out[100, 100]) == GRIPPER_COLOUR  # the first (filled) gripper point at 50*2
    assert tuple(out[5, 120]) == (0, 0, 0)  # nothing drawn elsewhere


def test_coords_of_another_resolution_are_rescaled():
    image = np.zeros((112, 112, 3), dtype=np.uint8)
    r = Reasoning(gripper_positions=[(128, 128)])
    out = np.asarray(draw_reasoning(image, r, scale=1, coords_size=256))
    assert tuple(out[56, 56]) == GRIPPER_COLOUR


def test_frame_and_gif(tmp_path):
    image = np.full((32, 32, 3), 80, dtype=np.uint8)
    r = Reasoning(task="stack the cups", move="move down", visible_objects=[("cup", [40, 40, 10, 10])])
    frame = reasoning_frame(image, r, header="step 0", action=[0.1] * 7)
    assert frame.dtype == np.uint8 and frame.shape[1] == 64 and frame.shape[0] > 64
    path = save_gif([frame, frame[:80]], tmp_path / "out.gif")
    gif = Image.open(path)
    assert gif.n_frames == 2 and gif.size == (frame.shape[1], frame.shape[0])
