"""Writes ``dsa_reference.npz``: the reference DiffAugment's own outputs on a fixed input, with the
random parameters it drew, for ``tests/test_augmentation.py``.

Runs the reference's code itself: the ``ParamDiffAug`` ... ``AUGMENT_FNS`` part of ``utils.py`` of a
``VICO-UoE/DatasetCondensation`` checkout (read, not copied), executed with PyTorch; ``torch.rand`` and
``torch.randint`` are wrapped to record what each family drew. Not run by the tests or CI (they
need no PyTorch); rerun it to regenerate the file:

    python tests/golden/make_dsa_reference.py PATH/TO/DatasetCondensation   # a Python with torch, numpy
"""

import ast
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812  (the reference's name)


def reference_namespace(checkout: Path) -> dict:
    """The reference's augmentation code from ``utils.py``, executed, with draws recorded."""
    source = (checkout / "utils.py").read_text()
    tree = ast.parse(source)
    keep = [node for node in tree.body if getattr(node, "name", None) in (
        "ParamDiffAug", "set_seed_DiffAug", "DiffAugment", "rand_scale", "rand_rotate", "rand_flip",
        "rand_brightness", "rand_saturation", "rand_contrast", "rand_crop", "rand_cutout")
        or (isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "AUGMENT_FNS")]
    draws = []

    class RecordingTorch:
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def rand(*args, **kwargs):
            value = torch.rand(*args, **kwargs)
            draws.append(value.detach().numpy().reshape(-1).copy())
            return value

        @staticmethod
        def randint(*args, **kwargs):
            value = torch.randint(*args, **kwargs)
            draws.append(value.detach().numpy().reshape(-1).copy())
            return value

    namespace = {"torch": RecordingTorch(), "F": F, "np": np, "draws": draws}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(checkout / "utils.py"), "exec"), namespace)
    return namespace


def main(checkout: str) -> None:
    ns = reference_namespace(Path(checkout))
    torch.manual_seed(0)
    x = torch.randn(4, 3, 10, 12)  # NCHW, not square: the height and width axes cannot be confused
    param = ns["ParamDiffAug"]()
    param.Siamese, param.latestseed = False, -1  # what DiffAugment(seed=-1) sets: the evaluation's mode
    out = {"x": x.numpy()}
    for name in ("rand_brightness", "rand_saturation", "rand_contrast", "rand_crop", "rand_cutout", "rand_flip",
                 "rand_scale", "rand_rotate"):
        ns["draws"].clear()
        y = ns[name](x.clone(), param)
        out[f"{name}/out"] = y.numpy()
        for i, drawn in enumerate(ns["draws"]):
            out[f"{name}/draw{i}"] = drawn
    np.savez_compressed(Path(__file__).with_name("dsa_reference.npz"), **out)
    print(f"wrote {len(out)} arrays; torch {torch.__version__}")


if __name__ == "__main__":
    main(sys.argv[1])
