"""The ``distillbench explain`` page: image grids as inline PNG data URIs, no network, and the same as JSON."""

from __future__ import annotations

import base64
import html
import io
import json

import numpy as np

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px; color: #1d1d1f; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 28px; }
p.meta { color: #555; max-width: 1000px; font-size: 0.9em; }
div.item { display: flex; align-items: flex-start; gap: 14px; margin: 10px 0; padding: 8px;
           border: 1px solid #e0e0e6; border-radius: 4px; }
figure { margin: 0; text-align: center; font-size: 0.75em; color: #444; }
figure img { width: 56px; height: 56px; image-rendering: pixelated; border: 1px solid #ccc; display: block; }
figure.query img { border: 2px solid #2a5db0; }
figure.wrong img { border: 2px solid #b00020; }
span.arrow { align-self: center; color: #888; }
"""


def _png(image: np.ndarray) -> str:
    """One image as a ``data:image/png`` URI, min-max scaled for display (grey, or RGB for 3 channels)."""
    from matplotlib.image import imsave

    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    lo, hi = float(a.min()), float(a.max())
    a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    buffer = io.BytesIO()
    imsave(buffer, a, cmap="gray" if a.ndim == 2 else None, format="png", vmin=0.0, vmax=1.0,
           metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(image, caption: str, klass: str = "") -> str:
    e = html.escape
    return (f'<figure class="{e(klass)}"><img class="explain" alt="{e(caption)}" src="{_png(image)}">'
            f"<figcaption>{e(caption)}</figcaption></figure>")


def to_json(explanation) -> str:
    return json.dumps(explanation.to_dict(), indent=2) + "\n"


def to_html(explanation) -> str:
    ex, e = explanation, html.escape
    doc = ex.to_dict()
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>distillbench explain {e(ex.run_id)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
             f"<h1>Explaining run {e(ex.run_id)}</h1>",
             f'<p class="meta">{e(ex.label)}. KRR with {e(ex.kernel)}({e(str(ex.arch))}), ridge {ex.reg:g}. '
             f"{e(doc['method'])}.</p>",
             '<section id="tests"><h2>Which support images drive each test prediction</h2>']
    for t in doc["tests"]:
        wrong = t["predicted"] != t["label"]
        query = _figure(ex.test_x[list(ex.test_index).index(t["test_index"])],
                        f"test {t['test_index']}: label {t['label']}, predicted {t['predicted']}",
                        "query wrong" if wrong else "query")
        cells = "".join(_figure(ex.support_images[s["index"]], f"support {s['index']} (class {s['label']}) "
                                                          f"{s['contribution']:+.3g}") for s in t["support"])
        parts.append(f'<div class="item test">{query}<span class="arrow">&larr;</span>{cells}</div>')
    parts.append("</section>")
    parts.append('<section id="support"><h2>The training images nearest each support image (kernel feature '
                 "space)</h2>")
    for s in doc["support"]:
        query = _figure(ex.support_images[s["index"]], f"support {s['index']} (class {s['label']})", "query")
        cells = "".join(_figure(ex.train_x[n["train_index"]], f"train {n['train_index']} (class {n['label']}) "
                                                              f"d={n['distance']:.3g}") for n in s["nearest_train"])
        parts.append(f'<div class="item support">{query}<span class="arrow">&asymp;</span>{cells}</div>')
    parts += ["</section>", "</body>", "</html>", ""]
    return "\n".join(parts)
