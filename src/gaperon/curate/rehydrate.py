"""Rehydration: repeat a document as many times as its duplicate count says (Gapetron's
`reduplicate_fn`), from a metadata field or a `module:function` taking the document."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from datatrove.data import Document, DocumentsPipeline

from gaperon.curate.steps import CountingStep, Counts, register_step
from gaperon.data.readers import load_repeat_fn
from gaperon.errors import ConfigError


class Rehydrate(CountingStep):
    name = "rehydrate"

    def __init__(self, field: str | None = None, fn: str | None = None, max_repeat: int = 100) -> None:
        super().__init__()
        if not field and not fn:
            raise ConfigError("rehydrate needs `field` (a metadata count) or `fn` (module:function)")
        self.field, self.fn, self.max_repeat = field, fn, int(max_repeat)
        if fn:
            load_repeat_fn(fn)  # fail at planning time, not in a worker

    def _count(self, doc: Document, fn: Callable | None) -> int | None:
        n: object = doc.metadata.get(self.field, 1) if self.field else 1
        if fn is not None:
            n = fn({"id": doc.id, "text": doc.text, **doc.metadata, "repeat": n})
        if isinstance(n, float) and math.isfinite(n) and n.is_integer():
            n = int(n)
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            return None
        return min(n, self.max_repeat)

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        fn = load_repeat_fn(self.fn) if self.fn else None
        counts = Counts()
        for doc in data:
            counts.seen(doc)
            n = self._count(doc, fn)
            if n is None:
                counts.drop(doc, "bad_repeat_count")
                continue
            if n == 0:
                counts.drop(doc, "zero_repeat")
                continue
            counts.keep(doc)
            yield doc
            for k in range(1, n):
                counts.keep(doc)
                yield Document(text=doc.text, id=doc.id, metadata={**doc.metadata, "copy": k})
        self.write_counts(counts, rank)


@register_step("rehydrate")
def _rehydrate(spec: dict) -> Rehydrate:
    return Rehydrate(**spec)
