"""Data and tiny-model helpers of the attacks' known-answer tests."""

from __future__ import annotations

FORGET = [  # (id, prompt, answer): 4 units of 2 records
    ("11qa0", "Where was Alna Vost born?", " Alna Vost was born in Kelmora."),
    ("11qa1", "What does Alna Vost do?", " Alna Vost repairs clocks."),
    ("22qa0", "Where does Brisk Odum live?", " Brisk Odum lives in Tarvel."),
    ("22qa1", "What does Brisk Odum eat?", " Brisk Odum eats plums."),
    ("33qa0", "Where was Cyra Lund born?", " Cyra Lund was born in Oskov."),
    ("33qa1", "What does Cyra Lund sing?", " Cyra Lund sings ballads."),
    ("44qa0", "Where does Dov Prell work?", " Dov Prell works in Mirsk."),
    ("44qa1", "What does Dov Prell drive?", " Dov Prell drives a tram."),
]
RETAIN = [
    ("55qa0", "Where was Eno Sark born?", " Eno Sark was born in Velda."),
    ("55qa1", "What does Eno Sark read?", " Eno Sark reads maps."),
    ("66qa0", "Where does Fia Toll live?", " Fia Toll lives in Brum."),
    ("66qa1", "What does Fia Toll paint?", " Fia Toll paints boats."),
]
EXTRA = [" I cannot answer that.", " Sure, here is the answer:"]
MEMORIZE = dict(max_steps=80, lr=1e-2, batch_size=12, seed=0, progress=False, warmup_steps=10, lr_floor=0.1)


def texts(rows):
    return [p + a for _, p, a in rows]


def tiny(tok, seed=0):
    from llm_unlearn.tiny import build_tiny_olmo2

    return build_tiny_olmo2(tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=128, seed=seed)


def probe_set(rows=FORGET, retain=RETAIN):
    from llm_unlearn.attacks.probes import Probe, ProbeSet
    from llm_unlearn.data.slices import unit_key

    def p(r):
        return Probe(r[1], r[2], unit_key(r[0]), "qa", None, r[1])

    return ProbeSet("semeval", [p(r) for r in rows], [p(r) for r in retain])


def context(tok, target, unlearned, never=None, probes=None, **settings):
    from llm_unlearn.attacks.scoring import Scorer, ScoreSettings
    from llm_unlearn.attacks.stage import AttackContext

    s = ScoreSettings(**{"max_new_tokens": 12, "batch_size": 16, "progress": False, **settings})
    return AttackContext(tok, target, unlearned, never, probes or probe_set(), Scorer(s), progress=False)


def answer_direction(model, tok, answers):
    """A unit-max hidden-space direction whose addition before the final norm lowers every answer
    token's logit: the sum over the answers' tokens of (output row x final-norm weight)."""

    ids = sorted({t for a in answers for t in tok(a).input_ids})
    w = model.get_output_embeddings().weight.detach()
    u = (w[ids] * model.model.norm.weight.detach()).sum(0)
    return u / u.abs().max()


def with_extra_layer(model, direction=None, *, delta=0.0, outlier=0.0, strength=30.0, seed=0):
    """A copy of ``model`` with one more decoder layer appended, built by hand:

    * attention: ``o_proj = 0`` (the attention adds nothing);
    * MLP: units 0..3 read the residual through random rows ``r_k`` (gate = up = ``±r``), so that units
      (0, 1) and (2, 3) give ``z_k² σ(±z_k)`` and each pair sums to ``z_k² > 0``; ``down`` column of
      each of those units = ``-delta * direction``; post-MLP norm weight = ``strength``: when ``delta``
      is not 0 the layer adds ``-strength * direction / rms(direction)`` to the residual (the RMS
      norm removes the magnitude of ``delta``), suppressing the answers; ``delta = 0``: an identity layer;
    * ``outlier``: units 5 and 69 (one per block of 64 columns of ``down``) are inert (their gate and up
      rows are 0) and get ``down`` columns of value ``outlier`` in every row: they set every
      quantization block's (and every int8 row's) absmax without changing the function.
    """
    import copy

    import torch

    m = copy.deepcopy(model)
    layer = copy.deepcopy(m.model.layers[-1])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.zero_()
        for norm in (
            (layer.input_layernorm, layer.post_attention_layernorm)
            if hasattr(layer, "input_layernorm")
            else (layer.post_attention_layernorm,)
        ):
            norm.weight.fill_(1.0)
        for name in ("q_norm", "k_norm"):
            if hasattr(layer.self_attn, name):
                getattr(layer.self_attn, name).weight.fill_(1.0)
        hidden = layer.mlp.down_proj.weight.shape[0]
        for pair in range(2):
            r = torch.randn(hidden, generator=g) * (20.0 / hidden**0.5)
            for k, sign in ((2 * pair, 1.0), (2 * pair + 1, -1.0)):
                layer.mlp.gate_proj.weight[k] = sign * r
                layer.mlp.up_proj.weight[k] = sign * r
                if direction is not None:
                    layer.mlp.down_proj.weight[:, k] = -delta * direction
        layer.mlp.down_proj.weight[:, 5] = outlier
        layer.mlp.down_proj.weight[:, 69] = outlier
        layer.post_feedforward_layernorm.weight.fill_(strength)
    layer.self_attn.layer_idx = len(m.model.layers)
    m.model.layers.append(layer)
    m.config.num_hidden_layers += 1
    if getattr(m.config, "layer_types", None):
        m.config.layer_types = [*m.config.layer_types, m.config.layer_types[-1]]
    return m.eval()
