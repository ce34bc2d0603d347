"""Web-data curation as datatrove pipeline steps: language ID, heuristics, MinHash dedup, selection."""
