"""A straightforward Matryoshka BatchTopK SAE step: the tests' oracle and the benchmark's
baseline. Dense codes, one dense decode per Matryoshka prefix, autograd through all of
it. Same equations as :mod:`insight.sae.model` (B.3-B.7), written the obvious way."""

from __future__ import annotations

import torch

from insight.sae.model import MatryoshkaBatchTopKSAE


def reference_losses(sae: MatryoshkaBatchTopKSAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    cfg = sae.config
    pre = sae.pre_activations(x)
    flat = pre.detach().flatten().topk(x.shape[0] * cfg.k).indices
    mask = torch.zeros(pre.numel(), dtype=torch.bool, device=x.device)
    mask[flat] = True
    codes = torch.relu(pre) * mask.view_as(pre)
    prefix_mse = torch.stack(
        [(sae.decode(codes, end) - x).pow(2).sum(-1).mean() for end in cfg.group_ends]
    )
    recon = prefix_mse.sum()
    residual = (x - sae.decode(codes)).detach()
    dead = sae.samples_since_fired > cfg.dead_after
    aux = x.new_zeros(())
    if dead.any():
        k_aux = min(cfg.k_aux, int(dead.sum()))
        top = pre.detach().masked_fill(~dead, float("-inf")).topk(k_aux, dim=1).indices
        dead_codes = torch.relu(pre) * torch.zeros_like(mask.view_as(pre)).scatter(1, top, True)
        aux = (residual - dead_codes @ sae.W_dec).pow(2).sum() / (residual - residual.mean(0)).pow(
            2
        ).sum()
    return {
        "loss": recon + cfg.aux_coefficient * aux,
        "recon": recon,
        "aux": aux,
        "prefix_mse": prefix_mse,
        "codes": codes,
    }


def reference_step(
    sae: MatryoshkaBatchTopKSAE, optimizer: torch.optim.Optimizer, x: torch.Tensor
) -> float:
    out = reference_losses(sae, x)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    sae.remove_parallel_decoder_grad()
    optimizer.step()
    sae.normalise_decoder()
    return out["loss"].item()
