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
- every intermediate lives in a buffer allocated once (:func:`_buffers`), and gradients
  are written with one ``mm`` per weight and one ``sum`` per bias straight into each
  parameter's ``.grad``; ReLU and sigmoid are differentiated from their outputs (the
  ``threshold_backward`` and ``sigmoid_backward`` operators of ``torch.ops.aten``), and the
  backward pass into the discriminator in the generator step computes input gradients only;
- the loss is still the registered objective: autograd differentiates just the loss with
  respect to the logits, so every objective works and no loss formula is written twice;
- the optimisers are the run's own, stepped as the generic step steps them
  (:func:`~.step.optimizer_step`).

Stacked runs (:class:`~.seeds.StackedTrainer`) take the same kernel with one more leading
dimension, the run: every buffer is (runs, rows, width), the products batched ones
(``baddbmm``, ``bmm``), each run's batch and noise written straight into
its rows, and the objective applied to each run's logits.

``train.fast_step = false`` selects the generic step.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models import structure_of
from ..models.base import Discriminator, Generator
from ..models.mlp import DenseReLU
from .step import Step, StepResult, objective_value, optimizer_step
from .trainer import Trainer


class _Layer:
    """A dense layer's tensors, looked up once: its weight, the transposed view the forward
    pass multiplies by, its bias (the parameters are updated in place, so these stay valid).
    Stacked runs' tensors have a leading run dimension."""

    __slots__ = ("weight", "weight_t", "bias", "bias_rows", "in_features", "out_features")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        self.weight, self.weight_t, self.bias = weight, weight.transpose(-1, -2), bias
        self.bias_rows = bias if bias.dim() == 1 else bias.unsqueeze(1)
        """The bias as added to a (rows, width) or (runs, rows, width) output."""
        self.out_features, self.in_features = weight.shape[-2:]


