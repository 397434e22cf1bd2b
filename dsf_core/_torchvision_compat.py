"""Import torchvision even where its compiled operators cannot load.

The PyPI wheel ``torchvision==0.28.0`` is a CUDA build. Beside a CPU build of torch 2.13 its ``_C``
extension fails to load and ``import torchvision`` then dies with ``RuntimeError: operator
torchvision::nms does not exist`` (pytorch/vision#9085): torchvision registers fake kernels for
``nms``/``qnms`` at import time and assumes the extension defined them. Because ``transformers``
imports torchvision when it is installed, its model classes fail to import too.

:func:`import_torchvision` imports torchvision as is; only when that fails for this reason does it
define the two operator schemas with pure-torch CPU kernels and import again. ``torchvision.models``
and transforms then work; the compiled ops (``torchvision.ops.nms``, ``roi_align``, ...) and
``torchvision.io`` jpeg coding still report that the extension is missing (use PIL for images).
On a build where the extension loads (e.g. CUDA torch), nothing is changed.

Call :func:`prepare_transformers` before ``transformers`` loads a model class (``dsf_core.models``
does).
"""

from __future__ import annotations

import importlib.util
import sys

import torch

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_fallback_library = None  # kept alive: dropping a torch.library.Library removes its operators


def _nms(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression on ``(x1, y1, x2, y2)`` boxes; indices by falling score."""
    boxes = dets.double()
    order = scores.argsort(descending=True)
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    lo = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    hi = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (hi - lo).clamp(min=0).prod(dim=2)
    iou = inter / (area[:, None] + area[None, :] - inter)
    removed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if not removed[i]:
            keep.append(i)
            removed |= iou[i] > iou_threshold
    return torch.tensor(keep, dtype=torch.long, device=dets.device)


def _register_fallback_ops() -> None:
    """Define ``torchvision::nms`` and ``torchvision::qnms`` with the pure-torch kernel."""
    global _fallback_library
    library = torch.library.Library("torchvision", "FRAGMENT")
    for name in ("nms", "qnms"):
        library.define(name + _SCHEMA)
        library.impl(name, _nms, "CPU")
    _fallback_library = library


def _is_missing_op_error(exc: BaseException) -> bool:
    text = str(exc)
    return "torchvision::" in text and "does not exist" in text


def _forget_partial_import() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def _unusable(exc: BaseException) -> ImportError:
    return ImportError(
        f"torchvision is installed but unusable with this torch build (torch {torch.__version__}): "
        f"{type(exc).__name__}: {exc}. Install the torchvision build that matches torch "
        "(torchvision==0.28.0 for torch 2.13.0), or uninstall torchvision."
    )


def import_torchvision():
    """Return the ``torchvision`` module, registering the operator fallbacks if it needs them.

    Raises ``ImportError`` saying why when torchvision is not installed or cannot be imported.
    """
    try:
        import torchvision
    except ModuleNotFoundError as exc:
        if exc.name != "torchvision":
            raise _unusable(exc) from exc
        raise ImportError("torchvision is not installed (pip install torchvision==0.28.0).") from exc
    except RuntimeError as exc:
        if not _is_missing_op_error(exc) or _fallback_library is not None:
            raise _unusable(exc) from exc
        _forget_partial_import()
        _register_fallback_ops()
        try:
            import torchvision
        except Exception as retry_exc:
            _forget_partial_import()
            raise _unusable(retry_exc) from retry_exc
    return torchvision


def prepare_transformers() -> None:
    """Import torchvision first when it is installed, so that ``transformers`` model imports work."""
    if importlib.util.find_spec("torchvision") is not None:
        import_torchvision()
