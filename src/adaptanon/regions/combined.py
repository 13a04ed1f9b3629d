"""Several region sources at once (``--regions faces+plates``, ``saliency+faces``): every
source sees the whole batch and each image gets all their detections."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from adaptanon.regions.base import Detection, RegionQuery, Regions, RegionSource


class Combined(RegionSource):
    """The union of the detections of ``sources``; an image one of them cannot answer
    for gets that source's error."""

    def __init__(self, sources: Sequence[RegionSource]) -> None:
        if not sources:
            raise ValueError("no region source to combine")
        self.sources = list(sources)
        self.uses_saliency = any(s.uses_saliency for s in self.sources)

    def find(self, queries: Sequence[RegionQuery]) -> list[Regions]:
        answers = [source.find(queries) for source in self.sources]
        out = []
        for per_image in zip(*answers, strict=True):
            errors = [r.error for r in per_image if r.error is not None]
            if errors:
                out.append(Regions(error="; ".join(errors)))
            else:
                out.append(Regions(tuple(d for r in per_image for d in r.detections)))
        return out

    def find_one(self, query: RegionQuery) -> list[Detection]:
        (found,) = self.find([query])
        if found.error is not None:
            raise ValueError(found.error)
        return list(found.detections)

    def unmatched(self, names: Iterable[str]) -> list[str]:
        names = list(names)
        return [key for source in self.sources for key in source.unmatched(names)]

    def at_most(self, max_side: int) -> RegionSource:
        return Combined([s.at_most(max_side) for s in self.sources])

    def describe(self) -> str:
        return "+".join(source.describe() for source in self.sources)
