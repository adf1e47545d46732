"""The HTML leaderboard opens offline in headless Chromium: tables, sorting and plots render.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them); the
test skips with that reason where Chromium is absent.
"""

import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from test_report import configs, make_store, save

from distillbench.cli import main
from distillbench.store.database import ResultStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: apt-get install chromium chromium-driver")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def chromium(tmp_path, *args):
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    result = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                            text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A report over the bar sweep (10 configurations x 3 seeds) plus a failed and a 5-ipc table."""
    tmp = tmp_path_factory.mktemp("html")
    path = make_store(tmp / "r.sqlite")
    with ResultStore(path) as store:
        for config in configs("objective=kip,ls", "ipc=5", "seed=0,1"):
            if config.objective.name == "kip" and config.seed == 1:
                save(store, config, status="diverged", message="loss became nan at step 3")
            else:
                save(store, config, acc=0.95 + 0.01 * config.seed, step_s=0.02)
    out = tmp / "site" / "board.html"
    result = CliRunner().invoke(main, ["report", "--store", str(path), "--format", "html", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _rows(dom, table_id):
    table = re.search(rf'<table[^>]*id="{table_id}".*?</table>', dom, flags=re.DOTALL).group(0)
    return re.findall(r"<tr class=\"(\w+)\">(.*?)</tr>", table, flags=re.DOTALL)


def _cell(row_html, index):
    return re.findall(r"<td[^>]*>(.*?)</td>", row_html, flags=re.DOTALL)[index]


def test_dom_has_tables_and_non_empty_plots(tmp_path, page):
    dom = chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    assert "distillbench leaderboard" in dom
    assert len(_rows(dom, "table-1")) == 10 and len(_rows(dom, "table-2")) == 2
    assert [status for status, _ in _rows(dom, "table-2")] == ["done", "partial"]
    assert "1 diverged (seed 1): loss became nan at step 3" in dom
    images = re.findall(r'<img class="plot" alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', dom)
    assert [alt for alt, _ in images] == ["Accuracy vs images per class", "Accuracy vs time per step",
                                          "Time per step vs support size"]
    assert all(len(data) > 10_000 for _, data in images)
    for name in ("accuracy_vs_ipc", "accuracy_vs_step_time", "step_time_vs_support"):
        assert (page.parent / f"board_{name}.png").stat().st_size > 10_000


def test_sorting_script_runs_in_the_browser(tmp_path, page):
    default = chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    ranks = [_cell(row, 0) for _, row in _rows(default, "table-1")]
    assert ranks == sorted(ranks, key=int) and ranks[0] == "1"
    ascending = chromium(tmp_path, "--dump-dom", page.as_uri() + "#sort=table-1:acc:asc").stdout
    sorted_ranks = [_cell(row, 0) for _, row in _rows(ascending, "table-1")]
    assert sorted_ranks[0] == ranks[-1] and sorted_ranks[-1] == "1"
    assert 'data-key="acc" data-type="num" title="click to sort" aria-sort="ascending"' in ascending


def test_screenshot_shows_tables_and_plots(tmp_path, page):
    import matplotlib.image

    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,3400", page.as_uri())
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (3400, 1400)
    assert pixels.std() > 0.05  # not a blank page
    dark = (pixels.max(axis=2) < 0.35).mean(axis=1)  # text and lines per screen row
    assert (dark > 0).sum() > 300  # many rows of text/table borders
    # the plots are the only strongly coloured content (matplotlib's tab10 lines and markers)
    saturated = (pixels.max(axis=2) - pixels.min(axis=2)) > 0.4
    coloured_rows = np.flatnonzero(saturated.sum(axis=1) > 3)
    assert coloured_rows.size > 150, coloured_rows.size
    # at least two plots: coloured content in separate vertical bands (legends keep each band dense;
    # a coloured status text line is far thinner than 30 rows)
    bands = np.split(coloured_rows, np.flatnonzero(np.diff(coloured_rows) > 25) + 1)
    assert sum(band.size >= 30 for band in bands) >= 2, [(b[0], b[-1], b.size) for b in bands]
    # and they lie below the tables, which start near the top
    assert (dark[:700] > 0).sum() > 150 and coloured_rows.min() > 300
