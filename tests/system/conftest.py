"""Every test here runs real processes end to end: marked slow, so `make
check` leaves them to `make test`. Real Chromium for those that need a browser."""

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, Tab


def pytest_collection_modifyitems(config, items):
    here = __file__.rsplit("/", 1)[0]
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def tab(browser, live_server):
    opened: list[Tab] = []

    def open_tab(init_script: str | None = None) -> Tab:
        opened.append(Tab(browser, live_server, init_script))
        return opened[-1]

    yield open_tab
    for t in opened:
        t.context.close()
