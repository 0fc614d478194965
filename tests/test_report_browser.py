"""The demo report opens in a real browser: headless Chromium (Debian's ``chromium`` package,
installed by ``.ci/run``) loads report.html with every image and no script error, and a
screenshot of the rendered page shows it."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from typer.testing import CliRunner

from ragim.cli import app

BROWSER = next(
    (b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
)
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]
PROBE = """<script>
window.addEventListener('error', function (e) {
  var seen = document.body.getAttribute('data-errors') || '';
  document.body.setAttribute('data-errors', seen + (e.message || 'a resource failed') + ';');
}, true);
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.setAttribute('data-images', String(imgs.length));
  var loaded = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images-loaded', String(loaded.length));
  document.body.setAttribute('data-charset', document.characterSet);
});
</script>"""


@pytest.mark.slow
@pytest.mark.skipif(
    BROWSER is None,
    reason="no Chromium installed (.ci/run installs Debian's chromium package; "
    "apt-get install chromium)",
)
def test_report_renders_in_headless_chromium(tmp_path):
    import matplotlib.image as mpimg

    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        ["demo", "--fast", "--embedder", "hashing", "--out", str(out), "--quiet"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text(encoding="utf-8")
    probe = (
        out / "report.probe.html"
    )  # the same page (same folder, so relative images resolve) plus a probe
    probe.write_text(page.replace("</body>", PROBE + "\n</body>"), encoding="utf-8")
    dom = subprocess.run(
        [BROWSER, *FLAGS, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = dom.stdout[dom.stdout.index("<body") :].split(">", 1)[0]
    assert 'data-images="4"' in body and 'data-images-loaded="4"' in body, body
    assert 'data-charset="UTF-8"' in body and "data-errors" not in body, body
    assert (
        "ragim demo: zero-shot model for Switzerland" in dom.stdout
        and "vs typical angina" in dom.stdout
    )

    shot = tmp_path / "report.png"
    run = subprocess.run(
        [
            BROWSER,
            *FLAGS,
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            (out / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    img = mpimg.imread(shot)[..., :3]
    assert img.shape[:2] == (2400, 1200)
    ink = np.mean(img.mean(axis=2) < 0.8)  # share of non-white pixels: text, tables and plots
    assert 0.02 < ink < 0.6, ink
    colour = np.mean(np.ptp(img, axis=2) > 0.2)  # the plots' red and blue points and bars
    assert colour > 0.001, colour
