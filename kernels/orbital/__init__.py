r"""Orbital MCMC (Neklyudov and Welling, "Orbital MCMC", arXiv 2010.08047).

A deterministic bijection $T$ with log-Jacobian $\log|\det J_T|$ generates orbits. On the
extended space $(z, k)$, $k \in \{0, \dots, P-1\}$, with target $\tilde\pi(z, k) = \pi(z) / P$,
the map $\tilde T(z, k) = (T z, k+1)$ for $k < P-1$ and $\tilde T(z, P-1) = (T^{-(P-1)} z, 0)$ is
periodic with period $P$. The orbit of $(z, k)$ is the window

$$ O(z, k) = \{(T^{j-k} z,\ j) : j = 0, \dots, P-1\}, $$

and $\tilde\pi$ restricted to the orbit has the weights

$$ w_j \propto \pi(T^{j-k} z)\,|\det J_{T^{j-k}}(z)| \qquad \text{(paper, Sec. 3)}. $$

Any kernel on the $P$ orbit points that keeps $w$ invariant keeps $\tilde\pi$ invariant, for any
$T$ (periodic or not). Two are offered:

* independent sampling $j^* \sim w$ (``rotation=None``, the paper's choice);
* the *weight rotation* $r \in (0, 1)$: lay the weights on a circle of circumference 1 in slot
  order (slot $j$ owns the arc $[W_j, W_{j+1})$, $W_j = \sum_{i<j} w_i$), draw $u$ uniformly on
  the current slot's arc and move to the slot that owns $u + r \bmod 1$. A rotation preserves
  the uniform measure on the circle, so $w$ is invariant; the transition probabilities are
  $Q_{kj} = |(\mathrm{arc}_k + r) \cap \mathrm{arc}_j| / w_k$. With equal weights and $r = 1/2$
  the chain always moves $P/2$ points away along the trajectory (a fixed integration time, as
  HMC, instead of the triangular spread of $|j^* - k|$ under independent sampling).

The choice is followed by a map that keeps $\tilde\pi$ invariant and moves between orbits:

* a deterministic index shift $k \leftarrow (j^* - c) \bmod P$ (a permutation of $k$, so
  invariant; it makes the chain irreversible), or
* a uniformly random window offset $k \sim U\{0..P-1\}$ drawn fresh every step, which is
  multinomial HMC over the whole trajectory and is invariant for every length $P$
  (BlackJAX's ``mhmc`` always puts the current point first, which is biased for $P > 1$).

For HMC, $z = (q, p)$, $T$ is one leapfrog step (volume preserving), $\pi(z) \propto
\exp(\log p(q) - K(p))$, and the momentum is partially refreshed between iterations,
$p \leftarrow \alpha p + \sqrt{1-\alpha^2}\,\xi$, $\xi \sim N(0, M)$.

All weights are computed in log space and normalized with ``logsumexp``: a log density offset
by $-10^4$ in float32 works (BlackJAX's ``orbital_hmc`` exponentiates unnormalized weights and
returns NaN there).

The window is grown by one ``lax.while_loop`` that extends either its backward or its forward
end, one map application per iteration, so a window of $n$ points costs exactly $n - 1$
applications (gradient evaluations for HMC). Its length can be a traced value $n \le P$
(``num_points``: a trajectory length fixed in time while the step size adapts); the unused
slots get weight 0.

``info.acceptance_rate`` is the mean over the other orbit points of $\min(1, w_j / w_k)$ (the
Metropolis acceptance of moving from the current point to each orbit point, averaged like NUTS's
mean acceptance over its trajectory): it is 1 for exact energy conservation and falls as the
integration error grows, so it is the statistic to feed to dual averaging (target about 0.8).

Modules: :mod:`~kernels.orbital.base` (states, info, ``init``), :mod:`~kernels.orbital.window`
(growing orbit windows), :mod:`~kernels.orbital.transition` (the move on one orbit),
:mod:`~kernels.orbital.hmc` (the HMC kernels and BlackJAX's top-level API),
:mod:`~kernels.orbital.periodic` (any bijection; Rao-Blackwellized averages).
"""

from kernels.orbital.base import DIVERGENCE_THRESHOLD, OrbitalInfo, OrbitalState, init
from kernels.orbital.hmc import (
    build_contracting_kernel,
    build_kernel,
    build_multinomial_kernel,
    build_orbital_kernel,
    contracting_orbital_hmc,
    multinomial_hmc,
    orbital_hmc,
)
from kernels.orbital.periodic import PeriodicState, periodic_orbital, rao_blackwell
from kernels.orbital.transition import choose, orbit_info, orbital_step
from kernels.orbital.window import contracting_window, orbit_window

__all__ = [
    "DIVERGENCE_THRESHOLD",
    "OrbitalState",
    "OrbitalInfo",
    "PeriodicState",
    "orbit_window",
    "contracting_window",
    "choose",
    "orbit_info",
    "orbital_step",
    "init",
    "build_kernel",
    "build_contracting_kernel",
    "orbital_hmc",
    "multinomial_hmc",
    "build_multinomial_kernel",
    "build_orbital_kernel",
    "contracting_orbital_hmc",
    "periodic_orbital",
    "rao_blackwell",
]
