"""ReDo: recycling dormant neurons (Sokar, Agarwal, Castro, Evci 2023, "The Dormant Neuron Phenomenon in Deep
Reinforcement Learning", ICML 2023).

Official code: github.com/google/dopamine @ 1dd1661, ``dopamine/labs/redo/weight_recyclers.py`` (``NeuronRecycler``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from fire_rl.metrics import check_inputs, dormant_scores, probe_forward
from fire_rl.resets.common import MATRIX_KINDS, LayerReport, ResetReport, fresh_draw, layer_kind, resolve_layers
from fire_rl.validation import check_range


@dataclass(frozen=True)
class NeuronPair:
    """One recyclable activation: the `nn.Linear`/`nn.Conv2d` `producer` whose unit i (output row or channel) feeds it,
    its `dormant_scores` key `activation` (``name#k`` for the k-th call of a shared ReLU module), and the
    `nn.Linear`/`nn.Conv2d` `consumer` reading it, whose input column or channel i holds unit i's outgoing weights,
    or, through an `nn.Flatten` of (B, C, H, W), columns [i·H·W, (i+1)·H·W) with `spatial` = H·W (49 for the Nature
    CNN's last conv; PyTorch flattens channel-major)."""

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


def _trace(network: nn.Module, inputs: tuple[torch.Tensor, ...]) -> list[_Call]:
    """Every leaf-module call of one no-grad, eval-mode forward, in call order (modes and hooks restored after)."""
    calls: list[_Call] = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple, output: object) -> None:
            calls.append(_Call(name, module, args, output))

        return record

    with probe_forward(network, eval_mode=True) as handles:
        for name, module in network.named_modules():
            if name and next(module.children(), None) is None:  # leaf modules only
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
    """The (producer, activation, consumer) triples of `network` in call order, from one traced eval-mode, no-grad
    forward of the first sample of `inputs`.

    For each `nn.ReLU` call, the producer is the module whose output tensor *is* the ReLU's input (object identity, so
    any op in between breaks the pairing) and the consumer the one module reading its output, directly or through one
    `nn.Flatten` of a (B, C, H, W) activation; both must be `nn.Linear`/`nn.Conv2d` (groups 1) run once per forward,
    with matching fan-in. The output layer has no ReLU after it, so it is never a producer (ReDo excludes it).

    Args:
        strict: raise for any ReLU that cannot be paired; False drops those.

    Raises:
        ValueError: `network` not a module, bad `inputs`, no `nn.ReLU` called, or (strict) an unpairable ReLU (the
            message says why).
    """
    if not isinstance(network, nn.Module):
        raise ValueError(f"network must be a torch.nn.Module, got {type(network).__name__}")
    calls = _trace(network, tuple(t[:1] if t.dim() > 0 else t for t in check_inputs(inputs)))
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
        seen[name] = seen.get(name, 0) + 1
        try:
            pairs.append(_pair_of(i, calls, name if counts[name] == 1 else f"{name}#{seen[name] - 1}", counts))
        except ValueError:
            if strict:
                raise
    return pairs


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

    Scores every ReLU's units on `inputs` (`fire_rl.metrics.dormant_scores`, eval mode); for each pair of
    `find_neuron_pairs` and each τ-dormant unit i (sᵢ ≤ τ; all units of a silent layer), as the official code does:
    row i of the producer's weight ← the same row of a fresh draw of the network's own init (`fresh_draw`), its
    bias ← 0, and the consumer's input column(s) i ← 0 (``init_method_outgoing='zero'``). All incoming rows are
    written before any outgoing column is zeroed, so a layer that is both (the Nature CNN's middle convs) ends with
    zero columns.

    What happens to:
        * the changed tensors: the producers' weights and biases and the consumers' weights, in place under
          `torch.no_grad()`; every other element and parameter is bit-identical.
        * the optimizer state (given `optimizer`): every per-element state tensor of those weights (Adam's exp_avg,
          exp_avg_sq, max_exp_avg_sq) zeroed on exactly the recycled rows and columns; steps and bias moments kept.
        * target networks: nothing (the agent's target update follows the online network).
        * the RNG: one fresh draw of the whole network from torch's global RNG per call.

    One host sync, for the per-layer counts.

    Args:
        network: its activations must be `nn.ReLU` modules, each between two Linear/Conv2d layers.
        inputs: a batch to score on, ``network(*inputs)`` (a tensor, or e.g. (obs, action) for a critic).
        tau: dormancy threshold τ ≥ 0; 0.1 in ReDo's benchmarks, 0.025 in its analysis, 0 for silent units only.
        optimizer: the optimizer of `network` whose moments to zero, or None.
        layers: the producers to recycle: None (every one found), a dict from `select_layers`, or qualified names.

    Returns:
        `ResetReport` ``"redo"``: one `LayerReport` per producer (`recycled` = units recycled), the total seconds, and
        `changed` = the producer weights/biases and consumer weights of layers that recycled a unit.

    Raises:
        ValueError: bad `tau`, `inputs` or `optimizer`; `layers` not producers of `network` (the message lists them);
            an architecture ReDo cannot pair (with ``layers=None``: any ReLU); parameters missing from `optimizer`.
            All before any parameter changes.
    """
    check_range("tau (0.1 in ReDo's benchmarks)", tau, 0)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    wanted = None if layers is None else list(resolve_layers(network, layers))
    pairs = find_neuron_pairs(network, inputs, strict=wanted is None)
    if wanted is not None:
        by_producer = {p.producer: p for p in pairs}
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
    changed: dict[int, nn.Parameter] = {}  # by id: a consumer that is also a producer would be listed twice
    for pair, count in zip(pairs, counts, strict=True):
        report.layers.append(LayerReport(pair.producer, "redo", recycled=float(count)))
        if count:
            producer, reader = modules[pair.producer], modules[pair.consumer]
            changed.update({id(p): p for p in (producer.weight, producer.bias, reader.weight) if p is not None})
    report.changed = list(changed.values())
    report.seconds = time.perf_counter() - start
    return report
