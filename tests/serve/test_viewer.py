"""The live viewer in headless Chromium (Debian's chromium + chromedriver, driven by Selenium):
it loads offline, shows the reasoning streaming in, draws the boxes and gripper trail over the
camera image, and its edit box changes what the policy is told for that session."""

from __future__ import annotations

import base64
import io
import shutil
import time

import numpy as np
import pytest
import requests

from .conftest import INSTRUCTION

BOX_COLOUR = (0xE6, 0x39, 0x46)  # the viewer's first box colour (PALETTE[0])
GRIPPER_COLOUR = (255, 0, 255)
SESSION = "viewer-robot"


def _chrome():
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.fail("headless Chromium + chromedriver are needed (scripts/setup.sh installs them with ECOT_BROWSER=1)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,900"):
        options.add_argument(arg)
    from selenium.webdriver.chrome.service import Service

    return webdriver.Chrome(options=options, service=Service(executable_path=driver_path))


def _wait(driver, script: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}; viewer state {driver.execute_script('return window.ecotViewer')}")


def _near(pixels: np.ndarray, colour: tuple, tol: int = 8) -> int:
    return int(np.all(np.abs(pixels[..., :3].astype(int) - np.array(colour)) <= tol, axis=-1).sum())


def test_viewer_streams_reasoning_draws_overlay_and_edits(server, scene_image):
    from PIL import Image

    from ecot.serve.protocol import json_numpy_encode

    driver = _chrome()
    try:
        driver.get(f"{server.url}/viewer")
        _wait(driver, "return document.getElementById('status').textContent === 'live'")
        # A robot steps with forced VISIBLE OBJECTS, so the boxes to draw are known.
        body = {"image": json_numpy_encode(scene_image), "instruction": INSTRUCTION, "session": SESSION,
                "edit": {"visible_objects": [["the red block", [80, 80, 120, 140]], ["the blue bowl", [150, 40, 200, 100]]]}}  # fmt: skip
        response = requests.post(f"{server.url}/v1/act", json=body, timeout=120)
        assert response.status_code == 200, response.text
        result = response.json()
        stats = _wait(driver, "const s = window.ecotViewer; return s.results >= 1 && s.drawnBoxes >= 2 ? s : null")
        assert stats["textEvents"] >= 3  # the reasoning arrived token by token before the result
        assert stats["steps"] >= 1

        page = driver.find_element("tag name", "body").text
        assert "VISIBLE OBJECTS" in page and "the red block [80, 80, 120, 140]" in page
        assert result["reasoning"]["task"] in page
        assert "latency:" in page and " ms" in driver.find_element("id", "latency").text
        assert driver.find_element("id", "action").text.startswith("[")

        shot = np.asarray(Image.open(io.BytesIO(driver.find_element("id", "canvas").screenshot_as_png)).convert("RGB"))
        assert shot.shape[0] >= 224 and shot.shape[1] >= 224
        assert _near(scene_image, BOX_COLOUR) == 0  # the colour is not in the camera image ...
        assert _near(shot, BOX_COLOUR) > 100  # ... so these pixels are the drawn box
        if result["reasoning"]["gripper_positions"]:
            assert _near(shot, GRIPPER_COLOUR) > 4

        # The edit box feeds the session's edits: the next step's PLAN is the typed one.
        driver.find_element("id", "edit-plan").send_keys("wave at the camera first")
        driver.find_element("id", "edit-apply").click()
        _wait(driver, "return document.getElementById('edit-status').textContent.startsWith('applied')")
        nxt = requests.post(f"{server.url}/v1/act", json={**body, "edit": None}, timeout=120).json()
        assert nxt["reasoning"]["plan"] == "wave at the camera first"
        _wait(driver, "return window.ecotViewer.results >= 2")
        assert "wave at the camera first" in driver.find_element("id", "fields").text
    finally:
        driver.quit()
