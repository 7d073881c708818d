"""Load-time folding of eval-mode normalisations into plain convolution weights.

- BatchNorm (running statistics) that directly follows a convolution becomes part of that
  convolution's weight and bias; the BatchNorm is replaced by `nn.Identity`. A module names its
  foldable pairs in a class attribute `conv_bn_pairs = (("conv_attr", "norm_attr"), ...)`. Norms
  that do not directly follow a conv (the pre-activation norms of the 3-D res blocks) stay.
- Spectral norm becomes a plain `weight` = weight_orig / (u . (W_mat v)), the eval-mode value
  (no power iteration), where W_mat is weight_orig reshaped to (out, -1).

Folding changes the state dict (norm keys and weight_orig/u/v disappear), so it runs after
loading a checkpoint.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.spectral_norm import SpectralNorm, remove_spectral_norm


def fold_batch_norm_into_conv(conv: nn.Conv2d | nn.Conv3d, norm: _BatchNorm) -> None:
    """Rewrite `conv` in place so that conv'(x) == norm(conv(x)) with the norm in eval mode."""
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError(f"fold_batch_norm_into_conv: {norm} has no running statistics to fold")
    # float64 keeps the folded weights as close as possible to the two-step float32 result.
    with torch.no_grad():
        scale = norm.running_var.double().add(norm.eps).rsqrt()
        if norm.weight is not None:
            scale = scale * norm.weight.double()
        shift = -norm.running_mean.double() * scale
        if norm.bias is not None:
            shift = shift + norm.bias.double()
        if conv.bias is not None:
            shift = shift + conv.bias.double() * scale
        weight_shape = (-1,) + (1,) * (conv.weight.dim() - 1)
        folded_weight = conv.weight.double() * scale.view(weight_shape)
        conv.weight.copy_(folded_weight.to(conv.weight.dtype))
        if conv.bias is None:
            conv.bias = nn.Parameter(shift.to(conv.weight.dtype))
        else:
            conv.bias.copy_(shift.to(conv.bias.dtype))


def fold_batch_norms(module: nn.Module) -> int:
    """Fold every declared (conv, BatchNorm) pair under `module`; returns how many were folded."""
    folded = 0
    for owner in module.modules():
        for conv_name, norm_name in getattr(owner, "conv_bn_pairs", ()):
            norm = getattr(owner, norm_name)
            if isinstance(norm, nn.Identity):  # folded by an earlier call
                continue
            if not isinstance(norm, _BatchNorm):
                raise TypeError(f"fold_batch_norms: {type(owner).__name__}.{norm_name} is {type(norm).__name__}, "
                                "not a BatchNorm")
            fold_batch_norm_into_conv(getattr(owner, conv_name), norm)
            setattr(owner, norm_name, nn.Identity())
            folded += 1
    return folded


def has_spectral_norm(module: nn.Module) -> bool:
    """True when `module` carries torch's (hook-based) spectral norm on its weight."""
    # The hook object is the only record torch keeps of it; the official checkpoints use this form.
    return any(isinstance(hook, SpectralNorm) for hook in module._forward_pre_hooks.values())


def fold_spectral_norms(module: nn.Module) -> int:
    """Replace every spectral-normed weight under `module` by its eval-mode value; returns the count."""
    targets = [m for m in module.modules() if has_spectral_norm(m)]
    for target in targets:
        # torch's removal computes weight_orig / (u . (W_mat v)) without power iteration.
        remove_spectral_norm(target)
    return len(targets)


def fold_for_inference(module: nn.Module) -> nn.Module:
    """Put `module` in eval mode and fold its BatchNorms and spectral norms; returns `module`."""
    module.eval()
    fold_batch_norms(module)
    fold_spectral_norms(module)
    return module
