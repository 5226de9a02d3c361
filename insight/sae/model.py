"""Matryoshka BatchTopK sparse autoencoder (Sec. 3.2, App. B.2).

Names follow SAELens: ``d_in`` (d = 512), ``d_sae`` (m = 8192), ``W_enc`` (d, m),
``b_enc`` (m), ``W_dec`` (m, d), ``b_dec`` (d), ``feature_acts``.

Choices where the paper leaves room (each tested in tests/sae/test_sae.py):
- Group sizes: the ratios [0.008, 0.03, 0.06, 0.12, 0.24, 0.543] sum to 1.001; they are
  rounded by largest remainder to integers that sum to m (65/245/491/983/1966/4442 at
  m = 8192).
- Eq. B.5 is averaged over the batch: ``sum_j mean_b ||x_hat_j - x||^2``.
- Decoder rows are kept at unit norm (renormalised after every step, and the gradient
  component parallel to each row removed before it), as in Bussmann et al.'s BatchTopK.
- Aux-k (Eq. B.6): the ``k_aux`` largest pre-activations of *dead* latents per sample
  reconstruct the detached residual; normalised by the residual's variance
  ``sum ||r - r_mean||^2``; weight alpha_aux = 1/32.
- Inference: a threshold theta, one global value or one per latent (see
  :mod:`insight.sae.thresholds` for how it is set after training); a latent fires when
  ``z_pre > theta``. Training keeps the EMA of the smallest activation BatchTopK kept in
  each batch (Bussmann et al.; the ``dictionary_learning`` implementation).

Training never decodes densely: the kept pre-activations are recomputed sparsely with
gradients (only B*k of the B*m entries can receive gradient), and the Matryoshka
prefixes are decoded cumulatively, group by group, from the same sparse code, so the
loss of all six prefixes costs one sparse decode.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from insight.core.io import load_safetensors, save_safetensors

PAPER_GROUP_RATIOS = (0.008, 0.03, 0.06, 0.12, 0.24, 0.543)


def matryoshka_group_sizes(
    d_sae: int, ratios: tuple[float, ...] = PAPER_GROUP_RATIOS
) -> tuple[int, ...]:
    """Integer group sizes from size ratios: ``floor(m * r)`` for all groups but the last,
    which takes the rest, so they sum to m (the paper's ratios sum to 1.001; at m = 8192
    this gives 65/245/491/983/1966/4442)."""
    sizes = [math.floor(d_sae * r) for r in ratios[:-1]]
    sizes.append(d_sae - sum(sizes))
    if min(sizes) < 1:
        raise ValueError(
            f"d_sae={d_sae} is too small for the Matryoshka ratios {ratios}; give sae.groups explicitly"
        )
    return tuple(sizes)


@dataclass(frozen=True)
class SAEConfig:
    d_in: int = 512
    d_sae: int = 8192
    k: int = 12
    group_sizes: tuple[int, ...] = field(default_factory=lambda: matryoshka_group_sizes(8192))
    k_aux: int = 256
    aux_coefficient: float = 1 / 32
    dead_after: int = 10_000_000
    threshold_momentum: float = 0.001  # the release: beta 0.999
    threshold_start_step: int = 1000  # the release: the EMA starts after step 1000
    aux_activation: str = "relu"  # or "linear": see _aux_loss

    def __post_init__(self) -> None:
        if sum(self.group_sizes) != self.d_sae:
            raise ValueError(
                f"group sizes {self.group_sizes} sum to {sum(self.group_sizes)}, not d_sae={self.d_sae}"
            )
        if not 0 < self.k <= self.d_sae:
            raise ValueError("k must be in [1, d_sae]")

    @property
    def group_ends(self) -> tuple[int, ...]:
        """l_j: the (exclusive) end index of each Matryoshka prefix."""
        ends, total = [], 0
        for size in self.group_sizes:
            total += size
            ends.append(total)
        return tuple(ends)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["group_sizes"] = list(self.group_sizes)
        return data


def batch_topk_indices(pre: torch.Tensor, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Values and flat indices of the ``total`` largest entries of ``pre`` (B, m).

    Exact BatchTopK without sorting all B*m entries: take each row's top ``c``
    candidates, then the global top ``total`` among them. If some row had all ``c``
    candidates selected it might hold more, and the full flat top-k is used instead.
    """
    batch, width = pre.shape
    total = min(total, batch * width)
    per_row = min(width, max(4 * math.ceil(total / batch), 32))
    if per_row < width:
        cand_vals, cand_cols = pre.topk(per_row, dim=1, sorted=False)
        vals, pos = cand_vals.flatten().topk(total, sorted=False)
        rows = torch.div(pos, per_row, rounding_mode="floor")
        if int(torch.bincount(rows, minlength=batch).max()) < per_row:
            return vals, rows * width + cand_cols.flatten()[pos]
    return pre.flatten().topk(total, sorted=False)


