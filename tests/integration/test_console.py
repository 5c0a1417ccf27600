"""The browser console in a real browser: Debian's Chromium, driven by Playwright, against the
real edge and tritonserver, with an espeak-ng WAV as its microphone."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from scripts.service.launch import free_port, http_get, running_edge
from scripts.speech import SAMPLE_RATE, join_words, read_wav, speech_times, wer, write_dialogue, write_wav

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") and "/usr/lib/chromium/chromium"
"""Debian's browser binary (/usr/bin/chromium is a wrapper script Playwright cannot drive)."""
SENTENCES = ["Good morning everyone and welcome to the match.", "You played like shit this round.",
             "Meet me at the red tower."]
MAX_WER = 0.3
RESULT_WITHIN_S = 10.0
"""The issue's bound: each sentence's row appears within this long after the sentence ended."""
TAIL_SILENCE_S = 3.0
SCREENSHOTS = Path(os.environ.get("CONSOLE_SCREENSHOT_DIR", "bench-results/screenshots"))
"""Where the screenshots go (docs/img/ holds committed copies)."""
UI_TIMEOUT_MS = 30_000

pytestmark = pytest.mark.skipif(not (CHROMIUM and Path(CHROMIUM).exists()),
                                reason="Debian's chromium is not installed (scripts/install_system_deps.sh)")


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> tuple[Path, list[tuple[float, float]]]:
    """The sentences as the fake microphone's WAV (with trailing silence), and their times."""
    directory = tmp_path_factory.mktemp("console")
    wav = write_dialogue(SENTENCES, directory / "dialogue.wav")
    times = speech_times(wav)
    padded = np.concatenate([read_wav(wav), np.zeros(int(TAIL_SILENCE_S * SAMPLE_RATE), np.float32)])
    return write_wav(directory / "microphone.wav", padded), times


@pytest.fixture(scope="module")
def chromium():
    with playwright.sync_playwright() as driver:
        yield driver.chromium


def launch(chromium, microphone: Path | None = None, grant: bool = True):
    """Chromium with a fake microphone playing ``microphone`` once; ``grant`` answers the
    permission prompt with yes, else the page sees a denial."""
    args = ["--no-sandbox", "--autoplay-policy=no-user-gesture-required", "--use-fake-device-for-media-stream"]
    if microphone is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone}%noloop")
    if grant:
        args.append("--use-fake-ui-for-media-stream")
    return chromium.launch(executable_path=CHROMIUM, args=args)


def rows(page) -> list[dict]:
    return page.eval_on_selector_all("#segments tr.segment", """rows => rows.map(r => ({
        seq: +r.dataset.seq, harmful: r.dataset.harmful === 'true', text: r.querySelector('td.text').innerText,
        marks: [...r.querySelectorAll('mark.harmful')].map(m => m.innerText)}))""")


def wait_for_rows(page, count: int, started: float, times) -> list[float]:
    """Seconds after Start at which each of ``count`` rows appeared (polled, not pushed)."""
    seen: list[float] = []
    deadline = started + times[-1][1] + RESULT_WITHIN_S + 20
    while len(seen) < count and time.monotonic() < deadline:
        now = len(rows(page))
        seen += [time.monotonic() - started] * (now - len(seen))
        page.wait_for_timeout(100)  # the page's own clock: Playwright has no "row added" event
    assert len(seen) == count, rows(page)
    return seen


def test_the_console_transcribes_a_microphone_live_and_highlights_harm(chromium, edge, speech):
    microphone, times = speech
    browser = launch(chromium, microphone)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"http://{edge}/console")
        page.select_option("#language", "en")
        started = time.monotonic()
        page.click("#start")
        page.wait_for_selector("#state[data-state='live']", timeout=UI_TIMEOUT_MS)
        appeared = wait_for_rows(page, len(SENTENCES), started, times)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "console.png", full_page=True)
        page.click("#stop")
        page.wait_for_selector("#summary:not([hidden])", timeout=UI_TIMEOUT_MS)
        found = rows(page)
        message = page.text_content("#message")
    finally:
        browser.close()
    assert not message, message
    for sentence, row, (_start, end), at in zip(SENTENCES, found, times, appeared, strict=True):
        assert wer(sentence, row["text"]) <= MAX_WER, (sentence, row)
        assert at <= end + RESULT_WITHIN_S, (sentence, at, end)
    assert [r["harmful"] for r in found] == [False, True, False], found
    assert [m.lower().strip(".,!?") for m in found[1]["marks"]] == ["shit"], found[1]


