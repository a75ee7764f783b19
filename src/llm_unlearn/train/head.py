"""The answer-only output layer: project to the vocabulary only the positions a loss needs.

A forward pre-hook on the model's output embedding replaces the hidden states [B, T, H] by the selected
rows of their flattened view ([1, N, H]), so the forward still runs through whatever wrapper the
Trainer put around the model (DDP, FSDP, DeepSpeed) and no [B, T, V] logits tensor is built.
"""

from __future__ import annotations

import contextlib

import torch

from llm_unlearn.train.step import AnswerPositions


def unwrap_model(model):
    """Unwrap DDP / accelerate wrappers (`.module`) to reach the PEFT (or plain) model."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return model


class AnswerHeadSelector:
    """Forward pre-hook on the output layer: when `index` is set, the hidden states [B, T, H] are
    replaced by the rows `index` of their flattened view, as [1, N, H]; the logits come out as
    [1, N, V] for the answer positions only. With `index` None the model behaves normally."""

    def __init__(self, model):
        head = unwrap_model(model).get_output_embeddings()
        if head is None:
            raise ValueError("the model has no output embeddings; cannot select answer positions")
        self.index: torch.Tensor | None = None
        self.handle = head.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if self.index is None:
            return None
        hidden = args[0]
        flat = hidden.reshape(-1, hidden.shape[-1]).index_select(0, self.index)
        return (flat.unsqueeze(0), *args[1:])

    @contextlib.contextmanager
    def select(self, index: torch.Tensor | None):
        prev, self.index = self.index, index
        try:
            yield
        finally:
            self.index = prev

    def remove(self) -> None:
        self.handle.remove()


# a batch is split into length groups only when that leaves at most this share of its padded tokens
SPLIT_WHEN = 0.75


def length_groups(attention_mask: torch.Tensor) -> list[tuple[list[int], int]] | None:
    """``[(rows, length), ...]``: the rows of a RIGHT-padded batch grouped by length (a row joins a
    group when padding it to the group's longest row adds at most ``MAX_PADDING`` of that length), each
    with its group's longest length; None when the mask is not right padding (a row's ones followed by
    zeros only) or when the groups would not cut the batch's tokens to ``SPLIT_WHEN`` or less."""
    from llm_unlearn.data.batching import length_batches
    from llm_unlearn.evaluation.passes.batched import MAX_PADDING

    mask = attention_mask.bool()
    B, T = mask.shape
    lengths = mask.sum(1)
    if B < 2 or not bool((mask == (torch.arange(T, device=mask.device) < lengths[:, None])).all()):
        return None
    lens = [int(x) for x in lengths.tolist()]
    groups = [(g, max(lens[i] for i in g)) for g in length_batches(lens, B, None, MAX_PADDING)]
    if len(groups) < 2 or sum(len(g) * n for g, n in groups) > SPLIT_WHEN * B * T:
        return None
    return groups


def answer_logits(
    model,
    selector: AnswerHeadSelector | None,
    input_ids,
    attention_mask,
    pos: AnswerPositions,
    split_lengths: bool = False,
):
    """Logits [N, V] at the answer positions. Without a selector, a full forward and a gather.

    ``split_lengths`` (one process, the model not wrapped: several forwards before one backward): a
    right-padded batch whose rows differ much in length runs as one forward per length group
    (:func:`length_groups`), each cut to its own longest row, and the answer logits are put back in
    the batch's order. The same logits as one padded forward (a causal model's real tokens never see
    the padding after them), up to the rounding of other matrix shapes; a batch of one 300-token
    document and short records no longer pays 300 tokens for every row."""
    if selector is None:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return logits.reshape(-1, logits.shape[-1]).index_select(0, pos.flat)
    split = split_lengths and attention_mask is not None and pos.flat.numel() > 0
    groups = length_groups(attention_mask) if split else None
    if groups is None:
        with selector.select(pos.flat):
            out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.logits[0]
    T = input_ids.shape[1]
    row, col = pos.rows, pos.flat - pos.rows * T
    parts, where = [], []
    for rows, length in groups:
        local = torch.full((input_ids.shape[0],), -1, dtype=torch.long, device=pos.flat.device)
        local[torch.tensor(rows, device=local.device)] = torch.arange(len(rows), device=local.device)
        mine = (local[row] >= 0).nonzero(as_tuple=True)[0]
        if mine.numel() == 0:
            continue  # no answer token in these rows: nothing to compute
        index = local[row[mine]] * length + col[mine]
        ids = input_ids[rows, :length]
        with selector.select(index):
            out = model(input_ids=ids, attention_mask=attention_mask[rows, :length], use_cache=False)
        parts.append(out.logits[0])
        where.append(mine)
    order = torch.cat(where)
    back = torch.empty_like(order)
    back[order] = torch.arange(order.numel(), device=order.device)
    return torch.cat(parts)[back]


def vocab_size(model) -> int:
    return int(unwrap_model(model).get_output_embeddings().weight.shape[0])


def decoder_layers(model):
    """The decoder's layer list of a causal LM (through PEFT and DDP wrappers)."""
    m = unwrap_model(model)
    if hasattr(m, "get_base_model"):
        m = m.get_base_model()
    decoder = m.get_decoder() if hasattr(m, "get_decoder") else getattr(m, "model", m)
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ValueError(f"cannot find the decoder layers of {type(m).__name__}")
    return layers


@contextlib.contextmanager
def capture_layer_output(model, layer: int | None):
    """Within the block, the forward output of decoder layer `layer` lands in the yielded dict under
    "hidden" ([B, T, H], in the graph). `layer` None captures nothing."""
    captured: dict = {}
    if layer is None:
        yield captured
        return
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer {layer} does not exist: the model has {len(layers)} decoder layers")

    def hook(module, args, output):
        captured["hidden"] = output[0] if isinstance(output, tuple) else output

    handle = layers[layer].register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()
