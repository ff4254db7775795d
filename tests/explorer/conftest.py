"""Explorer fixtures: a headless Chromium per module."""

from __future__ import annotations

from collections.abc import Iterator

import explorer_browser as browser
import pytest
from selenium import webdriver


@pytest.fixture(scope="module")
def chrome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    why = browser.available()
    if why:
        pytest.skip(why)
    driver = browser.start(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield driver
    finally:
        driver.quit()
