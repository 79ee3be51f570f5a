"""The synthetic generators by name, as training and evaluation cases.

Two structurally different generators, so that a network can be trained on one and judged on the other
(leave-one-generator-out):

    phantom: a painted abdominal anatomy with a gastric tumour (``synthetic.phantom``).
    shapes: a lesion among random structures of random intensity (``synthetic.shapes``, SynthSeg-style).
"""

from __future__ import annotations

import functools
from concurrent.futures import ProcessPoolExecutor
from typing import Callable

import numpy as np

from gastric_propagate.data.cases import Case, CaseData

GENERATORS = ("phantom", "shapes")


def _phantom(seed: int) -> CaseData:
    from gastric_propagate.synthetic.phantom import make_phantom

    generated = make_phantom(seed)
    image, label = generated.arrays()
    return CaseData(f"phantom_{seed}", image, (label > 0).astype(np.uint8),
                    tuple(float(s) for s in generated.spacing))


def _shapes(seed: int) -> CaseData:
    from gastric_propagate.synthetic.shapes import make_shapes_case

    return make_shapes_case(seed)


_MAKERS: dict[str, Callable[[int], CaseData]] = {"phantom": _phantom, "shapes": _shapes}


def generated_cases(generator: str, count: int, seed_start: int = 0) -> list[Case]:
    """``count`` cases of one generator with consecutive seeds (picklable loaders: they load in parallel)."""
    if generator not in _MAKERS:
        raise ValueError(f"unknown generator {generator!r}; the generators are {', '.join(GENERATORS)}")
    return [Case(name=f"{generator}_{seed}", source=f"{generator} seed {seed}", seed=seed,
                 loader=functools.partial(_MAKERS[generator], seed))
            for seed in range(seed_start, seed_start + int(count))]


def load_all(cases: list[Case], workers: int = 1) -> list[CaseData]:
    """Loads (generates) the cases, in ``workers`` processes when more than one."""
    if workers <= 1 or len(cases) < 2:
        return [case.load() for case in cases]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_load, cases, chunksize=4))


def _load(case: Case) -> CaseData:
    return case.load()
