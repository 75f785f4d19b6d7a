"""Adding a contact with the camera in the web app (issue 12): Chromium's fake camera
plays a video of the code; the page sends frames to the daemon until it reads one, then
fills the ID in and releases the camera. (Its own module: the fake camera is a flag of
the browser's launch, and one Playwright runs per module.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_messenger_e2e import Person, sandbox  # noqa: F401
from test_web_qr_scan import add_screen, qr_video
from web_harness import Tab, launched, people  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture
def camera(people: dict[str, Person], tmp_path: Path) -> Iterator[Any]:  # noqa: F811
    video = qr_video(people["bob"].id, tmp_path / "qr.y4m")
    with launched(
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}",
    ) as b:
        yield b


def test_add_a_contact_with_the_camera(camera: Any, people: dict[str, Person]) -> None:  # noqa: F811
    alice_p, bob = people["alice"], people["bob"]
    alice = Tab(camera, alice_p)
    add_screen(alice)
    alice.page.get_by_role("button", name="Scan with the camera").click()
    alice.page.wait_for_selector("text=Read from the QR code")
    assert alice.page.input_value("#add-ref") == bob.id
    alice.page.wait_for_selector("video", state="detached")  # the camera is released
    assert alice.page.is_visible("text=Scan with the camera")
    assert alice.errors == [], alice.errors
    alice.context.close()
