"""The dense ReLU kernel: the step of an unconditional MLP GAN written out by hand.

At the seed's size (about 0.3 GFLOP per iteration) a GAN step is dominated not by its
matrix products but by what surrounds them: autograd's bookkeeping, one kernel launch per
small operation, allocations, and many small matrix products where a few larger ones would
do. For dense ReLU networks the backward pass is a handful of matrix products, so this
kernel writes them out. It computes what :meth:`.step.Step.iterate` computes (tested equal
to float32 rounding), for models whose networks are :class:`~digitgan.models.mlp.DenseReLU`
chains (the ``mlp`` architecture, unconditional, without spectral norm):

- one pass of G's hidden layers over the noise of every discriminator step and of the
  generator step (G's weights do not change in between); its output layer batch by batch,
  each written beside the real batch it goes into D with;
- each discriminator step runs real and generated images through D as one batch of 2B;
- every intermediate lives in a buffer allocated once (:class:`_Buffers`), and gradients
  are written with one ``mm`` per weight and one ``sum`` per bias straight into each
  parameter's ``.grad``; ReLU and sigmoid are differentiated from their outputs (the
  ``threshold_backward`` and ``sigmoid_backward`` operators of ``torch.ops.aten``), and the
  backward pass into the discriminator in the generator step computes input gradients only;
- the loss is still the registered objective: autograd differentiates just the loss with
  respect to the logits, so every objective works and no loss formula is written twice;
- the optimisers are the run's own, stepped as the generic step steps them.

``train.fast_step = false`` selects the generic step.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.base import Discriminator, Generator
from ..models.mlp import DenseReLU
from .step import Step, StepResult
from .trainer import Trainer


class _Buffers:
    """Preallocated outputs, one per (name, layer, rows): a fresh tensor of a few hundred
    kilobytes costs the kernel's page faults each time, more than the work written into it."""

    def __init__(self, device: torch.device):
        self.device = device
        self.store: dict[tuple, torch.Tensor] = {}

    def __call__(self, name: str, layer: int, rows: int, cols: int) -> torch.Tensor:
        key = (name, layer, rows, cols)
        buf = self.store.get(key)
        if buf is None:
            buf = self.store[key] = torch.empty(rows, cols, device=self.device)
        return buf


def _grad_buffer(p: torch.Tensor) -> torch.Tensor:
    if p.grad is None:
        p.grad = torch.empty_like(p)
    return p.grad


def _forward(layers: list[nn.Linear], x: torch.Tensor, out, name: str, head: bool = True):
    """Dense layers with ReLU between them (and after the last unless it is the ``head``),
    each output written into ``out(name, layer, rows, cols)``: (the input of each layer,
    output). The input of every layer but the first is a ReLU output, which is all its
    backward pass needs."""
    inputs = []
    for i, layer in enumerate(layers):
        inputs.append(x)
        x = torch.addmm(
            layer.bias, x, layer.weight.t(), out=out(name, i, x.shape[0], layer.out_features)
        )
        if not head or i < len(layers) - 1:
            x.relu_()
    return inputs, x


def _relu_backward_(grad: torch.Tensor, relu_out: torch.Tensor) -> torch.Tensor:
    """Zero ``grad`` where the ReLU's output is zero, in place."""
    return torch.ops.aten.threshold_backward.grad_input(grad, relu_out, 0, grad_input=grad)


def _backward(layers, inputs, grad: torch.Tensor, out, name: str, weight_grads: bool):
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
        grad = torch.mm(grad, layer.weight, out=out(name, i, grad.shape[0], layer.in_features))
        if i > 0:
            _relu_backward_(grad, inputs[i])
    return grad


def _logit_grads(loss_fn, logits: torch.Tensor, *split):
    """(loss, d loss / d logits) for a registered objective applied to ``logits``."""
    with torch.enable_grad():
        leaf = logits.detach().requires_grad_(True)
        parts = leaf.split(split) if split else (leaf,)
        loss = loss_fn(*parts)
        (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def _dense_layers(chain: nn.Module) -> list[nn.Linear] | None:
    """The dense layers of a plain :class:`DenseReLU` chain (no parametrisation), else None."""
    if type(chain) is not DenseReLU or chain.parametrized():
        return None
    return chain.linear_layers()


class DenseStep(Step):
    """One training iteration of an unconditional MLP GAN, written out by hand."""

    FEATURES = frozenset({"several_d_steps", "label_smoothing"})

    @staticmethod
    def fits(trainer: Trainer) -> bool:
        """Whether G is a DenseReLU chain ending in a sigmoid and D a DenseReLU chain ending
        in ReLU under a dense head, both unconditional."""
        G, D = trainer.G, trainer.D
        return (
            type(G) is Generator
            and type(D) is Discriminator
            and G.num_classes == 0
            and D.num_classes == 0
            and _dense_layers(G.body) is not None
            and isinstance(G.body.final, nn.Sigmoid)
            and _dense_layers(D.features) is not None
            and isinstance(D.features.final, nn.ReLU)
            and type(D.head) is nn.Linear
        )

    def __init__(self, trainer: Trainer):
        super().__init__(trainer)
        self.g_layers = _dense_layers(trainer.G.body)
        self.d_layers = _dense_layers(trainer.D.features) + [trainer.D.head]
        self.out = _Buffers(trainer.device)

    @torch.no_grad()
    def iterate(self) -> StepResult:
        tr, out = self.trainer, self.out
        bs, d_steps = tr.batch_size, tr.cfg.train.d_steps
        pixels = self.g_layers[-1].out_features
        noise = [z for _, z in self.draw_inputs()]
        z = torch.cat(noise, out=out("z", 0, len(noise) * bs, tr.cfg.model.z_dim))
        # G's hidden layers once for all the noise; its output layer batch by batch, each
        # written beside the real batch it goes into D with
        g_inputs, hidden = _forward(self.g_layers[:-1], z, out, "G", head=False)
        head = self.g_layers[-1]
        for k in range(d_steps + 1):
            h = hidden[k * bs : (k + 1) * bs]
            last = k == d_steps
            dest = out("images", 0, bs, pixels) if last else out("D in", k, 2 * bs, pixels)[bs:]
            torch.addmm(head.bias, h, head.weight.t(), out=dest).sigmoid_()

        for k in range(d_steps):
            both = out("D in", k, 2 * bs, pixels)
            tr.batches.next(out=both[:bs].view(bs, *tr.image_shape))
            inputs, logits = _forward(self.d_layers, both, out, "D")
            d_loss, grad = _logit_grads(self.d_loss, logits.squeeze(1), bs, bs)
            _backward(self.d_layers, inputs, grad.unsqueeze(1), out, "D back", weight_grads=True)
            tr.opt_d.step()
        real_logits, fake_logits = logits.squeeze(1).clone().split(bs)  # (buffers are reused)

        # the generator step, on the last batch of noise, through the updated D
        images = out("images", 0, bs, pixels)
        inputs, logits = _forward(self.d_layers, images, out, "D")
        g_loss, grad = _logit_grads(self.objective.g_loss, logits.squeeze(1))
        d_images = _backward(
            self.d_layers, inputs, grad.unsqueeze(1), out, "D back", weight_grads=False
        )
        d_out = torch.ops.aten.sigmoid_backward.grad_input(d_images, images, grad_input=d_images)
        rows = slice(d_steps * bs, None)
        g_in = [x[rows] for x in g_inputs] + [hidden[rows]]
        _backward(self.g_layers, g_in, d_out, out, "G back", weight_grads=True)
        tr.opt_g.step()
        return StepResult(d_loss, g_loss, real_logits, fake_logits)
