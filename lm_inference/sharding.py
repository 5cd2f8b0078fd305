r"""A language model and its particles on a 2-d device mesh ``('particles', 'model')``.

The ``'model'`` axis splits the weights by the architecture's partition rules
(:data:`lm_inference.models.Rules`: tensor parallelism over heads and the MLP width, the embedding
and the output head over the vocabulary) and the KV cache over its KV heads; the ``'particles'``
axis splits everything with a particle axis (tokens, weights' histories, potential states, the
cache again), as :mod:`kernels.smc.sharding` does on a 1-d mesh. Inside the sweep:

- the cache ``k, v [N, L, H_kv, S, D]`` is constrained to ``P('particles', None, 'model')``, the
  next-token logits ``[N, V]`` to ``P('particles', 'model')`` (vocabulary-sharded log-softmax),
  every other particle leaf to ``P('particles')``;
- the ``[N]`` log weights and the error flags are replicated, so the log-sum-exp, the ESS, the
  resampling decision and the ancestors are the same operations on the same numbers as unsharded
  (:mod:`kernels.smc.sharding`).

Sharding changes where numbers live, not which numbers: the random bits do not depend on the
layout (``jax_threefry_partitionable``), and only the reductions split over ``'model'`` (a
projection's sum over its input features, the softmax over the vocabulary) are reassociated,
so a sharded run equals the unsharded one to float rounding (tested on 1x8, 2x4, 4x2 and 8x1
meshes of forced CPU devices in ``tests/lm_inference/test_lm_sharding.py``).

A 1-d ``('particles',)`` mesh (:func:`kernels.smc.sharding.particle_mesh`) is accepted too: the
weights are then replicated.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from kernels.smc.sharding import AXIS as PARTICLES
from kernels.smc.sharding import check_divisible
from kernels.types import ArrayTree

__all__ = [
    "PARTICLES",
    "MODEL",
    "make_mesh",
    "axis_size",
    "check_mesh",
    "param_name",
    "param_shardings",
    "shard_params",
    "particle_constraint",
]

MODEL = "model"


def make_mesh(particles: int | None = None, model: int = 1, devices: Sequence | None = None) -> Mesh:
    """A ``('particles', 'model')`` mesh of ``particles x model`` devices (default: all local
    devices, ``particles = len(devices) / model``)."""
    devices = list(jax.local_devices() if devices is None else devices)
    model = int(model)
    if model < 1 or len(devices) % model:
        raise ValueError(
            f"make_mesh: model={model} must be a positive divisor of the {len(devices)} devices."
        )
    particles = len(devices) // model if particles is None else int(particles)
    if particles * model > len(devices) or particles < 1:
        raise ValueError(
            f"make_mesh: a {particles} x {model} mesh needs {particles * model} devices, "
            f"{len(devices)} given."
        )
    grid = np.asarray(devices[: particles * model], dtype=object).reshape(particles, model)
    return Mesh(grid, (PARTICLES, MODEL))


def axis_size(mesh: Mesh | None, name: str) -> int:
    """The size of axis ``name`` of ``mesh`` (1 when the mesh is ``None`` or lacks it)."""
    if mesh is None or name not in mesh.axis_names:
        return 1
    return int(mesh.shape[name])


def _check_axes(mesh: Mesh) -> None:
    if not isinstance(mesh, Mesh) or not set(mesh.axis_names) <= {PARTICLES, MODEL}:
        raise TypeError(
            "mesh must be a jax.sharding.Mesh with axes ('particles', 'model') or ('particles',) "
            f"(lm_inference.sharding.make_mesh(particles, model)); got {mesh!r}."
        )


def check_mesh(dims, mesh: Mesh, num_particles: int | None = None) -> None:
    """Raise a ``ValueError`` naming the fix unless ``'model'`` divides the heads and the KV heads
    of ``dims`` (:class:`lm_inference.models.Dims`; ``None``, a model without heads: not checked)
    and ``'particles'`` divides ``num_particles``."""
    _check_axes(mesh)
    m = axis_size(mesh, MODEL)
    if dims is not None and (dims.num_kv_heads % m or dims.num_heads % m):
        g = math.gcd(dims.num_heads, dims.num_kv_heads)
        ok = [str(d) for d in range(1, g + 1) if g % d == 0]
        sizes = ok[0] if len(ok) == 1 else ", ".join(ok[:-1]) + " or " + ok[-1]
        raise ValueError(
            f"the mesh's 'model' axis has {m} devices, which does not divide the model's "
            f"{dims.num_heads} attention heads and {dims.num_kv_heads} KV heads; use a 'model' "
            f"axis of size {sizes} and put the other devices on 'particles'."
        )
    if num_particles is not None:
        check_divisible(num_particles, mesh)


def param_name(path) -> str:
    """The dotted Hugging Face name of a parameter's tree path."""
    return ".".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def param_shardings(params: ArrayTree, rules, mesh: Mesh) -> ArrayTree:
    """A ``NamedSharding`` per parameter (same tree as ``params``): the first rule whose regex
    matches the dotted name gives the mesh axis of each dimension; a dimension the ``'model'``
    axis does not divide (e.g. GPT-2's vocabulary of 50257), and any unmatched parameter, is
    replicated."""
    _check_axes(mesh)
    m = axis_size(mesh, MODEL)
    compiled = [(re.compile(r), axes) for r, axes in rules]

    def one(path, x):
        spec = ()
        if m > 1:
            name = param_name(path)
            for rx, axes in compiled:
                if rx.search(name):
                    if len(axes) != len(x.shape):
                        raise ValueError(
                            f"sharding rule {rx.pattern!r} gives {len(axes)} axes for {name} "
                            f"of shape {tuple(x.shape)}."
                        )
                    spec = tuple(
                        a if a is None or x.shape[i] % m == 0 else None
                        for i, a in enumerate(axes)
                    )
                    break
        return NamedSharding(mesh, PartitionSpec(*spec))

    return jax.tree_util.tree_map_with_path(one, params)


