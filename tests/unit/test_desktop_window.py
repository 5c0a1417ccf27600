"""The desktop client's window offscreen (Qt's offscreen platform, no display, no devices):
every control is reachable by keyboard, harmful words are marked with their category, the
settings shown are the ones remembered, and a bad value is refused without starting."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
QtWidgets = pytest.importorskip("PySide6.QtWidgets")

from desktop.audio import DeviceList  # noqa: E402 (after the platform is chosen)
from desktop.client import Line, Span  # noqa: E402
from desktop.settings import DesktopSettings, Mode  # noqa: E402
from desktop.stream import LinkState  # noqa: E402
from desktop.window import MainWindow, highlighted  # noqa: E402


class NoDevices:
    def devices(self) -> DeviceList:
        return DeviceList(outputs=[("game", "game"), ("speakers", "speakers")], microphones=[])


@pytest.fixture(scope="module")
def app():
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


@pytest.fixture
def window(app, tmp_path):
    shown = MainWindow(DesktopSettings(mode=Mode.DUCK, device="game", language="en"), None,
                       tmp_path / "desktop.json", NoDevices)
    shown.show()
    yield shown
    shown.client = None
    shown.close()


def test_every_control_is_in_the_tab_order_and_has_a_mnemonic_label(window):
    controls = [window.url, window.token_field, window.language, window.interim, window.source, window.device,
                window.output, window.mode, window.duck_db, window.duck_target, window.bleep_delay,
                window.bleep_sound, window.start_button, window.transcript]
    seen, widget = [], window.url
    for _ in range(60):  # walk the focus chain as Tab does
        seen.append(widget)
        widget = widget.nextInFocusChain()
    reached = {id(w) for w in seen}
    assert all(id(c) in reached or any(id(child) in reached for child in c.findChildren(QtWidgets.QWidget))
               for c in controls)
    labels = [label for label in window.findChildren(QtWidgets.QLabel) if label.buddy() is not None]
    texts = [label.text() for label in labels] + [window.interim.text(), window.start_button.text()]
    mnemonics = [text.split("&")[1][0].lower() for text in texts if "&" in text]
    assert len(labels) >= 11 and len(mnemonics) == len(texts) == len(set(mnemonics))  # one Alt+letter each


def test_the_window_shows_the_remembered_settings_and_refuses_a_bad_one_without_starting(window):
    assert window.mode.currentText() == "duck" and window.language.currentText() == "en"
    assert window.device.currentData() == "game"
    window.url.setText("http://not-a-websocket")
    window.start()
    assert window.client is None and "ws://" in window.statusBar().currentMessage()


def test_harmful_words_are_marked_with_their_category_and_text_is_escaped():
    line = Line("segment", 0.0, 2.0, "you <b>little</b> bitch", True,
                [Span(1.0, 1.4, "bitch", "profanity")], {})
    html = highlighted(line)
    assert 'class="harmful"' in html and ">bitch</span>" in html and "[profanity]" in html
    assert "&lt;b&gt;little&lt;/b&gt;" in html


def test_a_refused_credential_shows_in_the_state(window):
    window._show_state(LinkState.AUTH_FAILED, "the edge refused the credential (HTTP 403)")
    assert "Credential refused" in window.state_label.text() and "403" in window.state_label.text()
