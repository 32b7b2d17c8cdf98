"""The step path through chunked stages: what the modules' `init_state` / `prefill` / `step`
methods share. A state is a small dataclass of `[B, ...]` tensors, one row per sequence, and a step
takes one token per sequence in one of two ways:

- masked (`rows` None): `x [B, D]` holds every sequence, and rows whose `active [B]` flag is False
  keep their state. A main network then steps on every row and keeps the result only where a chunk
  opens: no host sync, and a step compiles as one graph.
- ragged: a chunked stage runs its main network on a sub-batch of just the rows that open a chunk
  (one host sync per stage and step, to size it), so its cost follows the chunking. The outermost
  stage is asked for it (`ragged=True`) and steps every row itself; inside, `x [b, D]` holds only
  the sequences `rows [b]` (int64) of the state, and the others keep theirs.

Neither loops over sequences in Python."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor, nn

from mmchunk.kernels import seq_lengths


def last_rows(values: Tensor, cu_seqlens: Tensor) -> Tensor:
    """The last token's row of every sequence of a packed `values [T, ...]`: `[B, ...]`, zeros for
    an empty sequence."""
    lengths = seq_lengths(cu_seqlens)
    if values.shape[0] == 0:
        return values.new_zeros(lengths.numel(), *values.shape[1:])
    rows = values[(cu_seqlens[1:].long() - 1).clamp(min=0)]
    return torch.where(rows_mask(lengths > 0, rows), rows, torch.zeros_like(rows))


def rows_mask(flags: Tensor, like: Tensor) -> Tensor:
    """`flags [B]` shaped to broadcast over `like [B, ...]`."""
    return flags.view(-1, *([1] * (like.dim() - 1)))


def keep_inactive(active: Tensor | None, new: Any, old: Any) -> Any:
    """`new` in the rows where `active [B]` is True, `old` elsewhere; recurses into lists and
    dataclasses of tensors. `active` None: all rows take `new`."""
    if active is None or new is None:
        return new
    if isinstance(new, Tensor):
        return torch.where(rows_mask(active, new), new, old)
    if isinstance(new, list | tuple):
        return type(new)(keep_inactive(active, n, o) for n, o in zip(new, old))
    if dataclasses.is_dataclass(new):
        changes = {
            f.name: keep_inactive(active, getattr(new, f.name), getattr(old, f.name))
            for f in dataclasses.fields(new)
        }
        return dataclasses.replace(new, **changes)
    raise TypeError(f"keep_inactive: cannot merge a {type(new).__name__}")


def merge_rows(state: Any, new: Any, active: Tensor | None, rows: Tensor | None) -> Any:
    """The full-batch state after a step that computed `new`: for the sub-batch `rows [b]` (ragged)
    `new`'s rows written into a copy of `state`; else `keep_inactive(active, new, state)`."""
    if rows is None:
        return keep_inactive(active, new, state)
    if isinstance(new, Tensor):
        return state.index_copy(0, rows, new)
    if dataclasses.is_dataclass(new):
        return dataclasses.replace(
            new,
            **{
                f.name: merge_rows(getattr(state, f.name), getattr(new, f.name), None, rows)
                for f in dataclasses.fields(new)
            },
        )
    raise TypeError(f"merge_rows: cannot merge a {type(new).__name__}")


def state_rows(state: Any, index: Tensor | None) -> Any:
    """The state of the sequences `index [b]` only (a sub-batch; finished sequences dropped from a
    batch), or `state` itself for every sequence (`index` None)."""
    if state is None or index is None:
        return state
    if isinstance(state, Tensor):
        return state[index]
    if isinstance(state, list | tuple):
        return type(state)(state_rows(s, index) for s in state)
    if dataclasses.is_dataclass(state):
        return dataclasses.replace(
            state, **{f.name: state_rows(getattr(state, f.name), index) for f in dataclasses.fields(state)}
        )
    raise TypeError(f"state_rows: cannot index a {type(state).__name__}")


def init_state(module: nn.Module, batch: int, capacity: int, like: Tensor) -> Any:
    """`module.init_state(...)`, or None for the identity."""
    return None if isinstance(module, nn.Identity) else module.init_state(batch, capacity, like)


def prefill(module: nn.Module, x, room: int) -> tuple[Any, Any]:
    """`module.prefill(x, room)`, or `(x, None)` for the identity."""
    return (x, None) if isinstance(module, nn.Identity) else module.prefill(x, room)


def step(
    module: nn.Module, x: Tensor, state: Any, active: Tensor | None, rows: Tensor | None = None
) -> tuple[Tensor, Any]:
    """`module.step(x, state, active, rows)`, or `(x, None)` for the identity."""
    return (x, None) if isinstance(module, nn.Identity) else module.step(x, state, active, rows)
