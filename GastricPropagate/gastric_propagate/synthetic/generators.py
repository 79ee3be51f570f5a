"""The synthetic generators by name, as training and evaluation cases (and the held-out phantoms in place of a folder).

Structurally different generators, so that a network can be trained on some and judged on another
(leave-one-generator-out):

    phantom: a painted abdominal anatomy with a gastric tumour (``synthetic.phantom``).
    shapes: a lesion among random structures of random intensity (``synthetic.shapes``, SynthSeg-style).
    thorax: a chest CT crop around a lung nodule, a lesion surrounded by air (``synthetic.thorax``).

and a variant of the first, for training and development cases (not a generator of its own in leave-one-generator-out):

    hypodense: the phantom with large low-density parts in its tumour, reaching the outline (necrotic, cystic or
        myxoid, as in real sarcomas); its training seeds start at ``TRAINING_SEED_START['hypodense']``, so that its
        anatomies are not those of the training phantoms.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np

from gastric_propagate.data.cases import Case, CaseData, folder_cases

GENERATORS = ("phantom", "shapes", "thorax")
# First seed of the held-out development cases that engine choices are made on (scripts/choose_vote.py,
# scripts/opinions_breakdown.py): no training run and no evaluation report uses these seeds.
DEV_SEED_START = 1_000_000
VARIANTS = ("hypodense",)
# The first training seed of each generator (0 where not given).
TRAINING_SEED_START = {"hypodense": 50_000}


def phantom_cases(n_cases: int, seed_start: int | None = None, **phantom_options: object) -> list[Case]:
    """``n_cases`` generated phantoms with consecutive seeds, held out from training by default.

    Args:
        n_cases: number of phantoms.
        seed_start: first seed; defaults to ``gastric_propagate.synthetic.phantom.HELD_OUT_SEED_START``.
        **phantom_options: passed to ``make_phantom`` (size_xy, n_slices, ...).
    """
    from gastric_propagate.synthetic.phantom import HELD_OUT_SEED_START

    start = HELD_OUT_SEED_START if seed_start is None else int(seed_start)
    # A partial of a module-level function, not a closure: the cases can be generated in other processes.
    return [Case(name=f"phantom_{seed}", source=f"phantom seed {seed}", seed=seed,
                 loader=functools.partial(_load_phantom, seed, phantom_options))
            for seed in range(start, start + int(n_cases))]


def load_cases(data: str | Path | None, n_cases: int | None = None, *, seed_start: int | None = None,
               **phantom_options: object) -> list[Case]:
    """Cases from a folder, or held-out phantoms when ``data`` is None.

    Args:
        data: a folder of image/label pairs, or None for generated phantoms.
        n_cases: at most this many cases (required for phantoms).
        seed_start: first phantom seed (phantoms only).
        **phantom_options: passed to ``make_phantom`` (phantoms only).
    """
    if data is None:
        if n_cases is None:
            raise ValueError("n_cases is required for generated phantoms")
        return phantom_cases(n_cases, seed_start, **phantom_options)
    return folder_cases(data, n_cases)


def _load_phantom(seed: int, options: dict) -> CaseData:
    from gastric_propagate.synthetic.phantom import make_phantom

    generated = make_phantom(seed, **options)
    image, label = generated.arrays()
    return CaseData(f"phantom_{seed}", image, (label > 0).astype(np.uint8), tuple(float(s) for s in generated.spacing))


def _hypodense(seed: int) -> CaseData:
    return dataclasses.replace(_load_phantom(seed, {"low_density_parts": True}), name=f"hypodense_{seed}")


def _shapes(seed: int) -> CaseData:
    from gastric_propagate.synthetic.shapes import make_shapes_case

    return make_shapes_case(seed)


def _thorax(seed: int) -> CaseData:
    from gastric_propagate.synthetic.thorax import make_thorax_case

    return make_thorax_case(seed)


_LOADERS = {"hypodense": _hypodense, "shapes": _shapes, "thorax": _thorax}


def generated_cases(generator: str, count: int, seed_start: int = 0) -> list[Case]:
    """``count`` cases of one generator with consecutive seeds (picklable loaders: they load in parallel)."""
    if generator == "phantom":
        return phantom_cases(count, seed_start)
    if generator not in _LOADERS:
        raise ValueError(f"unknown generator {generator!r}; the generators are {', '.join(GENERATORS + VARIANTS)}")
    return [Case(name=f"{generator}_{seed}", source=f"{generator} seed {seed}", seed=seed,
                 loader=functools.partial(_LOADERS[generator], seed))
            for seed in range(seed_start, seed_start + int(count))]


def load_all(cases: list[Case], workers: int = 1) -> list[CaseData]:
    """Loads (generates) the cases, in ``workers`` processes when more than one."""
    return list(iter_loaded(cases, workers))


def iter_loaded(cases: list[Case], workers: int = 1) -> Iterator[CaseData]:
    """The cases loaded one after another, in order, with at most a few loaded ahead (``workers`` processes when
    more than one): whoever takes each case's crops and lets it go holds a few whole CTs at a time, not all."""
    if workers <= 1 or len(cases) < 2:
        yield from (case.load() for case in cases)
        return
    # Spawned, not forked: a fork of a process whose torch/OpenMP threads already ran can deadlock.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: collections.deque = collections.deque()
        for case in cases:
            pending.append(pool.submit(_load, case))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _load(case: Case) -> CaseData:
    return case.load()
