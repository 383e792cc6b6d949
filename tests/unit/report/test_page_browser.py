"""reports/summary.html in a real headless Chromium (Debian's `chromium`), driven by Selenium through Debian's
`chromium-driver`: it loads from file:// with no console error, no exception and no request beyond the file
itself, every image renders, the tables are there; a full-page screenshot is kept (path printed; also copied to
reports/browser-test/). Both binaries are the system's: Selenium Manager never runs, nothing is downloaded."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from unittest import mock

import pytest
from selenium import webdriver

from ggufbench.report.figures import FIGURES
from tests.support.report_pages import REPO, build_report, config_for


def _find(env: str, *names: str) -> str | None:
    """$env if set (a path or a name on PATH), else the first of names on PATH."""
    given = os.environ.get(env)
    if given:
        return given if Path(given).is_file() else shutil.which(given)
    return next((p for p in map(shutil.which, names) if p), None)


# Debian's packages install /usr/bin/chromium and /usr/bin/chromedriver (which must match the browser's version)
CHROMIUM = _find("CHROMIUM", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHROMEDRIVER = _find("CHROMEDRIVER", "chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason=f"no {'Chromium' if CHROMIUM is None else 'chromedriver'} on PATH (Debian: apt-get install chromium "
    "chromium-driver; or set $CHROMIUM / $CHROMEDRIVER): the browser test needs a real browser and its driver; "
    "tools/system-deps.sh installs both as root")

# Quiet, offline, reproducible (chromedriver adds --no-first-run, --disable-background-networking and the like).
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-component-update", "--disable-extensions",
         "--no-default-browser-check", "--mute-audio", "--hide-scrollbars", "--force-device-scale-factor=1",
         "--window-size=1280,900"]
VIEWPORT = (1280, 900)


CHECK_PAGE = """return (() => {
  const imgs = [...document.images].map(i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth,
                                               h: i.naturalHeight, src: i.src.slice(0, 22)}));
  const tables = [...document.querySelectorAll('table')].map(t => ({id: t.id, rows: t.tBodies[0]
                                                                     ? t.tBodies[0].rows.length : 0}));
  const sections = [...document.querySelectorAll('section > h2')].map(h => h.textContent);
  return JSON.stringify({title: document.title, imgs, tables, sections,
                         empty: [...document.querySelectorAll('.empty')].map(e => e.textContent),
                         resources: performance.getEntriesByType('resource').map(r => r.name),
                         width: document.documentElement.scrollWidth,
                         height: document.documentElement.scrollHeight});
})()"""


BUDGETS = {"cpu-demo": {"vram_budgets_gib": []},
           "h200-demo": {"vram_budgets_gib": [0.8, 1.0], "target_gpu": {"name": "RTX 5080", "vram_gib": 16}}}


def _problems(console: list[dict], performance: list[dict], resources: list[str], page_url: str) -> list[str]:
    """What a reader's browser would complain about, or fetch: console errors and failed console.assert
    (level SEVERE), uncaught exceptions, failed loads; any request other than the page itself and data: URIs,
    seen both in the DevTools network events of the performance log and in the page's resource timing."""
    out = [f"console {e.get('source')} {e['level']}: {e.get('message')}" for e in console
           if e.get("level") == "SEVERE"]
    started, ours = False, set()  # the browser's start page (a new-tab page) comes before ours: not counted
    for entry in performance:
        msg = json.loads(entry["message"])["message"]
        m, p = msg.get("method"), msg.get("params", {})
        if m == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            started = started or url == page_url
            if started:
                ours.add(p.get("requestId"))
                if url != page_url and not url.startswith("data:"):
                    out.append(f"request beyond the page (not self-contained): {url}")
        elif m == "Network.loadingFailed" and p.get("requestId") in ours:
            out.append(f"loading failed: {p.get('errorText')}")
    if not started:
        out.append(f"no request for the page itself in the performance log: {page_url}")
    out += [f"resource fetched by the page (not self-contained): {r}" for r in resources
            if not r.startswith("data:")]
    return out


