"""The identity and its error model on a CUDA device (skipped where there is none): every tiny
real architecture moved to the GPU, in float32 and bfloat16. Exact updates pass at every layer
and position (and the stack claim in float32), and ``dW`` scaled by ``1 + eps`` fails at some
layer.

bfloat16 runs twice: with PyTorch's default, which allows cuBLAS to reduce in bfloat16
(``torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction``), the error model must
charge bfloat16 accumulation (:func:`icl_verify.tolerance.accumulation_roundoff`) and only the
bound is asserted; with the flag off, accumulation is float32 as on the CPU and the wrong update
must fail too."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from icl_verify import claims
from icl_verify.updates import position_updates

pytest.importorskip("transformers", reason="the adapters need the optional extra: pip install '.[models]'")

from icl_verify.adapters import get_architecture, list_architectures  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

#: dtype -> a relative scaling of dW far above the rounding of a width-32 model
EPS = {torch.float32: 1e-2, torch.bfloat16: 1.0}


def _tokens(width: int, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 10, width, generator=g, dtype=torch.float64).to(dtype)


def _checks(stack, x, factor: float = 1.0):
    """Per layer: the identity check of every position's update, ``dW`` (or the shift, where
    ``dW`` is exactly 0) scaled by ``factor``."""
    out = []
    with torch.no_grad():
        xs = stack.block_inputs(x)
    for l, block in enumerate(stack.blocks):
        upd = position_updates(block, xs[l], block_index=l)
        if factor != 1.0:
            if all(not u.any() for u in upd.left) and upd.shift is not None:
                upd = dataclasses.replace(upd, shift=upd.shift * factor)
            else:
                upd = dataclasses.replace(upd, left=tuple(u * factor for u in upd.left))
        out.append(claims.identity(block, upd, dense=False))
    return out


@pytest.fixture
def reduced_bf16(request):
    """Sets ``allow_bf16_reduced_precision_reduction`` to ``request.param`` for one test."""
    matmul = torch.backends.cuda.matmul
    old = matmul.allow_bf16_reduced_precision_reduction
    matmul.allow_bf16_reduced_precision_reduction = request.param
    yield request.param
    matmul.allow_bf16_reduced_precision_reduction = old


CASES = [(torch.float32, False), (torch.bfloat16, False), (torch.bfloat16, True)]


@pytest.mark.parametrize("dtype,reduced_bf16", CASES, indirect=["reduced_bf16"],
                         ids=["float32", "bfloat16", "bfloat16-reduced"])
@pytest.mark.parametrize("arch", list_architectures())
def test_identity_on_cuda(arch, dtype, reduced_bf16):
    info = get_architecture(arch)
    stack = info.build(seed=0, dtype=dtype).to("cuda")
    x = _tokens(info.width, dtype).to("cuda")
    exact = _checks(stack, x)
    assert all(c.error.device.type == "cuda" for c in exact)
    assert all(torch.isfinite(c.tolerance).all() and c.passed for c in exact), [c.worst_ratio for c in exact]
    if dtype == torch.float32:
        assert claims.stack(stack, x).passed
    if not (dtype == torch.bfloat16 and reduced_bf16):
        wrong = _checks(stack, x, 1 + EPS[dtype])
        assert not all(c.passed for c in wrong), [c.worst_ratio for c in wrong]


def test_llm_command_on_cuda(tmp_path, capsys):
    """``icl-verify llm --device cuda`` on a saved tiny checkpoint, float32 and bfloat16: the
    prompt's ids are moved to the model's device wherever the analysis embeds them."""
    from test_llm_models import run_llm_on_checkpoint

    from icl_verify.adapters import tiny_causal_lm

    run_llm_on_checkpoint(tiny_causal_lm("llama", dtype=torch.float32), tmp_path, capsys,
                          "--device", "cuda", "--dtype", "float32", "bfloat16")
