"""Pretraining data: documents -> token shards -> phased mixtures -> batches at any global step.

What is where:
- `readers.py`  stream documents from jsonl(.gz/.zst), parquet, folders of .txt; count what is skipped.
- `pack.py`     `tokenize()`: parallel, resumable, byte-reproducible tokenize-and-pack (`gaperon tokenize`).
- `encode.py`   its one-core encoder (text -> flat ids with EOS) and the held-out split's text hash.
- `workers.py`  its N worker processes, each reading and encoding whole files or every N-th block.
- `shards.py`   the token folder format (manifest.json, {train,val}/NNNNN.bin + .idx) and its reader.
- `mixture.py`  `Phase`/`SourceSpec` from YAML (recipes/mixtures/), `load_phase()`.
- `sampler.py`  `MixtureSampler`: the batch at a step is a pure function of (seed, phase, step).
- `stats.py`    `gaperon data stats` / `gaperon data phase` tables.
"""
