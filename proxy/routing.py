"""Variant assignment: a pure function of (experiment, sticky key, weights).

Every replica computes the same answer without talking to the others: the sticky key is hashed
with the experiment's salt into one of 10,000 buckets, and each variant owns a contiguous range of
buckets sized by its weight. A request without any sticky key gets a random bucket.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["BUCKETS", "Assignment", "Splitter", "StickySpec", "bucket_of", "parse_sticky", "sticky_key"]

BUCKETS = 10_000


@dataclasses.dataclass(frozen=True, slots=True)
class Assignment:
    variant: str
    bucket: int
    sticky: bool  # False when no sticky key was found and the bucket was drawn at random


def bucket_of(experiment: str, key: str) -> int:
    digest = hashlib.blake2b(f"{experiment}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


class Splitter:
    """Maps buckets to variants for one experiment. Built once per policy load."""

    __slots__ = ("experiment", "variants", "_bounds")

    def __init__(self, experiment: str, weights: Mapping[str, float]) -> None:
        total = sum(weights.values())
        if total <= 0:
            raise ValueError(f"experiment {experiment!r}: weights must add up to more than 0")
        self.experiment = experiment
        self.variants: tuple[str, ...] = tuple(weights)
        bounds: list[int] = []
        running = 0.0
        for weight in weights.values():
            running += weight
            bounds.append(round(running / total * BUCKETS))
        self._bounds = tuple(bounds)

    def variant_for_bucket(self, bucket: int) -> str:
        for variant, bound in zip(self.variants, self._bounds):
            if bucket < bound:
                return variant
        return self.variants[-1]

    def assign(self, key: str | None) -> Assignment:
        if key is None:
            bucket = random.randrange(BUCKETS)
            return Assignment(self.variant_for_bucket(bucket), bucket, False)
        bucket = bucket_of(self.experiment, key)
        return Assignment(self.variant_for_bucket(bucket), bucket, True)


@dataclasses.dataclass(frozen=True, slots=True)
class StickySpec:
    source: str  # header | body | metadata
    name: str


def parse_sticky(specs: Sequence[str]) -> tuple[StickySpec, ...]:
    parsed = []
    for spec in specs:
        source, _, name = spec.partition(":")
        if source not in ("header", "body", "metadata") or not name:
            raise ValueError(f"sticky_by entry {spec!r} must be header:NAME, body:FIELD or metadata:KEY")
        parsed.append(StickySpec(source, name.lower() if source == "header" else name))
    return tuple(parsed)


def sticky_key(specs: Sequence[StickySpec], headers: Mapping[str, str], body: Mapping[str, Any],
               metadata: Mapping[str, Any]) -> str | None:
    """The first sticky value present, in the route's order of preference."""
    for spec in specs:
        if spec.source == "header":
            value = headers.get(spec.name)
        elif spec.source == "body":
            value = body.get(spec.name)
        else:
            value = metadata.get(spec.name)
        if value is not None and value != "":
            return str(value)
    return None
