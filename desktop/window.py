"""The desktop client's window (PySide6): connection state, the live transcript with harmful
words highlighted and their categories, the mode and its settings, a level meter and a tray
icon. Every control has a keyboard mnemonic (Alt+letter) and sits in the tab order; Ctrl+Return
starts and stops. What is changed is remembered (desktop.settings)."""

from __future__ import annotations

import html
import json
import logging
import sys
import time
from pathlib import Path

from pydantic import ValidationError
from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QColor, QIcon, QKeySequence, QPainter, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QProgressBar,
    QPushButton,
    QSystemTrayIcon,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from desktop import settings as stored
from desktop.audio import DeviceLost, open_system
from desktop.client import DesktopClient, Line, Span
from desktop.settings import BleepSound, DesktopSettings, Mode, Source
from desktop.stream import LinkState
from desktop.volume import VolumeError
from moderation.protocol import WHISPER_LANGUAGES

logger = logging.getLogger(__name__)

MAX_LINES = 500
"""Transcript lines kept in the window (older ones scroll away)."""
STATE_COLOURS = {LinkState.LIVE: "#1b7f3b", LinkState.CONNECTING: "#8a6d00", LinkState.RECONNECTING: "#b35c00",
                 LinkState.AUTH_FAILED: "#b00020", LinkState.FAILED: "#b00020", LinkState.STOPPED: "#555555"}
STATE_TEXT = {LinkState.LIVE: "Live", LinkState.CONNECTING: "Connecting…", LinkState.RECONNECTING: "Reconnecting…",
              LinkState.AUTH_FAILED: "Credential refused", LinkState.FAILED: "Failed", LinkState.STOPPED: "Stopped"}


class Bridge(QObject):
    """The client's view: its calls come from the client's threads and reach the window as
    queued Qt signals, on the window's thread."""

    linked = Signal(object, str)
    lined = Signal(object)
    levelled = Signal(float)
    warned = Signal(str, str)
    acted = Signal(object, object)

    def link(self, state: LinkState, detail: str) -> None:
        self.linked.emit(state, detail)

    def line(self, line: Line) -> None:
        self.lined.emit(line)

    def level(self, dbfs: float) -> None:
        self.levelled.emit(dbfs)

    def warning(self, code: str, message: str) -> None:
        self.warned.emit(code, message)

    def action(self, mode: Mode, span: Span) -> None:
        self.acted.emit(mode, span)


def highlighted(line: Line) -> str:
    """The line as HTML: harmful words marked (the span's words found in the text; a span over
    the whole text marks all of it) with their category after them."""
    text, marks = line.text, []
    for span in line.spans:
        at = text.find(span.text.strip()) if span.text.strip() else -1
        marks.append((at, at + len(span.text.strip()), span.category) if at >= 0 else (0, len(text), span.category))
    out, pos = [], 0
    for start, end, category in sorted(m for m in marks if m[0] >= 0):
        if start < pos:
            continue
        out.append(html.escape(text[pos:start]))
        out.append(f'<span class="harmful" style="background:#ffd6d6;color:#8b0000;font-weight:bold">'
                   f'{html.escape(text[start:end])}</span>'
                   f'<small style="color:#8b0000"> [{html.escape(category)}]</small>')
        pos = end
    out.append(html.escape(text[pos:]))
    when = time.strftime("%H:%M:%S", time.localtime(line.at))
    kind = "<i>interim</i> " if line.kind == "interim" else ""
    late = " <small>(late)</small>" if line.late else ""
    return f'<p><span style="color:#777">{when}</span> {kind}{"".join(out)}{late}</p>'


def tray_icon(colour: str) -> QIcon:
    pixmap = QPixmap(32, 32)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QColor(colour))
    painter.setPen(Qt.PenStyle.NoPen)
    painter.drawEllipse(4, 4, 24, 24)
    painter.end()
    return QIcon(pixmap)


