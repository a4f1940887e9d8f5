"""What a user sees, checked in a real browser: MLflow's UI started by ``searchcore ui``,
optuna-dashboard on the study storage, and the offline report, each over the stores of a real
search and each opened in headless Chromium (Debian's ``chromium``, driven by Playwright).

Screenshots go to ``$SEARCHCORE_SCREENSHOTS`` (CI keeps them) or the test's temp folder.
Waits are readiness waits with generous limits, never assertions on how long anything took.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("SEARCHCORE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
READY_S = 300  # a cold MLflow server on a loaded 2-core machine is slow; only a ceiling, never an assertion
UI_WAIT_MS = 120_000

try:
    import playwright.sync_api  # noqa: F401
except ImportError:
    pytestmark = pytest.mark.skip(reason="Playwright is not installed: pip install playwright (and apt-get install -y chromium)")
else:
    if not Path(CHROMIUM).exists():
        pytestmark = pytest.mark.skip(reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set SEARCHCORE_CHROMIUM)")

from test_report import Searched, shared_search  # noqa: E402  (one search shared with test_report.py)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Searched:
    return shared_search(tmp_path_factory)


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("SEARCHCORE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Chromium with a fresh profile (``--user-data-dir``) and no background networking."""
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
                                                       viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(UI_WAIT_MS)
        yield context
        context.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _server(cmd: list[str], url: str, log: Path) -> Iterator[subprocess.Popen]:
    """Start a server in its own process group, wait until ``url`` answers, stop the whole group after."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + READY_S
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"{cmd[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(url, timeout=10) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"{url} did not answer within {READY_S}s:\n{log.read_text()[-3000:]}")
                time.sleep(1)
            yield proc
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # the group we started: the server and its workers
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)


def _script(name: str) -> str | None:
    here = Path(sys.executable).with_name(name)
    return str(here) if here.exists() else shutil.which(name)


# --- MLflow ----------------------------------------------------------------------------------------------


def test_searchcore_ui_link_lands_on_the_training_view_with_runs_and_plots(searched: Searched, browser: Any, shots: Path,
                                                                           tmp_path: Path) -> None:
    from searchcore.report import links

    port = _free_port()
    cmd = [sys.executable, "-m", "searchcore.cli", "ui", "--tracking-uri", searched.tracking, "--port", str(port)]
    log = tmp_path / "ui.log"
    with _server(cmd, f"http://127.0.0.1:{port}/health", log):
        printed = re.findall(r"search rep: (\S+)", log.read_text())
        assert printed, log.read_text()
        url = printed[0]
        assert url.endswith("/runs?workflowType=machine_learning")
        page = browser.new_page()
        page.goto(url)
        cell = page.locator("[role=gridcell]").filter(has=page.get_by_role("link", name="rep", exact=True)).first
        cell.wait_for()  # the runs table: the model-training view, not the GenAI overview MLflow opens by default
        assert "workflowType=machine_learning" in page.url
        cell.locator("button").first.click()  # expand the parent run: the trials are nested under it
        trials = sorted({int(t.number) for t in searched.study().trials})
        for n in trials:
            page.get_by_role("link", name=f"trial-{n}", exact=True).wait_for()
        page.screenshot(path=str(shots / "mlflow-runs.png"))

        # the parent run's artifacts: the plots, the report, the diagram
        exp = searched.client().get_experiment_by_name("rep").experiment_id
        page.goto(links.run_url(links.base_url("127.0.0.1", port), exp, searched.result.parent_run_id, "artifacts"))
        for name in ("plots", "diagram", "gradcam", "report.html", "credit.json"):
            page.get_by_text(name, exact=True).first.wait_for()
        page.get_by_text("plots", exact=True).first.click()
        page.get_by_text("pareto.png", exact=True).click()
        img = page.locator("img[src^='blob:']").first
        img.wait_for()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
        page.screenshot(path=str(shots / "mlflow-pareto.png"))
        page.get_by_text("report.html", exact=True).click()
        frame = page.frame_locator("iframe").first
        headline = frame.locator("#headline")
        headline.wait_for()
        assert "points of val_accuracy" in headline.inner_text()
        frame.locator(".js-plotly-plot .main-svg").nth(4).wait_for()  # five interactive plots, plotly running offline in MLflow's viewer
        page.screenshot(path=str(shots / "mlflow-report.png"))
        page.close()


# --- optuna-dashboard -----------------------------------------------------------------------------------


def test_optuna_dashboard_shows_the_study(searched: Searched, browser: Any, shots: Path, tmp_path: Path) -> None:
    from searchcore.report import links

    exe = _script("optuna-dashboard")
    if exe is None:
        pytest.skip("optuna-dashboard is not installed: pip install optuna-dashboard")
    study = searched.study()
    port = _free_port()
    url = links.dashboard_url(links.base_url("127.0.0.1", port), study._study_id)
    with _server([exe, searched.storage, "--host", "127.0.0.1", "--port", str(port)], url, tmp_path / "dashboard.log"):
        page = browser.new_page()
        page.goto(url)
        page.get_by_text(f"rep (id={study._study_id})").first.wait_for()
        page.get_by_text("val_accuracy").first.wait_for()  # the objective by name (set at the end of the search)
        page.get_by_text("Per-plugin credit").first.wait_for()  # the credit plot saved with the study
        page.locator(".js-plotly-plot").first.wait_for()
        page.screenshot(path=str(shots / "optuna-dashboard.png"))
        page.goto(f"{url}/note")
        page.get_by_text("points of val_accuracy").first.wait_for()  # the headline and credit table as the study's note
        page.screenshot(path=str(shots / "optuna-dashboard-note.png"))
        page.goto(f"{url}/trials")
        for t in study.trials:
            page.get_by_text(f"Trial {t.number}", exact=True).first.wait_for()
        page.screenshot(path=str(shots / "optuna-dashboard-trials.png"))
        page.close()


# --- the report ------------------------------------------------------------------------------------------


def test_report_opens_offline_with_every_part_drawn(searched: Searched, browser: Any, shots: Path, tmp_path: Path) -> None:
    from searchcore.cli import main

    out = tmp_path / "report"
    assert main(["report", "rep", "--storage", searched.storage, "--out", str(out)]) == 0
    page = browser.new_page()
    outside: list[str] = []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(("file:", "data:", "blob:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.goto((out / "index.html").as_uri())
    page.locator("#headline").wait_for()
    page.locator(".js-plotly-plot .main-svg").nth(4).wait_for()  # five interactive plots drawn
    assert page.locator("#diagram svg").count() == 1
    assert page.locator("#credit-table tr").count() == 1 + 3  # header + attention, kernel, residual
    broken = page.evaluate("Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
    visible = page.evaluate("Array.from(document.images).filter(i => i.naturalWidth > 0 && i.offsetParent !== null).length")
    assert broken == 0 and visible >= 2  # the credit chart and Grad-CAM (the rest are <noscript> fallbacks)
    href = page.locator("#mlflow-link").get_attribute("href")
    assert href.startswith("http://127.0.0.1:5000/#/experiments/") and href.endswith("/runs?workflowType=machine_learning")
    page.screenshot(path=str(shots / "report.png"), full_page=True)
    assert outside == []  # nothing was fetched from anywhere: the page works offline
    page.close()
