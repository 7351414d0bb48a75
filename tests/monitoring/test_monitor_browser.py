"""monitor.html in a real headless Chromium, like the other reports (tests/reporting/test_browser.py): the first
screen (1200 x 900, before any scrolling) says "No alarm", or says ALARM and names the alarms, the promise each
threatens and the action; every plot decodes, no script runs, nothing is fetched from the network.

Needs the ``playwright`` Python package and a Chromium binary (``scripts/install_browser.sh``); skips only when
no Chromium can be found."""

from __future__ import annotations

from pathlib import Path

import pytest

from chestxr.monitoring import (
    MonitorSettings,
    Scenario,
    WindowSpec,
    monitor_samples,
    simulate_streams,
    write_monitor_outputs,
)

pytestmark = pytest.mark.browser

VIEWPORT = {"width": 1200, "height": 900}
#: the text of every element whose top is inside the first screen
FIRST_SCREEN_JS = """() => {
  const out = [];
  for (const el of document.body.querySelectorAll('h1, p, td, th, strong')) {
    const r = el.getBoundingClientRect();
    if (r.top < window.innerHeight && r.bottom > 0 && r.height > 0) out.push(el.innerText);
  }
  return out.join('\\n');
}"""


def _report(tmp_path: Path, scenario: Scenario | None, label_fraction: float = 0.0) -> tuple[Path, object]:
    sim = simulate_streams(scenario, n_reference=600, n_stream=1500, seed=4, label_fraction=label_fraction)
    result = monitor_samples(
        sim.reference, sim.stream, sim.promises, MonitorSettings(alpha=0.01, window=WindowSpec(count=500))
    )
    out = tmp_path / "mon"
    out.mkdir()
    write_monitor_outputs(
        result, out, title="chestxr monitor: <b>run</b>", context={"run": "<script>alert(1)</script>"}
    )
    return out / "monitor.html", result


def _first_screen(browser, path: Path, shot: Path) -> str:
    page = browser.new_page(viewport=VIEWPORT)
    requests: list[str] = []
    dialogs: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(path.resolve().as_uri(), wait_until="load")
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    widths = page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
    assert widths and all(w > 0 for w in widths), widths  # every time series plot decodes
    assert dialogs == [] and page.locator("script").count() == 0
    assert page.title() == "chestxr monitor: <b>run</b>"  # escaped, shown as text
    page.screenshot(path=str(shot), full_page=False)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.evaluate(FIRST_SCREEN_JS)
    page.close()
    return text


def test_a_quiet_log_says_no_alarm_on_the_first_screen(browser, tmp_path):
    path, result = _report(tmp_path, None)
    assert result.quiet
    text = _first_screen(browser, path, tmp_path / "quiet.png")
    assert "No alarm in 3 windows" in text and "false-alarm rate 0.01 per window" in text
    assert "ALARM" not in text


def test_alarms_are_named_on_the_first_screen_with_the_promise_and_the_action(browser, tmp_path):
    path, result = _report(tmp_path, Scenario("gamma", 1.0, fraction=1.0))
    assert not result.quiet
    text = _first_screen(browser, path, tmp_path / "alarm.png")
    assert "ALARM" in text and "No alarm" not in text
    first = result.alarms[0]
    assert first.test in text  # the alarm's test by name
    assert first.threatens and first.threatens[0] in text  # the promise it threatens
    assert "Action:" in text and "re-calibrate" in text and "re-approve" in text


def test_a_sensitivity_drop_alarm_names_the_promise_it_breaks(browser, tmp_path):
    path, result = _report(tmp_path, Scenario("sensitivity", 0.60), label_fraction=0.8)
    labels = [a for a in result.alarms if a.kind == "labels"]
    assert labels, [a.test for a in result.alarms]
    text = _first_screen(browser, path, tmp_path / "labels.png")
    assert labels[0].test in text and "sensitivity" in text
