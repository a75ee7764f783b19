"""Model passes with no benchmark knowledge.

- :mod:`.inference`: the public passes (``greedy_generate``, ``answer_nll``, ``document_statistics``):
  input preparation, then ``select_passes(official_compat)`` picks ``BATCHED`` or ``OFFICIAL``;
- :mod:`.batched`: the default passes (KV-cache generation per length bucket, right-padded NLL passes);
- :mod:`.official`: the organizers' one-at-a-time loops (``--official-compat``);
- :mod:`.runtime`: helpers of every pass (device, eval mode, encoding, pad/EOS ids, decoding);
- :mod:`.token_stats`: per-document token statistics from logits (NLL, Min-K%, Min-K%++);
- :mod:`.answer_stats`: QA prompt formats and the per-answer-token pass (log-prob and argmax of every
  answer token) that TOFU and MUSE score from.
"""