def render(page, tmp_path, name: str, capsys) -> tuple[dict, list[str], object]:
    """Load page in headless Chromium: (what the page holds, the problems seen, the screenshot's path)."""
    url = page.resolve().as_uri()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    with mock.patch.dict(os.environ, {"SE_OFFLINE": "true"}):  # the driver is given: no Selenium Manager, offline
        driver = webdriver.Chrome(options=options, service=service)
    console: list[dict] = []
    performance: list[dict] = []
    try:
        driver.set_page_load_timeout(60)
        # the viewport exactly VIEWPORT: the window less what headless Chromium keeps for its own frame
        frame = driver.execute_script("return window.outerHeight - window.innerHeight")
        driver.set_window_size(VIEWPORT[0], VIEWPORT[1] + frame)
        assert driver.execute_script("return [window.innerWidth, window.innerHeight]") == list(VIEWPORT)
        driver.get(url)  # returns at the load event
        info = json.loads(driver.execute_script(CHECK_PAGE))
        console += driver.get_log("browser")
        performance += driver.get_log("performance")
        # a full-page screenshot: the window grown to the page's height (capped: very long pages are cut)
        height = min(int(info["height"]), 16000)
        driver.set_window_size(VIEWPORT[0], height + frame)
        shot = driver.get_screenshot_as_png()
        console += driver.get_log("browser")
        performance += driver.get_log("performance")
    finally:
        driver.quit()

    png = tmp_path / f"summary-{name}.png"
    png.write_bytes(shot)
    keep = REPO / "reports" / "browser-test"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, keep / png.name)
    with capsys.disabled():
        print(f"\n[report browser test] screenshot: {png} (copy: {keep / png.name})")
    return info, _problems(console, performance, info["resources"], url), png


@pytest.mark.parametrize("run", ["cpu-demo", "h200-demo"])
def test_report_renders_in_chromium(run, tmp_path, capsys):
    page = build_report(run, tmp_path / "reports", config_for(run, **BUDGETS[run]))
    info, problems, png = render(page, tmp_path, run, capsys)
    seen = "\n  ".join(problems)
    assert problems == [], f"in Chromium:\n  {seen}\n(chromedriver's log: {tmp_path / 'chromedriver.log'})"
    assert png.stat().st_size > 50_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert info["title"].strip(), "the page has no <title>"

    # every image decoded and drawn: embedded PNGs, none broken
    assert len(info["imgs"]) == len(FIGURES)  # flips_vs_kld too: a panel saying no task was scored
    for img in info["imgs"]:
        assert img["complete"] and img["w"] > 0 and img["h"] > 0, img
        assert img["src"].startswith("data:image/png;base64"), img

    # the tables a reader compares are there, with rows
    ids = {t["id"]: t["rows"] for t in info["tables"]}
    first = "cpu" if run == "cpu-demo" else "cuda"
    for tid in (f"scoreboard-{first}-smollm2-135m", f"kv-{first}-smollm2-135m", f"kv-kld-{first}-smollm2-135m",
                "speed", "ladder-smollm2-135m", "builds", "files", "hardware", "corpora"):
        assert ids.get(tid, 0) > 0, (tid, sorted(ids))
    assert ids[f"scoreboard-{first}-smollm2-135m"] == 6
    assert info["sections"] == ["Recommendations per VRAM budget", "Scoreboard: quality per quant",
                                "Does the quant change the answers? Task accuracy and flips",
                                "Is A better than B? Paired on the same chunks",
                                "KV-cache matrix: PPL by KV type and context", "KV cost at the context you serve",
                                "Speed and VRAM (llama-bench)",
                                "Offload tuner", "The study's claims, measured", "llama.cpp builds compared",
                                "Figures", "Provenance"]
    assert info["width"] <= 1280, "the page scrolls sideways at 1280 px"
    if run == "cpu-demo":  # no GPU, one build, no budget: each says so
        assert any("No VRAM measured" in e for e in info["empty"])
        assert any("No VRAM budget in the config" in e for e in info["empty"])
    else:
        assert ids["recommendations-smollm2-135m"] == 3
        assert ids["compare-bench-cuda-fa-default"] == 12
        # every section has its results, but what the stored H200 run predates: chunks.parquet (the paired section),
        # load sampling, the task passes and the KV-cost scorer
        before = ("No per-chunk KLD results", "Machine load not measured", "No task results", "No KV-cost results")
        assert [e for e in info["empty"] if not e.startswith(before)] == [], info["empty"]
