"""Measured latency profiles (MODEL.md §3.2): full-prefill seconds by length, and optionally decode step seconds
by batch, for one (model, GPU, tensor-parallel size). They replace the roofline for that triple; the cost model
(costmodel.prefill_seconds, costmodel.step_seconds) interpolates them.

In a catalog:

    profiles:
      - model: Llama-3.1-8B
        gpu: H100
        tp: 1
        prefill_s: {1000: 0.09, 8000: 0.62, 32000: 3.1}
        decode_step_s: {kv_tokens: 4000, by_batch: {1: 0.0071, 8: 0.0079, 32: 0.0108}}
        source: ...
        as_of: ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InputError
from .fields import Section, as_number

PROFILE_KEYS = ("model", "gpu", "tp", "prefill_s", "decode_step_s", "source", "as_of", "note")


@dataclass(frozen=True)
class Profile:
    model: str
    gpu: str
    tp: int
    prefill_tokens: tuple[int, ...]      # increasing
    prefill_seconds: tuple[float, ...]   # increasing
    decode_kv_tokens: int | None = None  # the KV length the step times were measured at
    decode_batches: tuple[int, ...] = ()
    decode_seconds: tuple[float, ...] = ()
    source: str = ""
    as_of: str = ""

    @property
    def key(self) -> tuple[str, str, int]:
        return self.model, self.gpu, self.tp

    @property
    def label(self) -> str:
        return f"{self.model} on {self.gpu} at tp {self.tp}"

    def as_yaml(self) -> dict[str, Any]:
        """The catalog entry that parses back to this profile."""
        entry: dict[str, Any] = {"model": self.model, "gpu": self.gpu, "tp": self.tp,
                                 "prefill_s": dict(zip(self.prefill_tokens, self.prefill_seconds))}
        if self.decode_batches:
            entry["decode_step_s"] = {"kv_tokens": self.decode_kv_tokens,
                                      "by_batch": dict(zip(self.decode_batches, self.decode_seconds))}
        entry.update(source=self.source, as_of=self.as_of)
        return entry


def _series(section: Section, key: str, what: str, value_name: str) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """A mapping {whole number: seconds}, strictly increasing in both."""
    where = section.where(key)
    raw = section.raw(key)
    if not isinstance(raw, dict) or not raw:
        raise InputError(where, f"expected a mapping of {what} to {value_name}, e.g. {{1000: 0.9, 10000: 8.6}}")
    points = []
    for x, y in raw.items():
        at = f"{where}.{x}"
        xv, yv = as_number(x, at), as_number(y, at)
        if xv != int(xv) or xv <= 0:
            raise InputError(at, f"expected a whole number of {what} above 0, found {x!r}")
        if yv <= 0:
            raise InputError(at, f"expected seconds above 0, found {y!r}")
        points.append((int(xv), float(yv)))
    points.sort()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 == x1:
            raise InputError(f"{where}.{x1}", f"{what} {x1} given twice")
        if y1 < y0 or (y1 == y0 and what == "tokens"):
            raise InputError(f"{where}.{x1}", f"{value_name} must grow with {what}: {y1:g} s at {x1} after "
                             f"{y0:g} s at {x0}")
    return tuple(p[0] for p in points), tuple(p[1] for p in points)


def parse_profile(section: Section, models: dict, gpus: set[str]) -> Profile:
    section.warn_unknown(PROFILE_KEYS)
    model = section.string("model")
    if model not in models:
        raise InputError(section.where("model"), f"unknown model {model!r} (known: {', '.join(sorted(models))})")
    gpu = section.string("gpu")
    if gpu not in gpus:
        raise InputError(section.where("gpu"), f"unknown GPU {gpu!r} (known here: {', '.join(sorted(gpus))})")
    tp = section.number("tp", 1, positive=True, integer=True)
    if tp & (tp - 1):
        raise InputError(section.where("tp"), f"expected a power of two, found {tp}")
    tokens, seconds = _series(section, "prefill_s", "tokens", "prefill seconds")
    window = models[model].max_context
    if window is not None and tokens[-1] > window:
        raise InputError(f"{section.where('prefill_s')}.{tokens[-1]}",
                         f"{tokens[-1]} tokens is beyond {model}'s window of {window}")
    kv, batches, steps = None, (), ()
    if section.has("decode_step_s"):
        decode = section.section("decode_step_s")
        decode.warn_unknown(("kv_tokens", "by_batch"))
        kv = decode.number("kv_tokens", positive=True, integer=True)
        batches, steps = _series(decode, "by_batch", "batch", "step seconds")
    return Profile(model, gpu, tp, tokens, seconds, kv, batches, steps, section.string("source", ""),
                   section.string("as_of", ""))


def parse_profiles(root: Section, models: dict, gpus: set[str]) -> tuple[Profile, ...]:
    profiles: dict[tuple, Profile] = {}
    for item in root.sections("profiles", []):
        profile = parse_profile(item, models, gpus)
        if profile.key in profiles:
            raise InputError(item.where(), f"a second profile for {profile.label}")
        profiles[profile.key] = profile
    return tuple(profiles.values())


def merge_profiles(base: list, overrides: list) -> list:
    """`extends`: a profile of the extending catalog replaces the base's for the same (model, gpu, tp)."""
    def key(item: Any) -> tuple:
        return (item.get("model"), item.get("gpu"), item.get("tp", 1)) if isinstance(item, dict) else (id(item),)

    merged = {key(item): item for item in base}
    merged.update({key(item): item for item in overrides})
    return list(merged.values())
