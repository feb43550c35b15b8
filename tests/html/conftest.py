"""A headless Chromium for the browser tests, started once per session.

The tests skip, saying why, only where no Chromium can be found; with
``DETLLM_REQUIRE_BROWSER=1`` (as ``.ci/run`` sets it after installing Debian's
``chromium``) a missing browser fails them instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ._chromium import Browser, find_chromium

NO_BROWSER = (
    "no Chromium found: install Debian's chromium and chromium-driver "
    "(apt-get install -y chromium chromium-driver) or set DETLLM_CHROMIUM to a Chromium executable"
)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = find_chromium()
    if executable is None:
        if os.environ.get("DETLLM_REQUIRE_BROWSER") == "1":
            pytest.fail(NO_BROWSER)
        pytest.skip(NO_BROWSER)
    chromium = Browser(executable)
    try:
        yield chromium
    finally:
        chromium.close()
