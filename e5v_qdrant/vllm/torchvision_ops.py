"""Let PyPI's torchvision import against CPU-only torch (the vLLM CPU recipe; installed as a ``.pth`` hook).

PyPI's ``torchvision`` 0.28 wheel is a CUDA build: its C++ ops do not load against ``torch 2.13.0+cpu``, and importing
it fails with ``operator torchvision::nms does not exist`` while registering fake kernels. vLLM's LLaVA code imports
torchvision (transforms only, never these ops), so declaring the two op schemas first is enough.
"""

try:
    import torch

    _lib = torch.library.Library("torchvision", "FRAGMENT")
    for _schema in ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
                    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"):  # fmt: skip
        try:
            _lib.define(_schema)
        except RuntimeError:  # already declared (a working torchvision extension): leave it
            pass
except Exception:  # noqa: BLE001 - a startup hook must never break the interpreter
    pass