def shard_params(params: ArrayTree, rules, mesh: Mesh) -> ArrayTree:
    """``params`` placed on ``mesh`` by :func:`param_shardings`."""
    return jax.device_put(params, param_shardings(params, rules, mesh))


def _spec(x, model: bool, kv: bool, vocab: int | None) -> PartitionSpec:
    nd = np.ndim(x)
    if nd == 0:
        return PartitionSpec()
    if kv and nd == 5 and model:  # [N, L, H_kv, S, D]
        return PartitionSpec(PARTICLES, None, MODEL, None, None)
    if vocab and nd == 2 and model and x.shape[1] == vocab:  # next-token logits [N, V]
        return PartitionSpec(PARTICLES, MODEL)
    return PartitionSpec(PARTICLES, *([None] * (nd - 1)))


def particle_constraint(mesh: Mesh | None, vocab_size: int | None = None) -> Callable:
    """``(tree, replicated=()) -> tree`` inside ``jit``: every leaf split along its particle axis
    (the module docstring's layout), except the top-level fields named in ``replicated`` (a
    NamedTuple's, e.g. the log weights), which are replicated. Identity when ``mesh`` is None."""
    if mesh is None:
        return lambda tree, replicated=(): tree
    _check_axes(mesh)
    m = axis_size(mesh, MODEL) > 1
    vocab = vocab_size if vocab_size is not None and m and vocab_size % axis_size(mesh, MODEL) == 0 else None
    rep = NamedSharding(mesh, PartitionSpec())

    def leaf(path, x):
        keys = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
        kv = "k" in keys or "v" in keys
        if "prefix" in keys:  # the shared prompt: one copy, on every particle shard
            spec = PartitionSpec(None, None, MODEL) if kv and m and np.ndim(x) == 5 else PartitionSpec()
        else:
            spec = _spec(x, m, kv, vocab)
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    def constrain(tree, replicated=()):
        if not replicated:
            return jax.tree_util.tree_map_with_path(leaf, tree)
        fields = {
            f: (
                jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, rep), v)
                if f in replicated
                else jax.tree_util.tree_map_with_path(leaf, v)
            )
            for f, v in tree._asdict().items()
        }
        return type(tree)(**fields)

    return constrain


def resolve(lm, mesh: Mesh | None, num_particles: int | None = None):
    """``(mesh, params)`` for a run of ``lm``: ``mesh`` defaults to ``lm.mesh``; the parameters
    are ``lm.params`` when they already live on that mesh, else placed on it by the
    architecture's rules (replicated for a model without rules). Checks the mesh (:func:`check_mesh`)."""
    own = getattr(lm, "mesh", None)
    mesh = own if mesh is None else mesh
    if mesh is None:
        return None, lm.params
    check_mesh(getattr(lm, "dims", None), mesh, num_particles)
    if mesh is own:
        return mesh, lm.params
    store = lm.__dict__.setdefault("_params_on_mesh", {})
    if mesh not in store:
        if hasattr(lm, "shard"):  # a CausalLM: by its architecture's rules
            store[mesh] = lm.shard(mesh).params
        else:
            store[mesh] = jax.device_put(lm.params, NamedSharding(mesh, PartitionSpec()))
    return mesh, store[mesh]
