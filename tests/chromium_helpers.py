"""Headless Chromium for the tests that open a report page (installed by scripts/install_chromium.sh)."""

import re
import shutil
import subprocess


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def dump_dom(browser: str, page, profile) -> str:
    """The page's DOM after its scripts ran (the report's script counts the images the browser decoded)."""
    cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def images_loaded(dom: str) -> str:
    found = re.search(r'data-images-loaded="([^"]*)"', dom)
    assert found is not None, dom[:2000]
    return found.group(1)
