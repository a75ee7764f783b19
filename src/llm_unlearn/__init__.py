"""llm-unlearn: make a language model forget chosen data, and measure that it did."""

__version__ = "0.1.0"
