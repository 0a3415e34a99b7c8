"""The web page in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``, installed by
``scripts/test.sh``) driven by Selenium, against the real server. A new user's paths: type a prompt and
Generate; read a PNG's parameters back and make the same picture again; paint a mask and inpaint; See inside.
Screenshots of each go to ``test-output/browser/`` (git-ignored)."""
from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.server.conftest import ROOT

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (scripts/test.sh installs it)")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/test.sh installs them with apt)",
                allow_module_level=True)

SHOTS = ROOT / "test-output" / "browser"
WAIT = 240  # seconds for one generation on a busy 2-core machine
PROMPT = "a large red circle at the top left"


@pytest.fixture(scope="module")
def page(server):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(DRIVER), options=options)
    SHOTS.mkdir(parents=True, exist_ok=True)
    driver.get(server.root + "/")
    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
    yield driver
    driver.quit()


def by_id(driver, element_id: str):
    return driver.find_element(By.ID, element_id)


def fill(driver, element_id: str, value) -> None:
    field = by_id(driver, element_id)
    field.clear()
    field.send_keys(str(value))


def cards(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "#gallery .card")


def generate_and_wait(driver) -> None:
    """Click Generate and wait for a new gallery card (the newest comes first)."""
    before = len(cards(driver))
    by_id(driver, "generate").click()
    WebDriverWait(driver, WAIT).until(lambda d: len(cards(d)) > before or by_id(d, "error").text)
    assert by_id(driver, "error").text == ""


def newest_image(driver) -> tuple[str, Image.Image]:
    src = cards(driver)[0].find_element(By.TAG_NAME, "img").get_attribute("src")
    data = src.split(",", 1)[1]
    return data, Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def upload(driver, input_id: str, path: Path) -> None:
    """Choose a file in a (hidden) file input, as the "choose a file" button does."""
    driver.execute_script("arguments[0].hidden = false;", by_id(driver, input_id))
    by_id(driver, input_id).send_keys(str(path))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def first(page, server):
    """txt2img from the page: prompt, 4 steps, seed 7; the picture and its infotext appear in the gallery."""
    fill(page, "prompt", PROMPT)
    fill(page, "steps", 4)
    fill(page, "seed", 7)
    generate_and_wait(page)
    page.save_screenshot(str(SHOTS / "1-txt2img.png"))
    return newest_image(page)


def test_txt2img_shows_the_picture_and_its_infotext(page, server, first):
    data, image = first
    infotext = cards(page)[0].find_element(By.CSS_SELECTOR, "pre").text
    assert infotext.splitlines()[0] == PROMPT and "Steps: 4" in infotext and "Seed: 7" in infotext
    assert image.size == (32, 32)  # the model's native size, the page's default
    link = cards(page)[0].find_element(By.LINK_TEXT, "Download PNG")
    assert link.get_attribute("download") == "nanoldm-7.png" and data in link.get_attribute("href")
    # the same request through the API gives the same pixels (the page starts from the model's own CFG scale, the
    # built-in's 4; the API keeps A1111's default, 7)
    assert "CFG scale: 4," in infotext
    api = server.post("txt2img", json={"prompt": PROMPT, "steps": 4, "seed": 7, "width": 32, "height": 32,
                                       "sampler_name": "Euler a", "cfg_scale": 4, "batch_size": 1}).json()
    reference = Image.open(io.BytesIO(base64.b64decode(api["images"][0]))).convert("RGB")
    np.testing.assert_array_equal(pixels(image), pixels(reference))
    assert not by_id(page, "seed-reuse").get_attribute("disabled")


def test_png_info_round_trip_makes_the_same_picture(page, first, tmp_path):
    data, image = first
    path = tmp_path / "made.png"
    path.write_bytes(base64.b64decode(data))
    fill(page, "seed", -1)  # the fields hold something else before the parameters are sent over
    fill(page, "prompt", "something else")
    page.find_element(By.CSS_SELECTOR, '.tabs [data-tab="pnginfo"]').click()
    upload(page, "png-file", path)
    WebDriverWait(page, 60).until(lambda d: "Seed: 7" in by_id(d, "png-parameters").text)
    page.save_screenshot(str(SHOTS / "2-png-info.png"))
    by_id(page, "png-send").click()
    assert by_id(page, "prompt").get_attribute("value") == PROMPT
    assert by_id(page, "seed").get_attribute("value") == "7" and by_id(page, "steps").get_attribute("value") == "4"
    generate_and_wait(page)
    np.testing.assert_array_equal(pixels(newest_image(page)[1]), pixels(image))


