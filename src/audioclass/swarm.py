"""The study's six population optimisers, for ensemble weights.

Each minimises ``fitness(x)`` over the box [0, 1]^dim and is called as
``OPTIMISERS[name](fitness, dim, rng=rng, population=20, iterations=100)``,
returning an :class:`Result`. They share one budget rule: ``population``
evaluations per iteration plus one initial population, so they compare on
equal terms.

- ``bbpso``: bare-bones particle swarm (Kennedy 2003). A particle jumps to a
  Gaussian sample centred between its best and the swarm's best, with the
  spread of their distance.
- ``jaya``: moves towards the best and away from the worst (Rao 2016).
- ``de``: differential evolution, rand/1/bin.
- ``random``: random optimisation (Matyas). Each walker takes Gaussian steps
  and keeps improvements, and its step shrinks when it stops improving.
- ``gwo``: grey wolf optimiser (Mirjalili 2014). The pack moves towards its
  three best wolves as the exploration factor falls from 2 to 0.
- ``ga``: a real-coded genetic algorithm. Tournament selection, blend
  crossover, Gaussian mutation and one elite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Fitness = Callable[[np.ndarray], float]


@dataclass(frozen=True)
class Result:
    x: np.ndarray  # best point, shape (dim,), in [0, 1]
    fitness: float
    calls: int  # fitness evaluations


class _Counted:
    def __init__(self, fitness: Fitness):
        self.fitness, self.calls = fitness, 0

    def __call__(self, x: np.ndarray) -> float:
        self.calls += 1
        return float(self.fitness(x))

    def all(self, xs: np.ndarray) -> np.ndarray:
        return np.array([self(x) for x in xs])


def _best(f: _Counted, xs: np.ndarray, fs: np.ndarray) -> Result:
    i = int(np.argmin(fs))
    return Result(xs[i].copy(), float(fs[i]), f.calls)


def bbpso(fitness: Fitness, dim: int, *, rng: np.random.Generator, population: int, iterations: int) -> Result:
    f = _Counted(fitness)
    best_x = rng.random((population, dim))
    best_f = f.all(best_x)
    for _ in range(iterations):
        g = best_x[np.argmin(best_f)]
        x = np.clip(rng.normal((best_x + g) / 2, np.abs(best_x - g) + 1e-12), 0, 1)
        fx = f.all(x)
        better = fx < best_f
        best_x[better], best_f[better] = x[better], fx[better]
    return _best(f, best_x, best_f)


def jaya(fitness: Fitness, dim: int, *, rng: np.random.Generator, population: int, iterations: int) -> Result:
    f = _Counted(fitness)
    x = rng.random((population, dim))
    fx = f.all(x)
    for _ in range(iterations):
        best, worst = x[np.argmin(fx)], x[np.argmax(fx)]
        r1, r2 = rng.random((2, population, dim))
        candidate = np.clip(x + r1 * (best - np.abs(x)) - r2 * (worst - np.abs(x)), 0, 1)
        fc = f.all(candidate)
        better = fc < fx
        x[better], fx[better] = candidate[better], fc[better]
    return _best(f, x, fx)


def de(
    fitness: Fitness, dim: int, *, rng: np.random.Generator, population: int, iterations: int, weight: float = 0.7, crossover: float = 0.9
) -> Result:
    f = _Counted(fitness)
    x = rng.random((population, dim))
    fx = f.all(x)
    for _ in range(iterations):
        for i in range(population):
            a, b, c = x[rng.choice([j for j in range(population) if j != i], 3, replace=False)]
            mutant = np.clip(a + weight * (b - c), 0, 1)
            cross = rng.random(dim) < crossover
            cross[rng.integers(dim)] = True
            trial = np.where(cross, mutant, x[i])
            ft = f(trial)
            if ft <= fx[i]:
                x[i], fx[i] = trial, ft
    return _best(f, x, fx)


def random_search(fitness: Fitness, dim: int, *, rng: np.random.Generator, population: int, iterations: int) -> Result:
    f = _Counted(fitness)
    x = rng.random((population, dim))
    fx = f.all(x)
    step = np.full(population, 0.2)
    for _ in range(iterations):
        candidate = np.clip(x + rng.normal(0, step[:, None], (population, dim)), 0, 1)
        fc = f.all(candidate)
        better = fc < fx
        x[better], fx[better] = candidate[better], fc[better]
        step = np.where(better, np.minimum(step * 1.5, 0.5), np.maximum(step * 0.9, 1e-3))
    return _best(f, x, fx)


def gwo(fitness: Fitness, dim: int, *, rng: np.random.Generator, population: int, iterations: int) -> Result:
    f = _Counted(fitness)
    x = rng.random((population, dim))
    fx = f.all(x)
    best_x, best_f = x.copy(), fx.copy()  # the pack's memory, so the leaders never get worse
    for t in range(iterations):
        leaders = best_x[np.argsort(best_f)[:3]]
        a = 2 * (1 - t / iterations)
        moves = []
        for leader in leaders:
            r1, r2 = rng.random((2, population, dim))
            big_a, big_c = 2 * a * r1 - a, 2 * r2
            moves.append(leader - big_a * np.abs(big_c * leader - x))
        x = np.clip(np.mean(moves, axis=0), 0, 1)
        fx = f.all(x)
        better = fx < best_f
        best_x[better], best_f[better] = x[better], fx[better]
    return _best(f, best_x, best_f)


def ga(fitness: Fitness, dim: int, *, rng: np.random.Generator, population: int, iterations: int, mutation: float = 0.1) -> Result:
    f = _Counted(fitness)
    x = rng.random((population, dim))
    fx = f.all(x)

    def tournament() -> np.ndarray:
        i, j = rng.integers(population, size=2)
        return x[i] if fx[i] < fx[j] else x[j]

    for _ in range(iterations):
        elite = x[np.argmin(fx)].copy()
        children = [elite]
        while len(children) < population:
            mix = rng.uniform(-0.25, 1.25, dim)  # blend crossover, a little outside the parents
            child = mix * tournament() + (1 - mix) * tournament()
            child += rng.normal(0, mutation, dim) * (rng.random(dim) < 1 / dim + 0.1)
            children.append(np.clip(child, 0, 1))
        x = np.array(children)
        fx = np.concatenate([[fx.min()], f.all(x[1:])])
    return _best(f, x, fx)


OPTIMISERS: dict[str, Callable[..., Result]] = {
    "bbpso": bbpso,
    "jaya": jaya,
    "de": de,
    "random": random_search,
    "gwo": gwo,
    "ga": ga,
}
