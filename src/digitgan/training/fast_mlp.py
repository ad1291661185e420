"""A hand-written training step for the MLP models: the same math as autograd, less overhead.

At the seed's size (about 0.3 GFLOP per iteration) a GAN step is dominated not by its
matrix products but by what surrounds them: autograd's bookkeeping, one kernel launch per
small operation, and two separate discriminator passes. For dense ReLU networks the
backward pass is a handful of matrix products, so this step writes them out:

- the discriminator step runs real and generated images through D as one batch of 2B
  (D has no batch statistics, so each row's result is what two passes would give);
- gradients are written straight into each parameter's ``.grad`` with one ``mm`` per
  weight and one ``sum`` per bias, and the backward pass into the discriminator in the
  generator step computes input gradients only;
- the loss is still the registered objective (``losses.OBJECTIVES``): autograd
  differentiates just the loss with respect to the logits, so every objective works and
  no loss formula is written twice.

It draws the real batch and the noise in the same order as the generic step, so a run
gives the same losses to float32 rounding either way (tested); ``train.fast_step = false``
selects the generic autograd step.
"""

from __future__ import annotations

import functools

import torch
from torch import nn


def _dense_layers(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _forward(layers: list[nn.Linear], x: torch.Tensor):
    """Dense layers with ReLU between them: (inputs of each layer, ReLU masks, output)."""
    inputs, masks = [], []
    for i, layer in enumerate(layers):
        inputs.append(x)
        x = torch.addmm(layer.bias, x, layer.weight.t())
        if i < len(layers) - 1:
            masks.append(x > 0)
            x = x.relu_()
    return inputs, masks, x


def _backward(layers, inputs, masks, grad: torch.Tensor, weight_grads: bool):
    """Back through :func:`_forward`: write weight gradients into ``.grad`` (if asked) and
    return the gradient with respect to the chain's input."""
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        if weight_grads:
            layer.weight.grad = grad.t().mm(inputs[i])
            layer.bias.grad = grad.sum(0)
        if i == 0 and weight_grads:
            return None  # the input (data or noise) needs no gradient
        grad = grad.mm(layer.weight)
        if i > 0:
            grad = grad.mul_(masks[i - 1])
    return grad


def _logit_grads(loss_fn, logits: torch.Tensor, *split):
    """(loss, d loss / d logits) for a registered objective applied to ``logits``."""
    with torch.enable_grad():
        leaf = logits.detach().requires_grad_(True)
        parts = leaf.split(split) if split else (leaf,)
        loss = loss_fn(*parts)
        (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def supports(trainer) -> bool:
    """Whether the hand-written step computes what the generic step would for this trainer."""
    cfg = trainer.cfg
    return (
        cfg.train.fast_step
        and cfg.model.arch == "mlp"
        and not trainer.conditional
        and not trainer.penalties
        and cfg.loss.instance_noise == 0
        and cfg.train.precision == "fp32"
        and not cfg.train.compile
    )


class FastMLPStep:
    """One training iteration of an unconditional MLP GAN, written out by hand."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.g_layers = _dense_layers(trainer.G)
        self.d_layers = _dense_layers(trainer.D)
        self.image_shape = trainer.G.image_shape

    @torch.no_grad()
    def __call__(self):
        """Returns (d_loss, g_loss, real_logits, fake_logits) of the iteration."""
        tr = self.trainer
        obj, bs = tr.objective, tr.cfg.data.batch_size
        d_loss_fn = functools.partial(obj.d_loss, **tr.d_loss_kw)
        for _ in range(tr.cfg.train.d_steps):
            x, _labels = tr.batches.next()
            z = tr.noise(bs)
            *_, fake = _forward(self.g_layers, z)
            both = torch.cat([x.flatten(1), fake.sigmoid_()])
            inputs, masks, logits = _forward(self.d_layers, both)
            d_loss, grad = _logit_grads(d_loss_fn, logits.squeeze(1), bs, bs)
            _backward(self.d_layers, inputs, masks, grad.unsqueeze(1), weight_grads=True)
            tr.opt_d.step()
        real_logits, fake_logits = logits.squeeze(1).split(bs)

        z = tr.noise(bs)
        g_inputs, g_masks, out = _forward(self.g_layers, z)
        images = out.sigmoid_()
        inputs, masks, logits = _forward(self.d_layers, images)
        g_loss, grad = _logit_grads(obj.g_loss, logits.squeeze(1))
        d_images = _backward(self.d_layers, inputs, masks, grad.unsqueeze(1), weight_grads=False)
        d_out = d_images.mul_(images).mul_(1 - images)  # through the sigmoid
        _backward(self.g_layers, g_inputs, g_masks, d_out, weight_grads=True)
        tr.opt_g.step()
        return d_loss, g_loss, real_logits, fake_logits