def test_the_ops_view_shows_the_edges_figures(chromium, edge, speech):
    browser = launch(chromium)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"http://{edge}/console/ops")
        page.wait_for_selector("#replicas tr[data-replica]", timeout=UI_TIMEOUT_MS)
        replicas = page.eval_on_selector_all("#replicas tr[data-replica]",
                                             "rs => rs.map(r => [r.dataset.replica, r.dataset.ready])")
        total = page.text_content("#segments-total")
        status = json.loads(http_get(f"http://{edge}/ops/status")[1])
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "ops.png", full_page=True)
        message = page.text_content("#ops-message")
    finally:
        browser.close()
    assert replicas == [[r["address"], "true"] for r in status["replicas"]] and not message, (replicas, message)
    assert int(total) == status["segments_total"], (total, status)


def test_with_triton_down_the_page_says_the_service_is_not_ready(chromium, tmp_path):
    dead_triton = f"127.0.0.1:{free_port()}"
    with open(tmp_path / "edge.log", "wb") as log, running_edge(free_port(), dead_triton, log) as running:
        browser = launch(chromium)
        try:
            page = browser.new_page()
            page.goto(f"http://{running.address}/console")
            page.wait_for_selector("#message[data-code='not_ready']", timeout=UI_TIMEOUT_MS)
            text = page.text_content("#message")
        finally:
            browser.close()
    assert "not ready" in text.lower(), text


def test_a_denied_microphone_gets_the_permission_message(chromium, edge, speech):
    browser = launch(chromium, speech[0], grant=False)
    try:
        page = browser.new_page()
        page.goto(f"http://{edge}/console")
        page.click("#start")
        page.wait_for_selector("#message[data-code='permission_denied']", timeout=UI_TIMEOUT_MS)
        text, state = page.text_content("#message"), page.text_content("#state")
    finally:
        browser.close()
    assert "denied" in text.lower() and state == "idle", (text, state)


def focus_order(page, presses: int) -> list[str]:
    """Ids of the elements Tab reaches, in order, from the top of the page."""
    order = []
    for _ in range(presses):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement && document.activeElement.id"))
    return order


def test_keyboard_alone_reaches_every_control_and_an_unknown_language_is_explained(chromium, edge, speech):
    browser = launch(chromium, speech[0])
    try:
        page = browser.new_page()
        page.goto(f"http://{edge}/console?language=xx")
        order = focus_order(page, 13)
        page.focus("#start")
        page.keyboard.press("Enter")
        page.wait_for_selector("#message[data-code='bad_language']", timeout=UI_TIMEOUT_MS)
        text = page.text_content("#message")
    finally:
        browser.close()
    controls = ["source", "language", "word-timestamps", "interim", "token", "bleep", "bleep-delay", "start"]
    assert [c for c in order if c in controls] == controls, order
    assert "xx" in text, text


LONG_SENTENCE = ["fuck", "this map is way too big for a team of four players and nobody ever comes back to defend"]


@pytest.fixture(scope="module")
def long_sentence(tmp_path_factory) -> Path:
    """A profane word at the start of a sentence far longer than its word, as the fake microphone."""
    samples, _ = join_words(LONG_SENTENCE, [0.08, TAIL_SILENCE_S])
    return write_wav(tmp_path_factory.mktemp("console_interim") / "microphone.wav", samples)


def interim_rows(page) -> list[dict]:
    return page.eval_on_selector_all("#segments tr", """rows => rows.map(r => ({
        kind: r.className, confirmed: r.dataset.confirmed, marks: [...r.querySelectorAll('mark.harmful')]
        .map(m => m.innerText.toLowerCase().replace(/[.,!?]/g, ''))}))""")


def test_interim_results_flag_a_word_before_its_sentence_ends_and_the_final_confirms_it(chromium, edge,
                                                                                        long_sentence):
    browser = launch(chromium, long_sentence)
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"http://{edge}/console")
        page.select_option("#language", "en")
        assert page.is_checked("#interim")  # on by default
        page.click("#start")
        page.wait_for_selector("#state[data-state='live']", timeout=UI_TIMEOUT_MS)
        page.wait_for_selector("#segments tr.interim", timeout=UI_TIMEOUT_MS)
        flagged_while_open = page.eval_on_selector_all("#segments tr.segment", "rows => rows.length") == 0
        page.wait_for_selector("#segments tr.interim[data-confirmed='true']", timeout=UI_TIMEOUT_MS)
        page.click("#stop")
        page.wait_for_selector("#summary:not([hidden])", timeout=UI_TIMEOUT_MS)
        found = interim_rows(page)
    finally:
        browser.close()
    assert flagged_while_open, found  # the interim row came while the sentence was still going on
    assert found[0] == {"kind": "interim", "confirmed": "true", "marks": ["fuck"]}, found
    # the final marks the word (or, when the classifier also flags it, its whole transcript)
    assert any(r["kind"] == "segment" and any("fuck" in m for m in r["marks"]) for r in found[1:]), found
