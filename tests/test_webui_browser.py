"""webui.py in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

The server is the real entry point (``python webui.py --base_model <tiny> --server_port <free>``), so the
command line, the default 127.0.0.1 binding and the page all get exercised. scripts/test.sh installs
chromium when it is missing and it runs as root; without it this test is skipped (shown by ``-ra``).

The screenshot in docs/webui.md comes from the same code, against a running server:

    python webui.py --server_port 7860 &                  # the demo model
    python tests/test_webui_browser.py http://127.0.0.1:7860 assets/webui.png "酒驾撞人怎么判刑？"
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--window-size=1280,1100"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                       reason="needs Debian's chromium + chromium-driver (scripts/test.sh installs them as root)"),
]


def start_browser(user_data_dir: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # the system browser: selenium must not look for (or fetch) another
    for flag in FLAGS + [f"--user-data-dir={user_data_dir}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def ask(driver, url: str, question: str, timeout: float = 120) -> str:
    """Load the page, type ``question``, click 发送, wait until the answer is complete; returns the answer text."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    box = WebDriverWait(driver, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, "#lawgpt-input textarea"))
    box.send_keys(question)
    driver.find_element(By.CSS_SELECTOR, "#lawgpt-input button.submit-button").click()

    def finished(d):
        bots = d.find_elements(By.CSS_SELECTOR, "#lawgpt-chatbot .message.bot")
        done = d.find_elements(By.CSS_SELECTOR, "#lawgpt-input button.submit-button")  # back when generation ends
        return bots[-1].text.strip() if bots and done and bots[-1].text.strip() else False

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(finished)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def webui_server(tiny_model_dir, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("webui") / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "webui.py"), "--base_model", str(tiny_model_dir),
                                 "--server_port", str(port)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"webui.py exited: {log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail(f"webui.py did not listen on {url} within 90 s: {log.read_text()}")
        yield url, log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_question_answered_in_the_browser(webui_server, tmp_path):
    from selenium.webdriver.common.by import By

    url, log = webui_server
    assert f"on {url}" in log.read_text()  # bound to the loopback address by default
    driver = start_browser(str(tmp_path / "profile"))
    try:
        answer = ask(driver, url, "酒驾撞人怎么判刑？")
        assert len(answer) >= 2
        page = driver.find_element(By.TAG_NAME, "body").text
        assert "LaWGPT" in page and "不构成任何法律意见" in page and "酒驾撞人怎么判刑？" in page
        shot = tmp_path / "webui.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

        driver.find_element(By.CSS_SELECTOR, "#lawgpt-clear").click()  # clear: the conversation is gone
        time.sleep(1)
        assert not driver.find_elements(By.CSS_SELECTOR, "#lawgpt-chatbot .message.bot")
    finally:
        driver.quit()


if __name__ == "__main__":  # docs/webui.md's screenshot: URL, output PNG, question
    url, out, question = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    with tempfile.TemporaryDirectory() as profile:
        browser = start_browser(profile)
        try:
            print(ask(browser, url, question, timeout=600))
            time.sleep(1)
            # Scroll the conversation back to its top, so the picture shows the question and how the answer starts.
            browser.execute_script("""document.querySelectorAll('#lawgpt-chatbot *').forEach(
                e => { if (e.scrollHeight > e.clientHeight + 4) e.scrollTop = 0; });""")
            time.sleep(0.5)
            tmp = out.with_suffix(".tmp.png")
            browser.save_screenshot(str(tmp))
            os.replace(tmp, out)
        finally:
            browser.quit()
