"""The research testbed: data poisoning with controls, benchmark-in-a-haystack audits, n-gram
decontamination and Garlic contamination mixes. Each experiment is a recipe plus a report."""
