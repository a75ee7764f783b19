"""Reading unlearning data (forget / retain records, MIA documents) and turning it into token ids.

See :mod:`llm_unlearn.data.records` and :mod:`llm_unlearn.data.tokenize`.
"""
