"""ONNX → torch through onnx2torch, without torchvision.

onnx2torch 1.5.x imports torchvision at import time, only for its NonMaxSuppression and
RoiAlign converters (``node_converters/nms.py``, ``roialign.py``). The registry's torchvision
build is a CUDA one that breaks CPU torch, so the project does not install it.
:func:`import_onnx2torch` therefore puts a stub ``torchvision`` into ``sys.modules`` for the
duration of the import only and removes it afterwards (so nothing else in the process sees a
fake torchvision); a graph that really uses those two ops fails with a clear error at run time.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any

_STUB_ATTR = "__soundlens_stub__"


def _needs_torchvision(*_: Any, **__: Any) -> Any:
    raise RuntimeError(
        "this ONNX graph uses NonMaxSuppression/RoiAlign, whose onnx2torch converters need "
        "torchvision; soundlens imports onnx2torch without it"
    )


def import_onnx2torch() -> types.ModuleType:
    """Import and return ``onnx2torch`` (with a temporary torchvision stub if needed)."""
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    if importlib.util.find_spec("onnx2torch") is None:
        from soundlens.errors import EmbeddedModelUnavailableError

        raise EmbeddedModelUnavailableError(
            "onnx2torch is not installed: run `pip install --no-deps onnx2torch` "
            "(scripts/setup.sh does this)"
        )
    if importlib.util.find_spec("torchvision") is not None:
        return importlib.import_module("onnx2torch")
    # A stub just for onnx2torch's import-time `import torchvision` /
    # `from torchvision.ops import roi_align`; removed again right after.
    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    for name in ("nms", "roi_align", "box_convert"):
        setattr(ops, name, _needs_torchvision)
    tv.ops = ops  # type: ignore[attr-defined]
    setattr(tv, _STUB_ATTR, True)
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = tv, ops
    try:
        return importlib.import_module("onnx2torch")
    finally:
        for name in ("torchvision.ops", "torchvision"):
            mod = sys.modules.get(name)
            if mod is ops or mod is tv:
                del sys.modules[name]


def fix_node_names(model: Any) -> int:
    """Give every node a unique, non-empty name (onnx2torch names submodules after them).

    Returns the number of nodes renamed. Works in place on an ``onnx.ModelProto``.
    """
    seen: Counter[str] = Counter(n.name for n in model.graph.node if n.name)
    used: set[str] = set()
    renamed = 0
    for i, node in enumerate(model.graph.node):
        name = node.name
        if not name or (seen[name] > 1 and name in used):
            base = name or f"{node.op_type}_{i}"
            new, k = base, 0
            while new in used or (new != name and new in seen):
                k += 1
                new = f"{base}_{k}"
            node.name = new
            renamed += 1
        used.add(node.name)
    return renamed


def convert(onnx_path: str | Path | Any, *, fix_names: bool = True) -> Any:
    """An ONNX file (or ``onnx.ModelProto``) as a torch ``fx.GraphModule`` in eval mode.

    Node submodules are named after the ONNX node names, so forward hooks can be placed on
    them. Converter gaps specific to one graph (unsupported ops or attributes) are fixed by the
    caller: register a converter with ``import_onnx2torch().converter.add_converter`` or patch
    the ``ModelProto`` before passing it here.
    """
    import onnx

    model = onnx.load(str(onnx_path)) if isinstance(onnx_path, str | Path) else onnx_path
    if fix_names:
        fix_node_names(model)
    o2t = import_onnx2torch()
    return o2t.convert(model).eval()


__all__ = ["convert", "fix_node_names", "import_onnx2torch"]
