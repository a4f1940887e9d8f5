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
def _server(cmd: list[str], url: str, log: Path, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """Start a server in its own process group, wait until ``url`` answers, stop the whole group after."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=cwd)
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


def _ui(searched: Searched, tmp_path: Path) -> tuple[list[str], int, Path]:
    port = _free_port()
    cmd = [sys.executable, "-m", "searchcore.cli", "ui", "--tracking-uri", searched.tracking, "--port", str(port)]
    return cmd, port, tmp_path / "ui.log"


def _rows(page: Any) -> list[dict[str, str]]:
    """The runs table as shown, top to bottom: column id -> the cell's text."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.ag-center-cols-container [role=row][row-index], .ag-pinned-left-cols-container [role=row][row-index]'))
        .reduce((rows, r) => { const i = +r.getAttribute('row-index'); rows[i] = rows[i] || {};
          r.querySelectorAll('[role=gridcell]').forEach(c => { rows[i][c.getAttribute('col-id') || ''] = ((c.querySelector('a') || c).innerText || '').trim(); });
          return rows; }, [])""")


def _assert_training_view(page: Any) -> None:
    """MLflow's model-training side bar (Runs, Models), not the GenAI one (Evaluation runs, Judges)."""
    page.get_by_role("link", name="Models", exact=True).first.wait_for()
    assert page.get_by_text("Evaluation runs", exact=True).count() == 0 and page.get_by_text("Judges", exact=True).count() == 0
    assert page.evaluate("localStorage.getItem('mlflow.workflowType_v1')") == '"machine_learning"'


@pytest.mark.slow
def test_searchcore_ui_link_shows_the_trials_the_winner_and_its_margin(searched: Searched, browser: Any, shots: Path,
                                                                          tmp_path: Path) -> None:
    from searchcore.report import links

    study = searched.study()
    winner, base = searched.result.best[0], searched.result.baseline_test_accuracy
    trials = {t.number: t for t in study.trials}
    pruned = [n for n, t in trials.items() if t.state.name == "PRUNED"]
    assert pruned, "the shared search is meant to prune a trial (hyperband)"
    cmd, port, log = _ui(searched, tmp_path)
    with _server(cmd, f"http://127.0.0.1:{port}/health", log, cwd=searched.root):
        printed = re.findall(r"search rep: (\S+)", log.read_text())
        assert printed, log.read_text()
        assert printed[0].endswith("/runs?viewStateShareKey=searchcore&workflowType=machine_learning")
        page = browser.new_page()
        page.goto(printed[0])

        # the runs table: every trial a row, best first, its numbers in columns, no click
        best_link = page.get_by_role("link", name=f"trial-{winner.trial} ★ best", exact=True)
        best_link.wait_for()
        for n in trials:
            page.get_by_role("link", name=re.compile(rf"^trial-{n}( |$)")).first.wait_for()
        rows = [r for r in _rows(page) if r]
        names = [r.get("attributes.`Run Name`", "") for r in rows]
        assert len(rows) == len(trials) and names[0] == f"trial-{winner.trial} ★ best", names
        val = [float(r["metrics.`val_accuracy`"]) for r in rows if r.get("metrics.`val_accuracy`", "-") != "-"]
        assert val == sorted(val, reverse=True) and len(val) >= len(trials) - 1
        top = rows[0]
        assert float(top["metrics.`test_accuracy`"]) == pytest.approx(winner.test_accuracy, abs=1e-6)
        assert float(top["metrics.`gain_vs_baseline_pts`"]) == pytest.approx(round(100 * (winner.test_accuracy - base), 2))
        assert float(top["metrics.`params`"]) > 0 and float(top["metrics.`macs`"]) > 0
        assert top["tags.`searchcore.state`"] == "COMPLETE" and top["tags.`searchcore.spec`"].startswith("v1 1x8x8>10")
        for n in pruned:
            row = next(r for r, name in zip(rows, names) if name == f"trial-{n} (pruned)")
            assert row["tags.`searchcore.state`"] == "PRUNED"
        page.screenshot(path=str(shots / "mlflow-runs.png"))

        # the winner's run, opened from the table as a person would: the model-training view
        best_link.click()
        page.get_by_role("heading", name=f"trial-{winner.trial} ★ best").wait_for()
        _assert_training_view(page)
        page.get_by_text(f"{winner.test_accuracy:.4f}").first.wait_for()  # searchcore.winner tag: the headline
        page.screenshot(path=str(shots / "mlflow-winner-run.png"))

        # its parent run, the search: the headline as its description
        page.locator(f"a[href*='/runs/{searched.result.parent_run_id}']").first.click()  # "Parent run: rep"
        page.get_by_role("heading", name="rep", exact=True).wait_for()
        _assert_training_view(page)
        page.get_by_text(f"Best: trial {winner.trial}, test accuracy {winner.test_accuracy:.4f} vs {base:.4f}").first.wait_for()
        page.get_by_text("points of val_accuracy").first.wait_for()  # the top plugin effect
        page.screenshot(path=str(shots / "mlflow-search-run.png"))

        # a pruned trial reads as pruned
        page.go_back()
        page.go_back()
        page.get_by_role("link", name=f"trial-{pruned[0]} (pruned)", exact=True).click()
        page.get_by_role("heading", name=f"trial-{pruned[0]} (pruned)").wait_for()
        _assert_training_view(page)
        page.get_by_text("pruned at epoch").first.wait_for()
        page.screenshot(path=str(shots / "mlflow-pruned-run.png"))

        # the registered model: test accuracy, gain over the baseline, architecture, how to use it
        page.goto(f"http://127.0.0.1:{port}/#/models/rep")
        page.get_by_text("searchcore train models:/rep/1").first.wait_for()
        for text in (f"{winner.test_accuracy:.4f}", f"{100 * (winner.test_accuracy - base):+.1f} points", "searchcore export models:/rep/1"):
            page.get_by_text(text).first.wait_for()
        page.screenshot(path=str(shots / "mlflow-model.png"))

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


@pytest.mark.slow
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


@pytest.mark.slow
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
    assert href.startswith("http://127.0.0.1:5000/#/experiments/") and href.endswith("/runs?viewStateShareKey=searchcore&workflowType=machine_learning")
    page.screenshot(path=str(shots / "report.png"), full_page=True)
    assert outside == []  # nothing was fetched from anywhere: the page works offline
    page.close()
