"""reports/summary.html in a real headless Chromium (Debian's `chromium` package): it loads from file:// with no
console error, no exception and no request beyond the file itself, every image renders, the tables are there;
a full-page screenshot is kept (path printed; also copied to reports/browser-test/)."""

from __future__ import annotations

import base64
import json
import shutil

import pytest

from tests.support.cdp import Browser, find_chromium
from tests.support.report_pages import REPO, build_report, config_for

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install chromium; or set $CHROMIUM): the "
    "browser test needs a real browser; CI installs it in .ci/run")


CHECK_PAGE = """(() => {
  const imgs = [...document.images].map(i => ({alt: i.alt, complete: i.complete, w: i.naturalWidth,
                                               h: i.naturalHeight, src: i.src.slice(0, 22)}));
  const tables = [...document.querySelectorAll('table')].map(t => ({id: t.id, rows: t.tBodies[0]
                                                                     ? t.tBodies[0].rows.length : 0}));
  const sections = [...document.querySelectorAll('section > h2')].map(h => h.textContent);
  return JSON.stringify({title: document.title, imgs, tables, sections,
                         empty: [...document.querySelectorAll('.empty')].map(e => e.textContent),
                         width: document.documentElement.scrollWidth,
                         height: document.documentElement.scrollHeight});
})()"""


BUDGETS = {"cpu-demo": {"vram_budgets_gib": []},
           "h200-demo": {"vram_budgets_gib": [0.8, 1.0], "target_gpu": {"name": "RTX 5080", "vram_gib": 16}}}


def _problems(events: list[dict], page_url: str) -> list[str]:
    out = []
    for ev in events:
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console." + p["type"] + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                 for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            out.append(f"log error ({p['entry'].get('source')}): {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif m == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            if url != page_url and not url.startswith("data:"):
                out.append(f"request beyond the page (not self-contained): {url}")
        elif m == "Network.loadingFailed":
            out.append(f"loading failed: {p.get('errorText')}")
    return out


def render(page, tmp_path, name: str, capsys) -> tuple[dict, list[str], object]:
    """Load page in headless Chromium: (what the page holds, the problems seen, the screenshot's path)."""
    url = page.resolve().as_uri()
    browser = Browser(CHROMIUM, tmp_path / "profile", tmp_path / "chromium.log")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.send(f"{domain}.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900, "deviceScaleFactor": 1,
                                                            "mobile": False}, session=session)
        events: list[dict] = []
        nav = browser.send("Page.navigate", {"url": url}, session=session)
        assert not nav.get("errorText"), nav
        browser.wait_event("Page.loadEventFired", timeout=60, seen=events)
        browser.drain(events)
        info = json.loads(browser.send("Runtime.evaluate", {"expression": CHECK_PAGE, "returnByValue": True},
                                       session=session)["result"]["value"])
        # a full-page screenshot: the viewport grown to the page's height (capped: very long pages are cut)
        height = min(int(info["height"]), 16000)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": height, "deviceScaleFactor": 1,
                                                            "mobile": False}, session=session)
        shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                            session=session, timeout=60)
        browser.drain(events)
    finally:
        browser.close()

    png = tmp_path / f"summary-{name}.png"
    png.write_bytes(base64.b64decode(shot["data"]))
    keep = REPO / "reports" / "browser-test"
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(png, keep / png.name)
    with capsys.disabled():
        print(f"\n[report browser test] screenshot: {png} (copy: {keep / png.name})")
    return info, _problems(events, url), png


@pytest.mark.parametrize("run", ["cpu-demo", "h200-demo"])
def test_report_renders_in_chromium(run, tmp_path, capsys):
    page = build_report(run, tmp_path / "reports", config_for(run, **BUDGETS[run]))
    info, problems, png = render(page, tmp_path, run, capsys)
    assert problems == [], (tmp_path / "chromium.log").read_text(errors="replace")[-3000:]
    assert png.stat().st_size > 50_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # every image decoded and drawn: embedded PNGs, none broken
    assert len(info["imgs"]) == 7
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
                                "KV-cache matrix: PPL by KV type and context", "Speed and VRAM (llama-bench)",
                                "Offload tuner", "llama.cpp builds compared", "Figures", "Provenance"]
    assert info["width"] <= 1280, "the page scrolls sideways at 1280 px"
    if run == "cpu-demo":  # no GPU, one build, no budget: each says so
        assert any("No VRAM measured" in e for e in info["empty"])
        assert any("No VRAM budget in the config" in e for e in info["empty"])
    else:
        assert ids["recommendations-smollm2-135m"] == 3
        assert ids["compare-bench-cuda-fa-default"] == 12
        assert not info["empty"], info["empty"]
