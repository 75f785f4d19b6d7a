"""The web app's network settings (issue 12): shown with where each comes from, saved
to the config file for the next start with the user's comments kept, a bad value
refused in the page, and the next start running with what was saved."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_messenger_e2e import Person, sandbox  # noqa: F401
from web_harness import Tab, browser  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture
def dana(sandbox: tuple[str, dict[str, str]], tmp_path: Path) -> Iterator[tuple[Person, Path]]:  # noqa: F811
    bootstrap, env = sandbox
    config = tmp_path / "dana.toml"
    config.write_text("# dana's settings\n[net]\nlan = false  # not at home\n")
    person = Person("dana", tmp_path, env, bootstrap)
    person.up("--config", str(config))
    try:
        yield person, config
    finally:
        person.kill()


def test_change_network_settings_for_the_next_start(
    browser: Any,  # noqa: F811
    dana: tuple[Person, Path],
) -> None:
    person, config = dana
    tab = Tab(browser, person)
    tab.status_screen()
    card = "section[aria-label='Network settings']"
    tab.page.wait_for_selector(f'{card} >> text="{config}"')
    assert not tab.page.is_checked("#set-lan")  # from the file
    assert tab.page.is_checked("#set-relay")  # the default
    # The bootstrap node came from a flag of `btchat up`: said so.
    assert tab.page.is_visible(f"{card} >> text=from a flag of `btchat up`")

    tab.page.fill("#set-proxy", "ftp://nowhere")
    tab.page.get_by_role("button", name="Save for the next start").click()
    tab.page.wait_for_selector(f"{card} .notice.error")
    assert "proxy" in (tab.page.text_content(f"{card} .notice.error") or "")
    assert config.read_text() == "# dana's settings\n[net]\nlan = false  # not at home\n"

    tab.page.fill("#set-proxy", "socks5://127.0.0.1:9")
    tab.page.uncheck("#set-relay")
    tab.page.get_by_role("button", name="Save for the next start").click()
    tab.page.wait_for_selector(f"{card} >> text=Restart btchat to apply")
    text = config.read_text()
    assert text.startswith("# dana's settings") and "# not at home" in text
    assert 'proxy = "socks5://127.0.0.1:9"' in text and "relay = false" in text
    assert tab.page.is_visible(f"{card} >> text=until btchat restarts")
    tab.own_origin_only()
    assert tab.errors == [], tab.errors
    tab.context.close()

    # The same from the command line.
    view = person.cli("settings")
    assert view["settings"]["relay"]["next_start"] is False
    person.cli("settings", "set", "upnp", "off")
    person.cli("settings", "set", "bootstrap", "10.0.0.1:6881, 10.0.0.2:6881")
    person.cli("settings", "unset", "proxy")
    text = config.read_text()
    assert "upnp = false" in text and "proxy" not in text and '"10.0.0.2:6881"' in text
    bad = person.cli("settings", "set", "relay", "maybe", check=False)
    assert bad.returncode == 1 and "relay is on or off" in bad.stderr
    bad = person.cli("settings", "set", "bootstrap", "nowhere", check=False)
    assert bad.returncode == 1 and "bootstrap" in bad.stderr
    person.cli("settings", "set", "proxy", "socks5://127.0.0.1:9")

    # The next start runs with it.
    person.kill()
    person.up("--config", str(config))
    status = person.cli("status")
    assert status["proxy"]["url"] == "socks5://127.0.0.1:9"
