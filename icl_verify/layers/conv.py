"""The depthwise causal convolution in front of the recurrent layers' scans (Griffin, Mamba,
Mamba-2, RWKV-7's token shift), with its step for the fast prefix path."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class CausalConv1d(nn.Module):
    """Depthwise causal convolution ``(B, T, e) -> (B, T, e)``:
    ``y_t = b + sum_{s=0}^{k-1} w_s * x_{t-s}`` per channel (``x_{<1} = 0``)."""

    def __init__(self, e: int, kernel: int = 4):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(e, e, kernel, groups=e, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.pad(x.transpose(1, 2), (self.kernel - 1, 0))
        return self.conv(y).transpose(1, 2)

    def step(self, context: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Convolution outputs ``(B, n+1, e)`` for copies ``x`` ``(B, n+1, e)``, copy ``i`` at
        position ``i`` after the context inputs ``context`` ``(B, n, e)``:
        ``b + w_0 x_i + sum_{s=1}^{k-1} w_s c_{i-s+1}`` (1-based ``c``, zero before the start)."""
        k, t = self.kernel, x.shape[1]
        w = self.conv.weight[:, 0, :]  # (e, k); w[:, k-1-s] multiplies the input s steps back
        padded = F.pad(context, (0, 0, k - 1, 0))  # (B, n+k-1, e)
        y = self.conv.bias + w[:, k - 1] * x
        for back in range(1, k):
            y = y + w[:, k - 1 - back] * padded[:, k - 1 - back:k - 1 - back + t]
        return y
