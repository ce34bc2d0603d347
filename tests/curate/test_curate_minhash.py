"""MinHash near-dedup: injected 5%-edit copies are found, distinct documents are not removed."""

from __future__ import annotations

import random

import numpy as np
from curate_helpers import samples

from gaperon.curate.demo import near_duplicate
from gaperon.curate.minhash import MinhashParams, duplicates_to_remove, jaccard, shingles, signature
from gaperon.curate.text import words


def _run(texts: list[str], p: MinhashParams) -> set[int]:
    sets = [shingles(t, p.ngram) for t in texts]
    sigs = np.stack([signature(s, p) for s in sets])
    keys = np.arange(len(texts), dtype=np.int64)
    return set(duplicates_to_remove(keys, sigs, sets, p)["remove"])


def test_recall_and_precision_on_injected_near_duplicates():
    rng = random.Random(0)
    base = [d["text"] for d in samples("en", 600) + samples("fr", 600) if len(d["text"].split()) >= 50]
    # The corpus has genuine near-duplicates of its own (parallel help pages); count them first so
    # that "distinct" means distinct.
    p = MinhashParams()
    own = _run(base, p)
    distinct = [t for i, t in enumerate(base) if i not in own]
    picked = rng.sample(range(len(distinct)), 200)
    texts = distinct + [near_duplicate(distinct[i], 0.05, rng) for i in picked]
    removed = _run(texts, p)
    injected = set(range(len(distinct), len(texts)))
    recall = len(removed & injected) / len(injected)
    false_removals = len(removed - injected) / len(distinct)
    print(f"recall {recall:.3f}, distinct removed {false_removals:.4f} of {len(distinct)}")
    assert recall >= 0.95
    assert false_removals < 0.01
    # The copy kept is the one first in input order: no original is removed in favour of its copy.
    assert not removed & set(picked)


def test_shingle_jaccard_matches_python_sets():
    a = samples("fr", 3)[2]["text"]
    b = near_duplicate(a, 0.05, random.Random(1))

    def grams(t: str) -> set:
        ws = [w.lower() for w in words(t)]
        return set(zip(*(ws[i:] for i in range(5))))

    ref = len(grams(a) & grams(b)) / len(grams(a) | grams(b))
    assert abs(jaccard(shingles(a, 5), shingles(b, 5)) - ref) < 0.01
    # The signature estimates the Jaccard without bias (112 permutations: std ~0.05).
    p = MinhashParams()
    est = np.mean(signature(shingles(a, 5), p) == signature(shingles(b, 5), p))
    assert abs(est - ref) < 0.15


def test_datasketch_agrees_on_the_estimate():
    datasketch = __import__("pytest").importorskip("datasketch")
    texts = [d["text"] for d in samples("en", 40)]
    p = MinhashParams(bands=32, rows=4)
    errs_ours, errs_ref = [], []
    rng = random.Random(2)
    for t in texts[:20]:
        u = near_duplicate(t, 0.1, rng)
        sa, sb = shingles(t, 5), shingles(u, 5)
        true = jaccard(sa, sb)
        errs_ours.append(np.mean(signature(sa, p) == signature(sb, p)) - true)
        ma, mb = datasketch.MinHash(num_perm=128), datasketch.MinHash(num_perm=128)
        ma.update_batch([int(x).to_bytes(4, "little") for x in sa])
        mb.update_batch([int(x).to_bytes(4, "little") for x in sb])
        errs_ref.append(ma.jaccard(mb) - true)
    # Same number of permutations: our estimator is as accurate as datasketch's.
    assert np.sqrt(np.mean(np.square(errs_ours))) < 1.5 * np.sqrt(np.mean(np.square(errs_ref))) + 0.02


def test_reduce_from_disk_equals_the_in_memory_reduce(tmp_path):
    """The job's reduce streams the collect pass's files; its answer is the in-memory one's."""
    import json

    from datatrove.data import Document

    from gaperon.curate.minhash import MinhashCollect, MinhashReduce

    rng = random.Random(2)
    base = [d["text"] for d in samples("en", 80) + samples("fr", 80)]
    texts = base + [near_duplicate(base[i], 0.05, rng) for i in rng.sample(range(len(base)), 40)]
    texts += [base[3], base[7]]  # exact copies too
    p = MinhashParams()
    docs = [Document(text=t, id=str(i), metadata={"_file": i % 5, "_line": i}) for i, t in enumerate(texts)]
    tasks = 3
    for rank in range(tasks):
        step = MinhashCollect(p)
        step.work_dir = str(tmp_path)
        list(step.run(iter([d for d in docs if d.metadata["_file"] % tasks == rank]), rank, tasks))
    reduce = MinhashReduce(p)
    reduce.work_dir, reduce.tasks = str(tmp_path), tasks
    list(reduce.run(iter([])))
    got = json.loads((tmp_path / "remove.json").read_text())
    order = sorted(range(len(docs)), key=lambda i: (docs[i].metadata["_file"] << 40) | i)
    sets = [shingles(texts[i], p.ngram) for i in order]
    keys = np.array([(docs[i].metadata["_file"] << 40) | i for i in order], dtype=np.int64)
    ref = duplicates_to_remove(keys, np.stack([signature(s, p) for s in sets]), sets, p)
    assert got == ref and len(ref["remove"]) >= 35
    # a collect task whose output is gone is an error, not a dedup that silently misses its documents
    import shutil

    import pytest

    from gaperon.errors import DataError

    shutil.rmtree(tmp_path / "sig_00001")
    with pytest.raises(DataError, match="2 signature folders for 3 collect tasks"):
        list(reduce.run(iter([])))
