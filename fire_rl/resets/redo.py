"""ReDo: recycling dormant neurons (Sokar, Agarwal, Castro, Evci 2023, "The Dormant Neuron Phenomenon in Deep
Reinforcement Learning", ICML 2023).

Official code: github.com/google/dopamine @ 1dd1661, ``dopamine/labs/redo/weight_recyclers.py`` (``NeuronRecycler``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fire_rl.metrics import dormant_scores, probe_forward
from fire_rl.resets.common import (
    MATRIX_KINDS,
    LayerReport,
    ResetReport,
    fresh_draw,
    layer_kind,
    resolve_layers,
)

__all__ = ["NeuronPair", "find_neuron_pairs", "redo_"]


@dataclass(frozen=True)
class NeuronPair:
    """One recyclable activation layer: the layer producing its pre-activations, and the layer reading it.

    Attributes:
        producer: qualified name of the `nn.Linear` / `nn.Conv2d` whose outputs feed the ReLU; unit i = its output
            row i (Linear) or output channel i (Conv2d).
        activation: the `dormant_scores` key of that ReLU call (its module name, or ``name#k`` for the k-th call of a
            ReLU module called several times).
        consumer: qualified name of the `nn.Linear` / `nn.Conv2d` reading the ReLU's output; unit i's outgoing
            weights are its input column i (Linear), input channel i (Conv2d), or, through an `nn.Flatten` of a
            (B, C, H, W) activation, the H·W columns [i·H·W, (i+1)·H·W) (PyTorch flattens channel-major).
        spatial: H·W for the Flatten case (3136 = 64 × 7 × 7 in the Nature CNN: 49 columns per channel), else 1.
    """

    producer: str
    activation: str
    consumer: str
    spatial: int = 1


@dataclass
class _Call:
    name: str
    module: nn.Module
    inputs: tuple
    output: object


def _leaf_modules(network: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in network.named_modules() if name and next(m.children(), None) is None}


def _trace(network: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[_Call]:
    """Every leaf-module call of one no-grad, eval-mode forward, in call order (modes and hooks restored after)."""
    calls: list[_Call] = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple, output: object) -> None:
            calls.append(_Call(name, module, args, output))

        return record

    with probe_forward(network, eval_mode=True) as handles:
        for name, module in _leaf_modules(network).items():
            handles.append(module.register_forward_hook(hook(name)))
        with torch.no_grad():
            network(*inputs)
    return calls


def _first_tensor(args: tuple) -> torch.Tensor | None:
    return args[0] if args and isinstance(args[0], torch.Tensor) else None


def _pair_of(index: int, calls: list[_Call], key: str, counts: dict[str, int]) -> NeuronPair:
    """Pair the ReLU call `calls[index]` with its producer and consumer, or raise ValueError saying why not."""
    act = calls[index]
    x, h = _first_tensor(act.inputs), act.output
    producers = [c for c in calls[:index] if c.output is x]
    if not producers or layer_kind(producers[-1].module) not in MATRIX_KINDS:
        fed_by = f"the {type(producers[-1].module).__name__} {producers[-1].name!r}" if producers else "a functional op"
        raise ValueError(
            f"activation {key!r} is fed by {fed_by}, not directly by an nn.Linear/nn.Conv2d, so ReDo cannot tell "
            "which incoming weights belong to its units"
        )
    producer = producers[-1]
    if counts[producer.name] > 1:
        raise ValueError(f"layer {producer.name!r} runs {counts[producer.name]} times per forward (shared weights)")
    if isinstance(producer.module, nn.Conv2d) and producer.module.groups != 1:
        raise ValueError(f"conv layer {producer.name!r} has groups={producer.module.groups}; ReDo needs groups=1")

    readers = []
    for c in calls[index + 1 :]:
        if _first_tensor(c.inputs) is not h:
            continue
        if isinstance(c.module, nn.Flatten):
            if c.module.start_dim != 1 or c.module.end_dim != -1 or h.dim() != 4:
                raise ValueError(f"nn.Flatten {c.name!r} after activation {key!r} must flatten (B, C, H, W) from dim 1")
            spatial = h.shape[2] * h.shape[3]
            readers += [(d, spatial) for d in calls[index + 1 :] if _first_tensor(d.inputs) is c.output]
        else:
            readers.append((c, 1))
    if len(readers) != 1:
        what = "no layer" if not readers else f"{len(readers)} modules ({', '.join(r.name for r, _ in readers)})"
        raise ValueError(
            f"the output of activation {key!r} is read by {what}; ReDo needs exactly one nn.Linear/nn.Conv2d reading "
            "it (directly or through nn.Flatten); the output layer's activation, if any, cannot be recycled"
        )
    consumer, spatial = readers[0]
    module, n_units = consumer.module, h.shape[1]
    if layer_kind(module) not in MATRIX_KINDS:
        raise ValueError(f"activation {key!r} is read by the {type(module).__name__} {consumer.name!r}, not a layer")
    if counts[consumer.name] > 1:
        raise ValueError(f"layer {consumer.name!r} runs {counts[consumer.name]} times per forward (shared weights)")
    fan_in = module.in_features if isinstance(module, nn.Linear) else module.in_channels
    if isinstance(module, nn.Conv2d) and (module.groups != 1 or spatial != 1):
        raise ValueError(f"conv layer {consumer.name!r} reading activation {key!r} must have groups=1 and no Flatten")
    if isinstance(module, nn.Linear) and h.dim() != 2 and spatial == 1:
        raise ValueError(f"nn.Linear {consumer.name!r} reads the {h.dim()}-D output of {key!r} without nn.Flatten")
    if fan_in != n_units * spatial:
        raise ValueError(
            f"layer {consumer.name!r} takes {fan_in} inputs, activation {key!r} has {n_units} units × {spatial}"
        )
    return NeuronPair(producer.name, key, consumer.name, spatial)


def find_neuron_pairs(
    network: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor], strict: bool = True
) -> list[NeuronPair]:
    """The (producer, activation, consumer) triples of `network`, found from one traced forward pass.

    Every leaf module is hooked for one eval-mode, no-grad forward on the first sample of `inputs`. For each
    `nn.ReLU` call (the modules `fire_rl.metrics.dormant_scores` hooks), the producer is the module whose output
    tensor *is* the ReLU's input (object identity, so any op in between breaks the pairing) and must be an
    `nn.Linear` / `nn.Conv2d`; the consumer is the one module whose input is the ReLU's output, directly or through
    one `nn.Flatten` of a (B, C, H, W) activation, and must be an `nn.Linear` / `nn.Conv2d` whose fan-in matches.
    Examples: the Nature CNN's ``encoder.0 → encoder.1 → encoder.2`` (conv → conv), ``encoder.4 → encoder.5 →
    [encoder.6 Flatten] → head.0`` (conv → Linear, 49 columns per channel) and ``head.0 → head.1 → head.2``;
    SimBa's ``….fc1 → ….act → ….fc2`` in every residual block. The output layer has no ReLU after it, so it is never a
    producer (ReDo excludes it).

    Args:
        network: the network; activations must be `nn.ReLU` modules.
        inputs: a batch (tensor, or tuple/list passed as ``network(*inputs)``); only its first sample is used.
        strict: raise for any ReLU that cannot be paired; False drops those (and returns only the pairable ones).

    Returns:
        The pairs in call order.

    Raises:
        ValueError: `network` not a module, bad `inputs`, no `nn.ReLU` called, or (strict) a ReLU whose producer or
            consumer is not a single Linear/Conv2d (the message says which and why).
    """
    if not isinstance(network, nn.Module):
        raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    args = _check_inputs(inputs)
    probe = tuple(t[:1] if t.dim() > 0 else t for t in args)
    calls = _trace(network, probe)
    counts: dict[str, int] = {}
    for c in calls:
        counts[c.name] = counts.get(c.name, 0) + 1
    relu_calls = [i for i, c in enumerate(calls) if isinstance(c.module, nn.ReLU)]
    if not relu_calls:
        raise ValueError(f"{type(network).__name__} calls no nn.ReLU module; ReDo scores ReLU activations")
    seen: dict[str, int] = {}
    pairs = []
    for i in relu_calls:
        name = calls[i].name
        k = seen.get(name, 0)
        seen[name] = k + 1
        key = name if counts[name] == 1 else f"{name}#{k}"
        try:
            pairs.append(_pair_of(i, calls, key, counts))
        except ValueError:
            if strict:
                raise
    return pairs


def _check_inputs(inputs: object) -> tuple[torch.Tensor, ...]:
    if isinstance(inputs, torch.Tensor):
        return (inputs,)
    if isinstance(inputs, (tuple, list)) and inputs and all(isinstance(t, torch.Tensor) for t in inputs):
        return tuple(inputs)
    raise ValueError(f"inputs must be a tensor or a non-empty tuple/list of tensors, got {type(inputs).__name__}")


def _zero_moments_(optimizer: torch.optim.Optimizer | None, param: torch.Tensor, mask: torch.Tensor) -> None:
    """Zero, where `mask` (broadcastable to `param`) is True, every per-element optimizer state of `param`."""
    if optimizer is None:
        return
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, torch.Tensor) and value.shape == param.shape:
            value.masked_fill_(mask, 0.0)


def redo_(
    network: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    tau: float = 0.1,
    optimizer: torch.optim.Optimizer | None = None,
    layers: Mapping[str, nn.Module] | Sequence[str] | None = None,
) -> ResetReport:
    """One ReDo recycling pass in place (Sokar et al. 2023, Algorithm 1).

    Scores sᵢ = E|hᵢ| / mean_j E|h_j| of every ReLU over the batch `inputs` (`fire_rl.metrics.dormant_scores`, eval
    mode). For each pair (producer, ReLU, consumer) found by `find_neuron_pairs` and each τ-dormant unit i
    (sᵢ ≤ τ; all units when the whole layer is silent):

    * incoming weights: row i of the producer's weight (output channel i of a conv kernel) ← the same row of a fresh
      draw of the network's own initialisation (`fresh_draw`: ``init_weights()`` on a copy, torch's global RNG), as
      the official code re-draws with its initializer;
    * its bias: ← 0 (official code);
    * outgoing weights: column i of the consumer's weight (input channel i of a conv; the 49-column block of channel
      i for the Nature CNN's Flatten into 3136 inputs) ← 0 (official ``init_method_outgoing='zero'``).

    All incoming rows are written before any outgoing column is zeroed, so a layer that is both (the Nature CNN's
    middle convs) ends with zero columns for the dormant units of the layer before it, as in the official code.

    What happens to:
        * the changed tensors: the producers' weights and biases and the consumers' weights, in place under
          `torch.no_grad()`; every other element, and every other parameter, is bit-identical.
        * the optimizer state, when `optimizer` is given: every per-element state tensor of those weights (Adam's
          exp_avg and exp_avg_sq, and max_exp_avg_sq with amsgrad) is zeroed on exactly the recycled rows and
          zeroed columns; step counts and the biases' moments are kept (official code resets mu and nu of the
          recycled weights only).
        * target networks: nothing (the agent's target update follows the online network).
        * the RNG: one fresh draw of the whole network from torch's global RNG per call.

    Host syncs: one, for the per-layer counts in the report (the masks stay on the device).

    Args:
        network: the network; its activations must be `nn.ReLU` modules, each between two Linear/Conv2d layers.
        inputs: a batch to score on, ``network(*inputs)`` (a tensor or tuple/list, e.g. (obs, action) for a critic).
        tau: dormancy threshold τ ≥ 0; 0.1 in ReDo's benchmarks, 0.025 in its analysis, 0 for silent units only.
        optimizer: the optimizer of `network` whose moments to zero, or None to leave optimizer state alone.
        layers: the producers to recycle: None (every one found), a dict from `select_layers`, or qualified
            Linear/Conv2d names, each of which must be a producer.

    Returns:
        `ResetReport` with method ``"redo"``: one `LayerReport` (op ``"redo"``, `recycled` = the number of recycled
        units) per producer, the total seconds, and `changed` = the producer weights/biases and consumer weights of
        layers that recycled at least one unit.

    Raises:
        ValueError: bad `tau`, `inputs` or `optimizer`; `layers` not Linear/Conv2d layers of `network` or not
            producers (the message lists the producers); an architecture ReDo cannot pair (with ``layers=None``:
            any ReLU; with `layers`: those of the selected producers); parameters missing from `optimizer`. All
            raised before any parameter changes.
    """
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (math.isfinite(tau) and tau >= 0):
        raise ValueError(f"tau must be a finite float >= 0 (0.1 in ReDo's benchmarks), got {tau!r}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    wanted = None if layers is None else list(resolve_layers(network, layers))
    pairs = find_neuron_pairs(network, inputs, strict=wanted is None)
    by_producer = {p.producer: p for p in pairs}
    if wanted is not None:
        missing = [n for n in wanted if n not in by_producer]
        if missing:
            raise ValueError(
                f"layers {missing} are not recyclable producers (a Linear/Conv2d followed by a ReLU that one "
                f"Linear/Conv2d reads); recyclable: {sorted(by_producer)}"
            )
        pairs = [by_producer[n] for n in wanted]
    modules = dict(network.named_modules())
    if optimizer is not None:
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        absent = [
            f"{n}.{pn}"
            for pair in pairs
            for n in (pair.producer, pair.consumer)
            for pn, p in modules[n].named_parameters(recurse=False)
            if id(p) not in held
        ]
        if absent:
            raise ValueError(f"optimizer does not hold parameters {absent} of the recycled layers")

    start = time.perf_counter()
    scores = dormant_scores(network, inputs, eval_mode=True)
    fresh = fresh_draw(network, [p.producer for p in pairs])
    dormant = {p.producer: scores[p.activation] <= tau for p in pairs}  # (n_units,) bool each, on the device
    with torch.no_grad():
        for pair in pairs:
            layer, mask = modules[pair.producer], dormant[pair.producer]
            rows = mask.view(-1, *([1] * (layer.weight.dim() - 1)))  # (n, 1) or (n, 1, 1, 1)
            new = fresh[f"{pair.producer}.weight"].to(device=layer.weight.device, dtype=layer.weight.dtype)
            layer.weight.copy_(torch.where(rows, new, layer.weight))
            _zero_moments_(optimizer, layer.weight, rows)
            if layer.bias is not None:
                layer.bias.masked_fill_(mask, 0.0)
        for pair in pairs:
            reader, mask = modules[pair.consumer], dormant[pair.producer]
            if isinstance(reader, nn.Linear):
                cols = mask.repeat_interleave(pair.spatial).view(1, -1)  # (1, n·H·W): channel-major blocks
            else:
                cols = mask.view(1, -1, 1, 1)  # (1, C_in, 1, 1)
            reader.weight.masked_fill_(cols, 0.0)
            _zero_moments_(optimizer, reader.weight, cols)
    counts = torch.stack([dormant[p.producer].sum() for p in pairs]).tolist() if pairs else []
    report = ResetReport("redo")
    for pair, count in zip(pairs, counts, strict=True):
        report.layers.append(LayerReport(pair.producer, "redo", recycled=float(count)))
        if count:
            producer, reader = modules[pair.producer], modules[pair.consumer]
            report.changed += [p for p in (producer.weight, producer.bias, reader.weight) if p is not None]
    # A consumer that is also a producer (the Nature CNN's middle convs) would otherwise be listed twice.
    unique: dict[int, nn.Parameter] = {id(p): p for p in report.changed}
    report.changed = list(unique.values())
    report.seconds = time.perf_counter() - start
    return report
