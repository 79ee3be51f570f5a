"""The synthetic generators by name, as training and evaluation cases.

Structurally different generators, so that a network can be trained on some and judged on another
(leave-one-generator-out):

    phantom: a painted abdominal anatomy with a gastric tumour (``synthetic.phantom``).
    shapes: a lesion among random structures of random intensity (``synthetic.shapes``, SynthSeg-style).
    thorax: a chest CT crop around a lung nodule, a lesion surrounded by air (``synthetic.thorax``).
"""

from __future__ import annotations

import functools
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from gastric_propagate.data.cases import Case, CaseData, phantom_cases

GENERATORS = ("phantom", "shapes", "thorax")
# First seed of the held-out development cases that engine choices are made on (scripts/choose_vote.py,
# scripts/opinions_breakdown.py): no training run and no evaluation report uses these seeds.
DEV_SEED_START = 1_000_000


def _shapes(seed: int) -> CaseData:
    from gastric_propagate.synthetic.shapes import make_shapes_case

    return make_shapes_case(seed)


def _thorax(seed: int) -> CaseData:
    from gastric_propagate.synthetic.thorax import make_thorax_case

    return make_thorax_case(seed)


_LOADERS = {"shapes": _shapes, "thorax": _thorax}


def generated_cases(generator: str, count: int, seed_start: int = 0) -> list[Case]:
    """``count`` cases of one generator with consecutive seeds (picklable loaders: they load in parallel)."""
    if generator == "phantom":
        return phantom_cases(count, seed_start)
    if generator not in _LOADERS:
        raise ValueError(f"unknown generator {generator!r}; the generators are {', '.join(GENERATORS)}")
    return [Case(name=f"{generator}_{seed}", source=f"{generator} seed {seed}", seed=seed,
                 loader=functools.partial(_LOADERS[generator], seed))
            for seed in range(seed_start, seed_start + int(count))]


def load_all(cases: list[Case], workers: int = 1) -> list[CaseData]:
    """Loads (generates) the cases, in ``workers`` processes when more than one."""
    if workers <= 1 or len(cases) < 2:
        return [case.load() for case in cases]
    # Spawned, not forked: a fork of a process whose torch/OpenMP threads already ran can deadlock.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(_load, cases, chunksize=4))


def _load(case: Case) -> CaseData:
    return case.load()
