"""Models dispatched with ``device_map="auto"`` whose weights ``accelerate`` offloads (to the CPU
or to disk): their parameters are ``meta`` tensors outside each module's forward, but the updates
read the first matrices directly. :func:`onloaded` holds every offloaded weight on its execution
device for the duration of a check, with the values ``accelerate`` would load.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn


def _offloading_hooks(model: nn.Module) -> list[tuple[nn.Module, object]]:
    """``(module, hook)`` for every module whose ``accelerate`` hook offloads its weights."""
    found = []
    for module in model.modules():
        hook = getattr(module, "_hf_hook", None)
        for h in getattr(hook, "hooks", (hook,)):  # a SequentialHook holds several
            if getattr(h, "offload", False):
                found.append((module, h))
    return found


@contextlib.contextmanager
def onloaded(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with every offloaded weight loaded on its execution device (nothing changes for a
    model without offloading); on exit they are offloaded again."""
    hooks = _offloading_hooks(model)
    for module, hook in hooks:  # the hook's own loading step, as before the module's forward
        hook.pre_forward(module)
        hook.offload = False
    try:
        yield model
    finally:
        for module, hook in hooks:  # and its own offloading step, as after it
            hook.offload = True
            hook.post_forward(module, None)
