"""``distillbench explain``: the KRR terms behind each prediction, and each support image's nearest training images."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner

from distillbench.cli import main
from distillbench.store.database import open_existing

from helpers import TINY

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A run whose support set is still its real-image init (0 steps), and a distilled one."""
    folder = tmp_path_factory.mktemp("explain")
    path = folder / "r.sqlite"
    args = [a for a in TINY if not a.startswith("objective.steps")]
    result = CliRunner().invoke(main, ["run", *args, "objective.steps=0,5", "--store", str(path), "-q"])
    assert result.exit_code == 0, result.output
    store = open_existing(path)
    runs = {r.config.objective.as_dict()["steps"]: r for r in store.records()}
    store.close()
    return path, runs


def _explain(path, run_id, out, *extra):
    result = CliRunner().invoke(main, ["explain", run_id[:8], "--store", str(path), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out.read_text(), json.loads(out.with_suffix(".json").read_text())


@pytest.mark.slow
def test_predictions_are_the_krr_evaluators_and_terms_rank_them(stored, tmp_path):
    path, runs = stored
    run = runs[5]
    _, doc = _explain(path, run.run_id, tmp_path / "e.html", "--tests", "500", "--top", "3")
    tests = doc["tests"]
    assert len(tests) == 30  # the whole (tiny) test split
    acc = np.mean([t["predicted"] == t["label"] for t in tests])
    assert acc == pytest.approx(run.metrics["acc"])  # the same predictor the run was scored with
    for t in tests:
        contrib = [s["contribution"] for s in t["support"]]
        assert len(contrib) == 3 and contrib == sorted(contrib, reverse=True)


def test_a_real_image_support_set_finds_itself_among_the_training_images(stored, tmp_path):
    path, runs = stored
    run = runs[0]  # 0 steps: the support set is the class-balanced real subset of the training split
    _, doc = _explain(path, run.run_id, tmp_path / "e.html", "--train", "100000")
    for s in doc["support"]:
        nearest = s["nearest_train"][0]
        assert nearest["distance"] == pytest.approx(0.0, abs=1e-6) and nearest["label"] == s["label"]


def test_the_page_is_self_contained(stored, tmp_path):
    path, runs = stored
    page, doc = _explain(path, runs[5].run_id, tmp_path / "e.html")
    images = re.findall(r'<img class="explain"[^>]*src="([^"]+)"', page)
    expected = sum(1 + len(t["support"]) for t in doc["tests"]) + sum(1 + len(s["nearest_train"]) for s in doc["support"])
    assert len(images) == expected == 8 * (1 + 3) + 3 * (1 + 5)  # 3 support images (ipc 1, 3 classes)
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(https?:)?//[a-z]", page)  # no network reference of any kind


def test_unknown_or_unexplainable_run_is_one_line(stored):
    path, _ = stored
    result = CliRunner().invoke(main, ["explain", "zzzz", "--store", str(path)])
    assert result.exit_code == 2 and "matches no run" in result.output and len(result.output.splitlines()) == 1


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed: apt-get install chromium chromium-driver")
def test_the_page_renders_offline_in_headless_chromium(stored, tmp_path):
    path, runs = stored
    out = tmp_path / "e.html"
    _explain(path, runs[5].run_id, out)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('class="explain"') == out.read_text().count('class="explain"') > 0
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,900", out.as_uri()],
                   capture_output=True, timeout=180, check=True)
    assert shot.stat().st_size > 5000
