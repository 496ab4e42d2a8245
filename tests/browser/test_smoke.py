import pytest
from playwright.sync_api import expect

from tests.browser.conftest import login

pytestmark = pytest.mark.django_db(transaction=True)


def test_staff_user_logs_in_and_sees_the_agents_overview(live_app, browser_page, staff_user, artifacts_dir):
    login(browser_page, live_app.url, "alice", "correct-horse-battery")

    browser_page.goto(live_app.url + "/")
    expect(browser_page.locator("h1")).to_have_text("Agents")
    browser_page.screenshot(path=artifacts_dir / "smoke-overview.png", full_page=True)
