"""Accessibility of the web app, in a real browser against two real daemons
(``web_harness.py``): axe-core (vendored for the tests only, ``tests/vendor/axe-core``)
checks every main screen in the light and the dark theme and the test fails on any
violation axe rates "serious" or "critical"; and a person with a keyboard only gets
from the page's first Tab to a conversation and sends a message.

The axe check's browser context has ``bypass_csp=True``: the page's CSP
(``script-src 'self'``) would otherwise refuse the script Playwright injects. Only
this test does so; every other browser test runs under the real CSP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_messenger_e2e import Person, sandbox  # noqa: F401
from web_harness import Tab, add_contact, browser, friends_by_api, people  # noqa: F401

pytestmark = pytest.mark.slow

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
BLOCKING = ("serious", "critical")
WHERE_FOCUS = "(document.activeElement.id || document.activeElement.textContent).trim()"

#: axe over the whole document; only what it finds, trimmed to what a person reads.
RUN_AXE = """async () => {
  const r = await axe.run(document, {resultTypes: ['violations']});
  return {
    passed: r.passes.map(p => p.id),
    violations: r.violations.map(v => ({
      id: v.id, impact: v.impact, help: v.help,
      nodes: v.nodes.map(n => ({target: n.target.join(' '), summary: n.failureSummary})),
    })),
  };
}"""

#: Rules that must have run and passed on every screen (so a broken injection or a
#: page axe cannot read does not pass as "no violations").
MUST_PASS = {"color-contrast", "button-name", "landmark-one-main"}


def axe_violations(tab: Tab, where: str) -> list[str]:
    """The serious and critical violations on the page as shown, as readable lines."""
    if not tab.page.evaluate("typeof window.axe !== 'undefined'"):
        tab.page.add_script_tag(path=str(AXE))
    found = tab.page.evaluate(RUN_AXE)
    missing = MUST_PASS - set(found["passed"])
    lines = [f"[{where}] axe did not pass {sorted(missing)}"] if missing else []
    for v in found["violations"]:
        if v["impact"] not in BLOCKING:
            continue
        for n in v["nodes"]:
            summary = " ".join((n["summary"] or "").split())
            lines.append(
                f"[{where}] {v['impact']} {v['id']} ({v['help']}): {n['target']}: {summary}"
            )
    return lines


def both_themes(tab: Tab, where: str) -> list[str]:
    out = []
    for theme in ("light", "dark"):
        tab.page.evaluate("t => { document.documentElement.dataset.theme = t; }", theme)
        tab.page.wait_for_timeout(50)  # let the styles apply before axe reads colours
        out += axe_violations(tab, f"{where}, {theme}")
    return out


def test_axe_finds_nothing_serious_on_any_screen(
    browser: Any,  # noqa: F811
    people: dict[str, Person],  # noqa: F811
    tmp_path: Path,
) -> None:
    alice_p, bob_p = people["alice"], people["bob"]
    alice = Tab(browser, alice_p, bypass_csp=True)  # see the module's docstring
    bob = Tab(browser, bob_p)
    alice.open()
    alice.page.wait_for_selector("#conv-list .empty")
    bad = both_themes(alice, "empty conversation list")

    bob.open()
    bob.page.wait_for_selector("#conv-list .empty")
    add_contact(bob, alice_p.id, "alice")
    alice.page.get_by_role("button", name="Add a contact").click()
    alice.page.wait_for_selector("#add-ref")
    bad += both_themes(alice, "add contact")
    alice.page.fill("#add-ref", bob_p.id)
    alice.page.fill("#add-name", "bob")
    alice.page.click("#add-submit")
    alice.page.wait_for_selector("#compose[aria-label='Message to bob']")

    # A conversation with messages both ways, ticks, a hostile one and a file offer.
    alice.page.fill("#compose", "hello bob")
    alice.page.press("#compose", "Enter")
    bob.page.wait_for_selector(".history .msg.in .text >> text=hello bob")
    alice.page.wait_for_selector(".history .msg.out .tick.t-read")
    bob_p.cli("send", "alice", "<b>hi</b> \x1b[31mred \u202egnp.exe")
    alice.page.wait_for_selector(".history .msg.in .ctl")
    offered = tmp_path / "notes.txt"
    offered.write_text("some notes\n")
    bob.client.send_file("alice", str(offered))
    alice.page.wait_for_selector(".history .msg.file.in button")
    bad += both_themes(alice, "conversation")
    alice.page.keyboard.press("Escape")  # back to the list: no conversation shown
    alice.page.goto(alice.origin + "/#/")
    alice.page.wait_for_selector(".conv[data-key]")
    bad += both_themes(alice, "conversation list")
    alice.page.get_by_role("button", name="Contact requests").click()
    alice.page.wait_for_selector("h3 >> text=Received")
    bad += both_themes(alice, "requests")
    alice.page.get_by_role("button", name="File transfers").click()
    alice.page.wait_for_selector(".transfer-list .transfer")
    bad += both_themes(alice, "files")
    alice.page.get_by_role("button", name="Status and settings").click()
    alice.page.wait_for_selector("#my-id")
    bad += both_themes(alice, "status")
    alice.page.click(".conv[data-key]")
    alice.page.click("text=Details")
    alice.page.wait_for_selector("dl >> text=Verified")
    bad += both_themes(alice, "contact details")
    alice.page.get_by_role("button", name="Channels").click()
    alice.page.fill("input[aria-label='New channel name']", "garden club")
    alice.page.click("form[aria-label='Create a channel'] button")
    alice.page.wait_for_selector(".screen-head h2 >> text=garden club")
    alice.page.fill("textarea[aria-label='Post to the channel']", "first post")
    alice.page.press("textarea[aria-label='Post to the channel']", "Enter")
    alice.page.wait_for_selector(".history .text >> text=first post")
    alice.page.wait_for_selector(".members li >> text=(you)")
    bad += both_themes(alice, "channel")
    alice.page.get_by_role("button", name="Channels").click()
    alice.page.wait_for_selector(".channel-list a")
    bad += both_themes(alice, "channels")

    assert not bad, "axe found serious or critical violations:\n" + "\n".join(bad)
    assert alice.errors == [] and bob.errors == []
    for tab in (alice, bob):
        tab.context.close()


def test_keyboard_only_reaches_a_conversation_and_sends(
    browser: Any,  # noqa: F811
    people: dict[str, Person],  # noqa: F811
) -> None:
    alice, bob = friends_by_api(browser, people)
    alice.open()
    alice.page.wait_for_selector(".conv[data-key]")
    page = alice.page
    # From the top of the page, Tab until the focus is on Bob's conversation; no mouse.
    path = []
    for _ in range(30):
        page.keyboard.press("Tab")
        path.append(page.evaluate(WHERE_FOCUS))
        if page.evaluate("document.activeElement.matches('.conv')"):
            break
    assert page.evaluate("document.activeElement.matches('.conv')"), path
    # The Tab order is the page's order: the sidebar's buttons, then the list.
    assert path[0] == "theme-toggle", path
    page.keyboard.press("Enter")
    page.wait_for_selector("#compose[aria-label='Message to bob']")
    # A function, not an expression: polling an expression string needs eval (the CSP says no).
    page.wait_for_function("() => document.activeElement?.id === 'compose'")
    page.keyboard.type("sent with the keyboard")
    page.keyboard.press("Enter")
    page.wait_for_selector(".history .msg.out .text >> text=sent with the keyboard")
    for _ in range(100):
        if any(m["text"] == "sent with the keyboard" for m in bob.history("alice")):
            break
        page.wait_for_timeout(100)
    assert any(m["text"] == "sent with the keyboard" for m in bob.history("alice"))
    # Escape takes the focus back to the conversation list; the Send button is reachable.
    page.keyboard.press("Escape")
    assert page.evaluate("document.activeElement.matches('.conv')")
    assert alice.errors == []
    alice.context.close()
