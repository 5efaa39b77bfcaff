"""Let ``import torchvision`` succeed when its C extension cannot load (ComfyUI test server only).

The devserver installs the CPU build of torch 2.13.0 beside torchvision 0.28.0, whose wheel is a
CUDA build: its ``_C.so`` does not load, so the operators it would define do not exist. Most of
``torchvision/_meta_registrations.py`` copes with that, but it registers fake kernels for
``torchvision::nms`` and ``torchvision::qnms`` unconditionally, and registering a kernel for an
undefined operator raises ``RuntimeError: operator torchvision::nms does not exist``. ComfyUI
imports torchvision at start, so it would not start.

Fix, without editing any installed file: just before that module is imported, define the two
operator schemas (schemas only, no implementation). torchvision's Python parts then work; its C
ops (nms, roi_align) and ``torchvision.io`` decoding stay unavailable, and nothing the tests run
needs them. See comfyui-api.md §12.2.
"""

import importlib.abc
import sys

# torch.library.Library drops its definitions when it is garbage-collected: keep it alive.
_libraries = []


class _DefineNmsSchemas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "torchvision._meta_registrations":
            return None
        sys.meta_path.remove(self)  # one shot; the normal finders do the actual import
        import torch
        import torchvision.extension as ext  # already imported by torchvision/__init__.py

        if not ext._has_ops():  # the C extension failed to load: define what it would have
            lib = torch.library.Library("torchvision", "DEF")
            for op in ("nms", "qnms"):
                lib.define(op + "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _libraries.append(lib)
        return None  # not ours to load: let the import proceed as usual


sys.meta_path.insert(0, _DefineNmsSchemas())