def test_paint_a_mask_and_inpaint(page, first, tmp_path):
    data, image = first
    path = tmp_path / "start.png"
    path.write_bytes(base64.b64decode(data))
    page.find_element(By.CSS_SELECTOR, '.tabs [data-tab="img2img"]').click()
    upload(page, "init-file", path)
    WebDriverWait(page, 30).until(lambda d: by_id(d, "paint").is_displayed())
    canvas = by_id(page, "mask-canvas")
    assert canvas.size["width"] == 256  # 32 pixels shown 8 times larger
    fill(page, "prompt", "a blue square at the bottom right")
    page.execute_script("arguments[0].value = 40;", by_id(page, "brush-size"))
    # a stroke across the bottom right quarter (offsets from the canvas centre)
    ActionChains(page).move_to_element_with_offset(canvas, 20, 30).click_and_hold() \
        .move_by_offset(60, 0).move_by_offset(0, 50).move_by_offset(-60, 0).release().perform()
    page.execute_script("arguments[0].value = 1; arguments[0].dispatchEvent(new Event('input'));", by_id(page, "strength"))
    page.save_screenshot(str(SHOTS / "3-mask.png"))
    generate_and_wait(page)
    page.save_screenshot(str(SHOTS / "3-inpainted.png"))
    result = pixels(newest_image(page)[1])
    before = pixels(image)
    top_left = (slice(0, 12), slice(0, 12))  # far from the stroke: kept (the original is pasted back)
    assert np.abs(result[top_left] - before[top_left]).max() <= 1
    bottom_right = (slice(20, 28), slice(20, 26))  # painted: redrawn
    assert np.abs(result[bottom_right] - before[bottom_right]).max() > 8
    # invert and clear act on the painted mask
    by_id(page, "mask-invert").click()
    assert page.execute_script("const c = arguments[0]; return c.getContext('2d').getImageData(0, 0, 1, 1).data[3];",
                               canvas) == 255
    by_id(page, "mask-clear").click()
    assert page.execute_script("const c = arguments[0]; return c.getContext('2d').getImageData(0, 0, 1, 1).data[3];",
                               canvas) == 0


def test_see_inside_shows_the_trajectory_and_a_map_per_word(page, first):
    page.find_element(By.CSS_SELECTOR, '.tabs [data-tab="txt2img"]').click()
    card = [c for c in cards(page) if "Seed: 7" in c.text and c.find_elements(By.XPATH, ".//button")][-1]
    card.find_element(By.XPATH, ".//button[text()='See inside']").click()
    WebDriverWait(page, WAIT).until(lambda d: by_id(d, "inside-result").is_displayed() or by_id(d, "error").text)
    steps = page.find_elements(By.CSS_SELECTOR, "#inside-steps img")
    assert len(steps) == 4
    chips = page.find_elements(By.CSS_SELECTOR, "#inside-words .chip")
    assert [chip.get_attribute("data-word") for chip in chips] == PROMPT.split()
    assert all(chip.text.endswith("%") for chip in chips)  # each word's share
    red = chips[PROMPT.split().index("red")]
    shown = by_id(page, "inside-map").get_attribute("src")
    red.click()
    assert red.get_attribute("aria-pressed") == "true" and by_id(page, "inside-map").get_attribute("src") != shown
    assert by_id(page, "inside-map-caption").text == 'Where the picture looked at "red"'
    # the explained picture is the gallery's picture
    explained = by_id(page, "inside-image").get_attribute("src").split(",", 1)[1]
    picture = Image.open(io.BytesIO(base64.b64decode(explained))).convert("RGB")
    np.testing.assert_array_equal(pixels(picture), pixels(first[1]))
    page.save_screenshot(str(SHOTS / "4-see-inside.png"))