def _affine(layer: _Layer, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """x W^T + b into ``out``: one product, or one batched product for stacked runs."""
    add = torch.addmm if x.dim() == 2 else torch.baddbmm
    return add(layer.bias_rows, x, layer.weight_t, out=out)


def _buffers(layers: list[_Layer], rows: tuple, device, inputs: bool) -> list[torch.Tensor]:
    """One preallocated (*rows, width) output per layer, allocated once: a fresh tensor of a
    few hundred kilobytes costs the kernel's page faults each time, more than the work written
    into it. ``inputs``: the widths of the layers' inputs (for a backward pass), else of their
    outputs."""
    widths = [layer.in_features if inputs else layer.out_features for layer in layers]
    return [torch.empty(*rows, w, device=device) for w in widths]


def _grad_buffer(p: torch.Tensor) -> torch.Tensor:
    if p.grad is None:
        p.grad = torch.empty_like(p)
    return p.grad


def _forward(layers: list[_Layer], x: torch.Tensor, outs: list[torch.Tensor], head=True):
    """Dense layers with ReLU between them (and after the last unless it is the ``head``),
    layer i's output written into ``outs[i]``: (the input of each layer, output). The input
    of every layer but the first is a ReLU output, which is all its backward pass needs."""
    inputs = []
    for i, layer in enumerate(layers):
        inputs.append(x)
        x = _affine(layer, x, outs[i])
        if not head or i < len(layers) - 1:
            x.relu_()
    return inputs, x


def _relu_backward_(grad: torch.Tensor, relu_out: torch.Tensor) -> torch.Tensor:
    """Zero ``grad`` where the ReLU's output is zero, in place."""
    return torch.ops.aten.threshold_backward.grad_input(grad, relu_out, 0, grad_input=grad)


def _backward(layers, inputs, grad: torch.Tensor, outs: list[torch.Tensor], weight_grads: bool):
    """Back through :func:`_forward`: write weight gradients into ``.grad`` (if asked) and
    return the gradient with respect to the chain's input (None when weights are asked for:
    the input, data or noise, needs none); layer i's input gradient goes into ``outs[i]``."""
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        mm = torch.mm if grad.dim() == 2 else torch.bmm
        if weight_grads:
            mm(grad.transpose(-1, -2), inputs[i], out=_grad_buffer(layer.weight))
            torch.sum(grad, -2, out=_grad_buffer(layer.bias))
            if i == 0:
                return None
        grad = mm(grad, layer.weight, out=outs[i])
        if i > 0:
            _relu_backward_(grad, inputs[i])
    return grad


def _logit_grads(loss_fn, logits: torch.Tensor, *split):
    """(loss, d loss / d logits) for a registered objective applied to ``logits`` (rows,),
    or (runs, rows) for stacked runs: each run's loss, and the gradient of their sum."""
    with torch.enable_grad():
        leaf = logits.detach().requires_grad_(True)
        loss = objective_value(loss_fn, *(leaf.split(split, -1) if split else (leaf,)))
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
    return loss.detach(), grad


def _dense_layers(chain: nn.Module) -> list[nn.Linear] | None:
    """The dense layers of a plain :class:`DenseReLU` chain (no parametrisation), else None."""
    if type(chain) is not DenseReLU or chain.parametrized():
        return None
    return chain.linear_layers()


def _layers(model: nn.Module, linears: list[nn.Linear]) -> list[_Layer]:
    """The :class:`_Layer` of each of ``model``'s ``linears`` (modules of its structure): their
    own tensors, or for stacked runs the stacked ones."""
    if structure_of(model) is model:
        return [_Layer(m.weight, m.bias) for m in linears]
    names = {m: name for name, m in model.structure.named_modules()}
    return [
        _Layer(model.stacked(f"{names[m]}.weight"), model.stacked(f"{names[m]}.bias"))
        for m in linears
    ]


class DenseStep(Step):
    """One training iteration of an unconditional MLP GAN, written out by hand."""

    FEATURES = frozenset({"several_d_steps", "label_smoothing", "stacked_runs"})

    @staticmethod
    def fits(trainer: Trainer) -> bool:
        """Whether G is a DenseReLU chain ending in a sigmoid and D a DenseReLU chain ending
        in ReLU under a dense head, both unconditional."""
        G, D = structure_of(trainer.G), structure_of(trainer.D)
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
        G, D = structure_of(trainer.G), structure_of(trainer.D)
        self.g_layers = _layers(trainer.G, _dense_layers(G.body))
        self.d_layers = _layers(trainer.D, _dense_layers(D.features) + [D.head])
        bs, k, device = trainer.batch_size, trainer.cfg.train.d_steps, trainer.device
        g, d = self.g_layers, self.d_layers
        runs = () if self.runs == 1 else (self.runs,)  # the leading dimension of every buffer
        # D's inputs: [real 1 | fake 1 | ... | real k | fake k | G step's fake], so that the
        # fakes of the last D step and of the G step are one block for G's output layer
        self.images = torch.empty(*runs, (2 * k + 1) * bs, g[-1].out_features, device=device)
        self.z = torch.empty(*runs, (k + 1) * bs, trainer.cfg.model.z_dim, device=device)
        self.g_out = _buffers(g[:-1], (*runs, (k + 1) * bs), device, inputs=False)
        self.g_back = _buffers(g, (*runs, bs), device, inputs=True)
        self.d_out = {n: _buffers(d, (*runs, n), device, inputs=False) for n in (bs, 2 * bs)}
        self.d_back = {n: _buffers(d, (*runs, n), device, inputs=True) for n in (bs, 2 * bs)}

    @torch.no_grad()
    def iterate(self) -> StepResult:
        tr, bs, k = self.trainer, self.trainer.batch_size, self.trainer.cfg.train.d_steps
        images, head = self.images, self.g_layers[-1]
        self.draw_inputs(out=self.z)
        z = self.z

        stacked = images.dim() == 3

        def rows(a: int, b: int | None = None):  # the index of rows a..b-1 (of every run)
            return (slice(None), slice(a, b)) if stacked else slice(a, b)

        # G's hidden layers once for all the noise; its output layer into the D inputs: the
        # first k - 1 D steps' fakes one by one, the last D step's and the G step's as one
        g_inputs, hidden = _forward(self.g_layers[:-1], z, self.g_out, head=False)
        for i in range(k - 1):
            fake = images[rows((2 * i + 1) * bs, (2 * i + 2) * bs)]
            _affine(head, hidden[rows(i * bs, (i + 1) * bs)], fake)
        _affine(head, hidden[rows((k - 1) * bs)], images[rows((2 * k - 1) * bs)]).sigmoid_()
        for i in range(k - 1):
            images[rows((2 * i + 1) * bs, (2 * i + 2) * bs)].sigmoid_()

        runs = images.shape[:-2]  # () for one run, (runs,) for stacked runs
        for i in range(k):
            both = images[rows(2 * i * bs, (2 * i + 2) * bs)]
            tr.batches.next(out=both[rows(0, bs)].view(*runs, bs, *tr.image_shape))
            inputs, logits = _forward(self.d_layers, both, self.d_out[2 * bs])
            d_loss, grad = _logit_grads(self.d_loss, logits.squeeze(-1), bs, bs)
            _backward(self.d_layers, inputs, grad.unsqueeze(-1), self.d_back[2 * bs], True)
            optimizer_step(tr.opt_d)
        # (buffers are reused); stacked runs' logits run after run
        real_logits, fake_logits = (x.flatten() for x in logits.squeeze(-1).clone().split(bs, -1))

        # the generator step, on the last batch of noise, through the updated D
        fakes = images[rows(2 * k * bs)]
        inputs, logits = _forward(self.d_layers, fakes, self.d_out[bs])
        g_loss, grad = _logit_grads(self.objective.g_loss, logits.squeeze(-1))
        d_images = _backward(self.d_layers, inputs, grad.unsqueeze(-1), self.d_back[bs], False)
        d_out = torch.ops.aten.sigmoid_backward.grad_input(d_images, fakes, grad_input=d_images)
        g_in = [x[rows(k * bs)] for x in g_inputs] + [hidden[rows(k * bs)]]
        _backward(self.g_layers, g_in, d_out, self.g_back, weight_grads=True)
        optimizer_step(tr.opt_g)
        return StepResult(d_loss, g_loss, real_logits, fake_logits)
