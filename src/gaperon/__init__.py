"""gaperon: build bilingual French-English(-code) language models the Gaperon way."""

__version__ = "0.1.0"