def sparse_rows_times(
    out_index: torch.Tensor,
    in_index: torch.Tensor,
    weights: torch.Tensor,
    table: torch.Tensor,
    n_out: int,
) -> torch.Tensor:
    """``out[o] = sum over entries e with out_index[e] = o of weights[e] * table[in_index[e]]``.

    A sparse (n_out x len(table)) matrix times ``table``, through ``F.embedding_bag``
    (fused gather-scale-sum on CPU and GPU, differentiable in ``weights`` and ``table``).
    """
    order = torch.argsort(out_index, stable=True)
    counts = torch.bincount(out_index, minlength=n_out)
    offsets = torch.cumsum(counts, 0) - counts
    return F.embedding_bag(
        in_index[order], table, offsets, mode="sum", per_sample_weights=weights[order]
    )


def fires(pre: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Where latents fire under an inference threshold (a scalar or one per latent):
    ``z_pre > max(theta, 0)``, so a latent never fires below zero."""
    return pre > threshold.to(pre.device).clamp(min=0)


class _KeptPreActivations(torch.autograd.Function):
    """The kept entries ``z_pre[rows, cols]`` of Eq. B.3 as a differentiable function of
    ``x - b_dec``, ``W_enc`` and ``b_enc``. The forward returns the values already computed
    by the dense (no-grad) encoder; the backward is sparse, O(B*k*d) instead of O(B*m*d)."""

    @staticmethod
    def forward(ctx, values, centred, w_enc, b_enc, rows, cols):  # noqa: D102
        ctx.save_for_backward(centred, w_enc, rows, cols)
        ctx.d_sae = b_enc.shape[0]
        return values.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        centred, w_enc, rows, cols = ctx.saved_tensors
        grad_centred = sparse_rows_times(rows, cols, grad, w_enc.t().contiguous(), centred.shape[0])
        grad_w_enc = sparse_rows_times(cols, rows, grad, centred, ctx.d_sae).t()
        grad_b_enc = torch.zeros(ctx.d_sae, dtype=grad.dtype, device=grad.device).index_add_(
            0, cols, grad
        )
        return None, grad_centred, grad_w_enc, grad_b_enc, None, None


class MatryoshkaBatchTopKSAE(nn.Module):
    """The SAE: ``z_pre = W_enc^T (x - b_dec) + b_enc`` (B.3), ``z = ReLU(BatchTopK(z_pre))``
    (B.4), ``x_hat = W_dec^T z + b_dec``."""

    def __init__(self, config: SAEConfig, seed: int = 0):
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(seed)
        w_dec = torch.randn(config.d_sae, config.d_in, generator=generator)
        w_dec = F.normalize(w_dec, dim=1)
        self.W_dec = nn.Parameter(w_dec)
        self.W_enc = nn.Parameter(w_dec.t().clone())  # tied initialisation
        self.b_enc = nn.Parameter(torch.zeros(config.d_sae))
        self.b_dec = nn.Parameter(torch.zeros(config.d_in))
        self.register_buffer("threshold", torch.tensor(-1.0))  # < 0: not estimated yet
        self.register_buffer("samples_since_fired", torch.zeros(config.d_sae, dtype=torch.long))
        self.register_buffer("group_ends", torch.tensor(config.group_ends), persistent=False)

    # ----- inference ---------------------------------------------------------------
    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. B.3."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode_batch_topk(self, x: torch.Tensor) -> torch.Tensor:
        """Dense codes (B, m) with BatchTopK (Eq. B.4): exactly the top B*k pre-activations of
        the batch are kept (then ReLU); depends on the batch."""
        pre = self.pre_activations(x)
        vals, flat = batch_topk_indices(pre, x.shape[0] * self.config.k)
        codes = torch.zeros_like(pre).flatten()
        codes[flat] = F.relu(vals)
        return codes.view_as(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Batch-independent codes (B, m): ``z = z_pre * 1[z_pre > theta]`` (theta >= 0)."""
        if self.threshold.numel() == 1 and float(self.threshold) < 0:
            raise RuntimeError(
                "the inference threshold has not been estimated (train the SAE first)"
            )
        pre = self.pre_activations(x)
        return pre * fires(pre, self.threshold)

    def set_threshold(self, threshold: torch.Tensor) -> None:
        """Use ``threshold`` (a scalar, or one value per latent) for :meth:`encode`."""
        threshold = threshold.detach().float().to(self.W_enc.device)
        if threshold.numel() not in (1, self.config.d_sae):
            raise ValueError(
                f"a threshold has 1 or {self.config.d_sae} values, not {threshold.numel()}"
            )
        self.threshold = threshold.reshape(()) if threshold.numel() == 1 else threshold.clone()

    def decode(self, codes: torch.Tensor, prefix: int | None = None) -> torch.Tensor:
        """``x_hat = codes @ W_dec + b_dec``, optionally from the first ``prefix`` latents."""
        if prefix is None:
            return codes @ self.W_dec + self.b_dec
        return codes[:, :prefix] @ self.W_dec[:prefix] + self.b_dec

    # ----- training ----------------------------------------------------------------
    def training_losses(self, x: torch.Tensor, compute_aux: bool = True) -> dict[str, torch.Tensor]:
        """Matryoshka reconstruction loss (B.5) + alpha_aux * aux-k loss (B.6, B.7).

        Returns a dict with ``loss``, ``recon`` (sum over prefixes), ``aux``, ``prefix_mse``
        (per prefix, mean over batch of the squared error), ``x_hat`` (full
        reconstruction, detached), ``l0`` and the sparse code (``rows``, ``cols``, ``acts``:
        the B*k kept entries, zero where the ReLU cut them). Nothing here waits for the GPU
        except the BatchTopK exactness check.
        """
        cfg = self.config
        batch = x.shape[0]
        centred = x - self.b_dec
        with torch.no_grad():
            pre = centred @ self.W_enc + self.b_enc
            vals, flat = batch_topk_indices(pre, batch * cfg.k)
            rows = torch.div(flat, cfg.d_sae, rounding_mode="floor")
            cols = flat - rows * cfg.d_sae
        # the kept pre-activations carry gradient (only these B*k entries can get one); the
        # ReLU zeroes kept non-positive ones, and their gradient, as in Eq. B.4
        acts = F.relu(_KeptPreActivations.apply(vals, centred, self.W_enc, self.b_enc, rows, cols))
        groups = self.group_of(cols)
        n_groups = len(cfg.group_sizes)
        partial = sparse_rows_times(groups * batch + rows, cols, acts, self.W_dec, n_groups * batch)
        # x_hat of each prefix: the groups' partial decodes, accumulated
        prefixes = self.b_dec + partial.view(n_groups, batch, cfg.d_in).cumsum(0)
        errors = prefixes - x
        prefix_mse = errors.pow(2).sum(-1).mean(-1)
        recon = prefix_mse.sum()
        x_hat = prefixes[-1]
        aux = self._aux_loss(centred, pre, x - x_hat.detach()) if compute_aux else x.new_zeros(())
        loss = recon + cfg.aux_coefficient * aux
        return {
            "loss": loss,
            "recon": recon,
            "aux": aux,
            "prefix_mse": prefix_mse.detach(),
            "x_hat": x_hat.detach(),
            "l0": (acts > 0).sum() / batch,
            "rows": rows,
            "cols": cols,
            "acts": acts.detach(),
        }

    def _aux_loss(
        self, centred: torch.Tensor, pre: torch.Tensor, residual: torch.Tensor
    ) -> torch.Tensor:
        """Eq. B.6 on the latents dead for more than ``dead_after`` samples.

        ``aux_activation="relu"`` (Gao et al., dictionary_learning): the dead latents' top
        pre-activations pass a ReLU, so a dead latent whose pre-activation is negative on
        every patch gets no gradient and stays dead. ``"linear"`` keeps the top
        pre-activations as they are, so the aux-k loss also pulls those latents back."""
        dead = self.samples_since_fired > self.config.dead_after
        n_dead = int(dead.sum())
        if n_dead == 0:
            return centred.new_zeros(())
        k_aux = min(self.config.k_aux, n_dead)
        with torch.no_grad():
            masked = pre.masked_fill(~dead, float("-inf"))
            top_vals, top_cols = masked.topk(k_aux, dim=1)
            keep = (
                top_vals > 0 if self.config.aux_activation == "relu" else torch.isfinite(top_vals)
            )
            rows = torch.arange(pre.shape[0], device=pre.device)[:, None].expand_as(top_cols)[keep]
            cols = top_cols[keep]
        acts = _KeptPreActivations.apply(
            pre[rows, cols], centred, self.W_enc, self.b_enc, rows, cols
        )
        aux_hat = sparse_rows_times(rows, cols, acts, self.W_dec, residual.shape[0])
        denominator = (residual - residual.mean(0)).pow(2).sum().clamp(min=1e-12)
        return (residual - aux_hat).pow(2).sum() / denominator

    @torch.no_grad()
    def update_statistics(
        self, cols: torch.Tensor, acts: torch.Tensor, batch: int, step: int | None = None
    ) -> None:
        """Dead-latent counters and, after ``threshold_start_step`` (from step 0 when ``step``
        is not given), the EMA of the smallest kept activation (theta): its first update sets
        theta, later ones move it by ``threshold_momentum`` (dictionary_learning's
        ``threshold_beta = 1 - momentum``)."""
        fired = (
            torch.zeros(self.config.d_sae, device=cols.device).index_add_(
                0, cols, (acts > 0).float()
            )
            > 0
        )
        self.samples_since_fired.add_(batch).masked_fill_(fired, 0)
        if step is not None and step <= self.config.threshold_start_step:
            return
        smallest = torch.where(acts > 0, acts, torch.inf).min()
        updated = torch.where(
            self.threshold < 0,
            smallest,
            torch.lerp(self.threshold, smallest, self.config.threshold_momentum),
        )
        self.threshold.copy_(torch.where(torch.isfinite(smallest), updated, self.threshold))

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        if self.W_dec.grad is not None:
            unit = F.normalize(self.W_dec, dim=1)
            self.W_dec.grad -= (self.W_dec.grad * unit).sum(1, keepdim=True) * unit

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        self.W_dec.copy_(F.normalize(self.W_dec, dim=1))

    def dead_latents(self) -> int:
        return int(self.dead_count())

    def dead_count(self) -> torch.Tensor:
        return (self.samples_since_fired > self.config.dead_after).sum()

    def group_of(self, latents: torch.Tensor) -> torch.Tensor:
        """Matryoshka group index (0-based) of each latent."""
        return torch.bucketize(latents, self.group_ends.to(latents.device), right=True)


def save_sae(sae: MatryoshkaBatchTopKSAE, path: str | Path) -> None:
    """``W_enc`` (d, m), ``b_enc``, ``W_dec`` (m, d), ``b_dec``, ``threshold`` as safetensors."""
    save_safetensors(
        {
            "W_enc": sae.W_enc,
            "b_enc": sae.b_enc,
            "W_dec": sae.W_dec,
            "b_dec": sae.b_dec,
            "threshold": sae.threshold,
        },
        path,
        metadata={"config": _config_json(sae.config)},
    )


def load_sae(path: str | Path) -> MatryoshkaBatchTopKSAE:
    import json

    tensors, metadata = load_safetensors(path)
    raw = json.loads(metadata["config"])
    raw["group_sizes"] = tuple(raw["group_sizes"])
    sae = MatryoshkaBatchTopKSAE(SAEConfig(**raw))
    sae.set_threshold(tensors["threshold"])
    sae.load_state_dict({**tensors, "samples_since_fired": sae.samples_since_fired}, strict=True)
    return sae.eval().requires_grad_(False)


def _config_json(config: SAEConfig) -> str:
    import json

    return json.dumps(config.to_dict(), sort_keys=True)
