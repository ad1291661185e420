"""A hand-written training step for the MLP models: the same math as autograd, less overhead.

At the seed's size (about 0.3 GFLOP per iteration) a GAN step is dominated not by its
matrix products but by what surrounds them: autograd's bookkeeping, one kernel launch per
small operation, allocations, and many small matrix products where a few larger ones would
do. For dense ReLU networks the backward pass is a handful of matrix products, so this step
writes them out:

- G's weights do not change until its own step, so one forward pass of G over the noise of
  every discriminator step and of the generator step serves them all (the noise is drawn
  in the generic step's order, batch by batch, so the same numbers come out);
- each discriminator step runs real and generated images through D as one batch of 2B
  (D has no batch statistics, so each row's result is what two passes would give);
- gradients are written with one ``mm`` per weight and one ``sum`` per bias straight into
  each parameter's ``.grad`` buffer, allocated once; ReLU and sigmoid are differentiated
  from their outputs (``threshold_backward``, ``sigmoid_backward``), and the backward pass
  into the discriminator in the generator step computes input gradients only;
- the loss is still the registered objective (``losses.OBJECTIVES``): autograd
  differentiates just the loss with respect to the logits, so every objective works and
  no loss formula is written twice.

A run gives the same losses as the generic step to float32 rounding (tested);
``train.fast_step = false`` selects the generic autograd step.
"""

from __future__ import annotations

import functools

import torch
from torch import nn


def _dense_layers(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def _forward(layers: list[nn.Linear], x: torch.Tensor):
    """Dense layers with ReLU between them: (the input of each layer, output). The input of
    every layer but the first is a ReLU output, which is all its backward pass needs."""
    inputs = []
    for i, layer in enumerate(layers):
        inputs.append(x)
        x = torch.addmm(layer.bias, x, layer.weight.t())
        if i < len(layers) - 1:
            x = x.relu_()
    return inputs, x


def _grad_buffer(p: torch.Tensor) -> torch.Tensor:
    if p.grad is None:
        p.grad = torch.empty_like(p)
    return p.grad


def _backward(layers, inputs, grad: torch.Tensor, weight_grads: bool):
    """Back through :func:`_forward`: write weight gradients into ``.grad`` (if asked) and
    return the gradient with respect to the chain's input (None when weights are asked for:
    the input, data or noise, needs none)."""
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        if weight_grads:
            torch.mm(grad.t(), inputs[i], out=_grad_buffer(layer.weight))
            torch.sum(grad, 0, out=_grad_buffer(layer.bias))
            if i == 0:
                return None
        grad = grad.mm(layer.weight)
        if i > 0:
            grad = torch.ops.aten.threshold_backward(grad, inputs[i], 0)
    return grad


def _logit_grads(loss_fn, logits: torch.Tensor, *split):
    """(loss, d loss / d logits) for a registered objective applied to ``logits``."""
    with torch.enable_grad():
        leaf = logits.detach().requires_grad_(True)
        parts = leaf.split(split) if split else (leaf,)
        loss = loss_fn(*parts)
        (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def adam_step(opt: torch.optim.Adam) -> None:
    """``opt.step()`` for a fused Adam with one parameter group, without the per-call Python
    work of ``Optimizer.step`` (about half a millisecond, a tenth of a seed iteration on a
    CPU): the same two kernels on the same state, so the same numbers (tested). The first
    call goes through ``opt.step()``, which creates the state."""
    (group,) = opt.param_groups
    params = group["params"]
    if not opt.state:
        opt.step()
        return
    states = [opt.state[p] for p in params]
    steps = [s["step"] for s in states]
    torch._foreach_add_(steps, 1)
    beta1, beta2 = group["betas"]
    torch._fused_adam_(
        params,
        [p.grad for p in params],
        [s["exp_avg"] for s in states],
        [s["exp_avg_sq"] for s in states],
        [],
        steps,
        amsgrad=False,
        lr=group["lr"],
        beta1=beta1,
        beta2=beta2,
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=False,
    )


def supports(trainer) -> bool:
    """Whether the hand-written step computes what the generic step would for this trainer."""
    cfg = trainer.cfg
    return (
        cfg.train.fast_step
        and cfg.model.arch == "mlp"
        and not trainer.conditional
        and not trainer.penalties
        and cfg.loss.instance_noise == 0
        and all(opt.defaults["fused"] for opt in (trainer.opt_g, trainer.opt_d))
        and cfg.train.precision == "fp32"
        and not cfg.train.compile
    )


class FastMLPStep:
    """One training iteration of an unconditional MLP GAN, written out by hand."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.g_layers = _dense_layers(trainer.G)
        self.d_layers = _dense_layers(trainer.D)

    @torch.no_grad()
    def __call__(self):
        """Returns (d_loss, g_loss, real_logits, fake_logits) of the iteration."""
        tr = self.trainer
        obj, bs, d_steps = tr.objective, tr.batch_size, tr.cfg.train.d_steps
        d_loss_fn = functools.partial(obj.d_loss, **tr.d_loss_kw)
        z = torch.cat([tr.noise(bs) for _ in range(d_steps + 1)])
        g_inputs, out = _forward(self.g_layers, z)
        fakes = out.sigmoid_()
        for k in range(d_steps):
            x, _labels = tr.batches.next()
            both = torch.cat([x.flatten(1), fakes[k * bs : (k + 1) * bs]])
            inputs, logits = _forward(self.d_layers, both)
            d_loss, grad = _logit_grads(d_loss_fn, logits.squeeze(1), bs, bs)
            _backward(self.d_layers, inputs, grad.unsqueeze(1), weight_grads=True)
            adam_step(tr.opt_d)
        real_logits, fake_logits = logits.squeeze(1).split(bs)

        # the generator step, on the last part of the noise, through the updated D
        rows = slice(d_steps * bs, None)
        images = fakes[rows]
        inputs, logits = _forward(self.d_layers, images)
        g_loss, grad = _logit_grads(obj.g_loss, logits.squeeze(1))
        d_images = _backward(self.d_layers, inputs, grad.unsqueeze(1), weight_grads=False)
        d_out = torch.ops.aten.sigmoid_backward(d_images, images)
        _backward(self.g_layers, [h[rows] for h in g_inputs], d_out, weight_grads=True)
        adam_step(tr.opt_g)
        return d_loss, g_loss, real_logits, fake_logits