class MainWindow(QMainWindow):
    def __init__(self, settings: DesktopSettings, token: str | None, settings_path: Path | None, audio_factory,
                 echo=None):
        super().__init__()
        self.settings, self.token, self.settings_path = settings, token, settings_path
        self.audio_factory, self.echo = audio_factory, echo
        self.client: DesktopClient | None = None
        self.bridge = Bridge()
        self.state = LinkState.STOPPED
        self.lines: list[Line] = []
        self.setWindowTitle("Speech moderation")
        self.setCentralWidget(self._build())
        self._connect_bridge()
        self._build_tray()
        QShortcut(QKeySequence("Ctrl+Return"), self, self.toggle)

    # -- layout ----------------------------------------------------------------------------------

    def _build(self) -> QWidget:
        root = QWidget()
        layout = QVBoxLayout(root)
        top = QHBoxLayout()
        top.addWidget(self._connection_box())
        top.addWidget(self._action_box())
        layout.addLayout(top)
        status = QHBoxLayout()
        self.state_label = QLabel()
        self.state_label.setAccessibleName("connection state")
        self.meter = QProgressBar()
        self.meter.setRange(-60, 0)
        self.meter.setFormat("%v dBFS")
        self.meter.setAccessibleName("input level")
        self.start_button = QPushButton("&Start")
        self.start_button.clicked.connect(self.toggle)
        status.addWidget(self.state_label, 2)
        status.addWidget(QLabel("Level"))
        status.addWidget(self.meter, 3)
        status.addWidget(self.start_button)
        layout.addLayout(status)
        transcript_label = QLabel("&Transcript")
        self.transcript = QTextBrowser()
        self.transcript.document().setMaximumBlockCount(MAX_LINES)  # the oldest lines go first
        self.transcript.setAccessibleName("transcript")
        transcript_label.setBuddy(self.transcript)
        layout.addWidget(transcript_label)
        layout.addWidget(self.transcript, 1)
        self.counters = QLabel()
        self.statusBar().addPermanentWidget(self.counters)
        self._show_state(LinkState.STOPPED, "")
        self.resize(900, 620)
        return root

    def _connection_box(self) -> QGroupBox:
        box, form = QGroupBox("Connection"), QFormLayout()
        self.url = QLineEdit(self.settings.url)
        self.token_field = QLineEdit(self.token or "")
        self.token_field.setEchoMode(QLineEdit.EchoMode.Password)
        self.language = QComboBox()
        self.language.addItems(sorted(WHISPER_LANGUAGES))
        self.language.setCurrentText(self.settings.language)
        self.interim = QCheckBox("&Interim results (flags within about a second)")
        self.interim.setChecked(self.settings.interim)
        self.source = QComboBox()
        self.source.addItems([s.value for s in Source])
        self.source.setCurrentText(self.settings.source.value)
        self.device = QComboBox()
        self.device.setEditable(True)
        self.output = QComboBox()
        self.output.setEditable(True)
        self._fill_devices()
        for label, widget in (("&URL", self.url), ("Tok&en", self.token_field), ("&Language", self.language),
                              ("", self.interim), ("S&ource", self.source), ("&Device", self.device),
                              ("Out&put", self.output)):
            self._row(form, label, widget)
        box.setLayout(form)
        return box

    def _action_box(self) -> QGroupBox:
        box, form = QGroupBox("On harmful speech"), QFormLayout()
        self.mode = QComboBox()
        self.mode.addItems([m.value for m in Mode])
        self.mode.setCurrentText(self.settings.mode.value)
        self.duck_db = self._spin(self.settings.duck_db, 1, 60, " dB")
        self.duck_target = QLineEdit(self.settings.duck_target)
        self.bleep_delay = self._spin(self.settings.bleep_delay_s, 0.5, 10, " s")
        self.bleep_sound = QComboBox()
        self.bleep_sound.addItems([s.value for s in BleepSound])
        self.bleep_sound.setCurrentText(self.settings.bleep_sound.value)
        for label, widget in (("&Mode", self.mode), ("Duck b&y", self.duck_db), ("Duc&k target", self.duck_target),
                              ("&Bleep delay", self.bleep_delay), ("Bleep sou&nd", self.bleep_sound)):
            self._row(form, label, widget)
        box.setLayout(form)
        return box

    @staticmethod
    def _spin(value: float, low: float, high: float, suffix: str) -> QDoubleSpinBox:
        spin = QDoubleSpinBox()
        spin.setRange(low, high)
        spin.setSingleStep(0.5)
        spin.setValue(value)
        spin.setSuffix(suffix)
        return spin

    @staticmethod
    def _row(form: QFormLayout, label: str, widget: QWidget) -> None:
        if not label:
            form.addRow(widget)
            return
        text = QLabel(label)
        text.setBuddy(widget)
        widget.setAccessibleName(label.replace("&", ""))
        form.addRow(text, widget)

    def _fill_devices(self) -> None:
        self.device.addItem("(default)", None)
        self.output.addItem("(default)", None)
        try:
            devices = self.audio_factory().devices()
        except DeviceLost as exc:
            self.statusBar().showMessage(str(exc))
            return
        for device_id, name in devices.outputs:
            self.device.addItem(f"{name} ({device_id})", device_id)
            self.output.addItem(f"{name} ({device_id})", device_id)
        for combo, wanted in ((self.device, self.settings.device), (self.output, self.settings.output)):
            index = combo.findData(wanted)
            if index >= 0:
                combo.setCurrentIndex(index)
            elif wanted:
                combo.setEditText(wanted)

    def _build_tray(self) -> None:
        self.tray = QSystemTrayIcon(tray_icon(STATE_COLOURS[LinkState.STOPPED]), self)
        menu = QMenu(self)
        for text, slot in (("Show", self.showNormal), ("Start / stop", self.toggle), ("Quit", self.close)):
            action = QAction(text, menu)
            action.triggered.connect(slot)
            menu.addAction(action)
        self.tray.setContextMenu(menu)
        self.tray.setToolTip("Speech moderation")
        if QSystemTrayIcon.isSystemTrayAvailable():
            self.tray.show()

    def _connect_bridge(self) -> None:
        self.bridge.linked.connect(self._show_state)
        self.bridge.lined.connect(self._show_line)
        self.bridge.levelled.connect(lambda dbfs: self.meter.setValue(max(-60, round(dbfs))))
        self.bridge.warned.connect(self._show_warning)
        self.bridge.acted.connect(lambda mode, span: self._update_counters())

    # -- state -----------------------------------------------------------------------------------

    def current_settings(self) -> DesktopSettings:
        """The controls as settings; ValidationError for a bad value (shown, nothing started)."""
        return DesktopSettings(
            url=self.url.text().strip(), language=self.language.currentText(), interim=self.interim.isChecked(),
            source=self.source.currentText(), device=self._device(self.device), output=self._device(self.output),
            mode=self.mode.currentText(), duck_db=self.duck_db.value(), duck_target=self.duck_target.text().strip(),
            duck_margin_s=self.settings.duck_margin_s, bleep_delay_s=self.bleep_delay.value(),
            bleep_sound=self.bleep_sound.currentText(), bleep_pad_s=self.settings.bleep_pad_s)

    @staticmethod
    def _device(combo: QComboBox) -> str | None:
        data = combo.currentData()
        if combo.currentText() == combo.itemText(combo.currentIndex()):
            return data
        return combo.currentText().strip() or None

    def toggle(self) -> None:
        if self.client is None:
            self.start()
        else:
            self.stop()

    def start(self) -> None:
        try:
            self.settings = self.current_settings()
        except ValidationError as exc:
            error = exc.errors()[0]
            self._show_warning("settings", f"{error['loc'][0] if error['loc'] else 'settings'}: {error['msg']}")
            return
        if self.settings_path is not None:
            stored.save(self.settings, self.settings_path)
        self.token = self.token_field.text().strip() or None
        try:
            self.client = DesktopClient(self.settings, self.token, self.audio_factory(), self.bridge)
            self.client.start()
        except (VolumeError, DeviceLost) as exc:
            self.client = None
            self._show_warning("device", str(exc))
            return
        self.start_button.setText("&Stop")

    def stop(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            self.statusBar().showMessage("Stopping: waiting for the last results…")
            QApplication.processEvents()
            client.stop()
            self._update_counters(client)
        self.start_button.setText("&Start")

    def _show_state(self, state: LinkState, detail: str) -> None:
        self.state = state
        colour = STATE_COLOURS[state]
        self.state_label.setText(f'<b style="color:{colour}">{STATE_TEXT[state]}</b> '
                                 f'<span style="color:#555">{html.escape(detail)}</span>')
        if hasattr(self, "tray"):
            self.tray.setIcon(tray_icon(colour))
            self.tray.setToolTip(f"Speech moderation: {STATE_TEXT[state]}")
        if state in (LinkState.AUTH_FAILED, LinkState.FAILED) and self.client is not None:
            self.statusBar().showMessage(detail)
            QTimer.singleShot(0, self.stop)
        self._echo(type="link", state=state.value, detail=detail)

    def _show_line(self, line: Line) -> None:
        if not line.text.strip():
            return  # a segment with no words (Whisper heard none): nothing to read
        self.lines = (self.lines + [line])[-MAX_LINES:]
        self.transcript.append(highlighted(line))
        self._update_counters()
        self._echo(type="line", kind=line.kind, text=line.text, harmful=line.harmful,
                   spans=[s.text for s in line.spans])

    def _show_warning(self, code: str, message: str) -> None:
        self.statusBar().showMessage(message, 15000)
        self._echo(type="warning", code=code, message=message)

    def _update_counters(self, client: DesktopClient | None = None) -> None:
        shown = client or self.client
        if shown is not None:
            c = shown.counters
            self.counters.setText(f"segments {c.segments} · harmful {c.harmful_segments} · "
                                  f"actions {c.actions} · late flags {c.late_flags}")

    def _echo(self, **fields) -> None:
        if self.echo is not None:
            self.echo.write(json.dumps(fields, ensure_ascii=False) + "\n")
            self.echo.flush()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        self.stop()
        try:
            settings = self.current_settings()
        except ValidationError:
            settings = None
        if settings is not None and self.settings_path is not None:
            stored.save(settings, self.settings_path)
        self.tray.hide()
        super().closeEvent(event)


def run_window(settings: DesktopSettings, token: str | None, settings_path: Path | None, *, start: bool = False,
               duration: float | None = None, screenshot: Path | None = None, echo: bool = False) -> int:
    """Show the window until closed; with ``duration``, start at once, stop after that long,
    save a ``screenshot`` and quit (scripts, the tests, docs/img)."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Speech moderation")
    window = MainWindow(settings, token, settings_path, open_system, echo=sys.stdout if echo else None)
    window.show()
    if start or duration is not None:
        QTimer.singleShot(0, window.start)
    if duration is not None:
        def finish() -> None:
            if screenshot is not None:
                window.grab().save(str(screenshot))
            window.stop()
            window._echo(type="window", transcript=window.transcript.toPlainText(),
                         html=window.transcript.toHtml(), state=window.state.value)
            window.close()
        QTimer.singleShot(round(duration * 1000), finish)
    app.exec()
    return 0
