/**
 * The loss family of docs/algorithms.md, side by side, as engine graph builders. Each takes
 * sequence log-probs (summed over completion tokens, [N] tensors) and returns the per-example
 * loss [N]; the caller averages over the batch. Keeping them as small pure functions over
 * log-probs (the way TRL's DPOTrainer lays its losses out) means one gradient check and one
 * check-value test each, and the round recipes (which policy samples, which log-probs are
 * needed) stay in the algorithm modules.
 */
import { T, type Tensor } from '../engine/index.js';

const sq = (x: Tensor) => T.mul(x, x);

/** SPPO: (ℓ − η(P̂ − ½))² with ℓ = logp_θ − logp_t. winner_loser and all differ only in which y enter. */
export function sppoLoss(logpTheta: Tensor, logpT: Tensor, winRate: Tensor, eta: number): Tensor {
  const ell = T.sub(logpTheta, logpT);
  return sq(T.sub(ell, T.mul(T.sub(winRate, 0.5), eta)));
}

export interface PairLogps {
  /** logp_θ of the winner and the loser, [N] each. */
  thetaW: Tensor;
  thetaL: Tensor;
  refW: Tensor;
  refL: Tensor;
}

/** Δ = [logp_θ(y_w) − logp_ref(y_w)] − [logp_θ(y_l) − logp_ref(y_l)]. */
export function logRatioGap(p: PairLogps): Tensor {
  return T.sub(T.sub(p.thetaW, p.refW), T.sub(p.thetaL, p.refL));
}

/** INPO: (h − η/2)², h = Δθ − ητ·Δref − (1−ητ)·Δt over the (winner, loser) pair. */
export function inpoLoss(p: PairLogps & { tW: Tensor; tL: Tensor }, eta: number, tau: number): Tensor {
  const d = (a: Tensor, b: Tensor) => T.sub(a, b);
  const h = T.sub(
    T.sub(d(p.thetaW, p.thetaL), T.mul(d(p.refW, p.refL), eta * tau)),
    T.mul(d(p.tW, p.tL), 1 - eta * tau),
  );
  return sq(T.sub(h, eta / 2));
}

/**
 * INPO over every pair of a prompt's K completions with the Bernoulli label's expectation as the
 * target: Σ_j (h(y_i, y_j) − η(P(y_i ≻ y_j) − ½))² / (K−1) for each completion i. In expectation over
 * the label, (h(w, l) − η/2)² is this square plus a constant, so the minimizer is INPO's
 * mirror-descent step; every pair of the K samples counts instead of one, with no label noise.
 * `theta`, `ref`, `t` are [N] with a record's K completions in adjacent rows; `position` [N] is a
 * row's index within its record (row i's record starts at row i − position_i); `prefs` is [N, K],
 * row i holding P(y_i ≻ y_j) for the K completions of its record (½ on the diagonal).
 */
export function inpoAllPairsLoss(
  p: {
    theta: Tensor;
    ref: Tensor;
    t: Tensor;
    prefs: Tensor;
    position: Tensor;
    /**
     * For records drawn from an older policy (max_staleness ≥ 1): each row's log-prob under the
     * policy that drew it; the pairs are then importance-weighted toward π_t.
     */
    behaviour?: Tensor;
  },
  k: number,
  eta: number,
  tau: number,
): Tensor {
  const g = p.theta.graph;
  const h = T.sub(T.sub(p.theta, T.mul(p.ref, eta * tau)), T.mul(p.t, 1 - eta * tau));
  // Row i's partners sit at i − position_i + j, j = 0..K−1: a gather keeps the row count symbolic.
  const first = T.sub(T.arange(g, h.shape[0]!), T.cast(p.position, 'int64'));
  const partners = T.add(
    T.unsqueeze(first, [1]),
    g.constant(
      BigInt64Array.from({ length: k }, (_, j) => BigInt(j)),
      'int64',
      [1, k],
    ),
  );
  const gaps = T.sub(T.unsqueeze(h, [1]), T.gather(h, partners));
  const target = T.mul(T.sub(p.prefs, 0.5), eta);
  const squares = sq(T.sub(gaps, target));
  if (!p.behaviour) return T.mul(T.reduceSum(squares, -1), 1 / (k - 1));
  // Stale samples: the pair (y_i, y_j) is weighted by w_i·w_j, w = π_t(y)/π_b(y) normalised to
  // mean 1 over the record, so that the fit's opponent is π_t, not the policy that drew them (the
  // least-squares step then gives h_i − h̄ = η(Σ_j w̃_j P_ij − ½)). Log-ratios are clipped to ±3
  // (a weight of at most e³ ≈ 20 before normalising), the usual truncation against a few samples
  // carrying the whole estimate. Frozen inputs only: no gradient flows through the weights.
  const logRatio = T.sub(p.t, p.behaviour);
  const w = T.exp(T.maximum(T.minimum(logRatio, 3), -3));
  const partnerW = T.gather(w, partners); // [N, K]
  const mean = T.div(T.reduceSum(partnerW, -1, true), k); // [N, 1]: the record's mean weight
  const pairW = T.mul(T.div(T.unsqueeze(w, [1]), mean), T.div(partnerW, mean));
  return T.mul(T.reduceSum(T.mul(pairW, squares), -1), 1 / (k - 1));
}

/**
 * Nash-MD, policy-gradient form with a ½ baseline and a sampled KL term, per example:
 * β·Σ_tok sg(log π_θ − log π_ref)·log π_θ − (p − ½)·logp_θ(y). Token tensors are [N, T] with a
 * completion mask; `p` = P(y ≻ y') for y ~ π_θ against y' from the mixture.
 */
export function nashMdLoss(tokTheta: Tensor, tokRef: Tensor, mask: Tensor, p: Tensor, beta: number): Tensor {
  const theta = T.mul(tokTheta, mask);
  const kl = T.reduceSum(T.mul(T.stopGradient(T.sub(theta, T.mul(tokRef, mask))), theta), -1);
  return T.sub(T.mul(kl, beta), T.mul(T.sub(p, 0.5), T.reduceSum(theta, -1)));
}

/** IPO, hard labels: (Δ − 1/(2τ))². */
export function ipoLoss(gap: Tensor, tau: number): Tensor {
  return sq(T.sub(gap, 1 / (2 * tau)));
}

/** IPO, soft labels over an ordered pair: (Δ(y, y') − (P(y ≻ y') − ½)/τ)². */
export function ipoSoftLoss(gap: Tensor, pref: Tensor, tau: number): Tensor {
  return sq(T.sub(gap, T.div(T.sub(pref, 0.5), tau)));
}

/** DPO with label smoothing ε: (1−ε)·softplus(−βΔ) + ε·softplus(βΔ). */
export function dpoLoss(gap: Tensor, beta: number, labelSmoothing = 0): Tensor {
  const z = T.mul(gap, beta);
  const main = T.softplus(T.neg(z));
  return labelSmoothing === 0
    ? main
    : T.add(T.mul(main, 1 - labelSmoothing), T.mul(T.softplus(z), labelSmoothing));
}

/** SLiC (hinge): max(0, 1 − βΔ). */
export function slicLoss(gap: Tensor, beta: number): Tensor {
  return T.relu(T.sub(1, T.mul(gap, beta)));
}

/** DiscoPOP (log-ratio modulated): ρ = βΔ, w = σ(ρ/τ), (1−w)·softplus(−ρ) + w·e^(−ρ). */
export function discopopLoss(gap: Tensor, beta: number, tau: number): Tensor {
  const rho = T.mul(gap, beta);
  const w = T.sigmoid(T.div(rho, tau));
  return T.add(T.mul(T.sub(1, w), T.softplus(T.neg(rho))), T.mul(w, T.exp(T.neg(rho))));
}

/** SPO's preference term: softplus(−α·[logp_θ(y_w) − logp_θ(y_l)]) (no reference ratio). */
export function spoPreferenceLoss(thetaW: Tensor, thetaL: Tensor, alpha: number): Tensor {
  return T.softplus(T.neg(T.mul(T.sub(thetaW, thetaL), alpha)));
}

/** SPO's KL regulariser on the model's own samples (score-function form): λ·sg(logp_θ − logp_ref)·logp_θ. */
export function spoKlLoss(thetaSample: Tensor, refSample: Tensor, klCoef: number): Tensor {
  return T.mul(T.mul(T.stopGradient(T.sub(thetaSample, refSample)), thetaSample), klCoef);
}

/**
 * Judge training: binary cross-entropy of the pair's logit z against the label p = P(y_w ≻ y_l),
 * p·softplus(−z) + (1−p)·softplus(z). A pairwise judge's z is C(x, y_w, y_l) − C(x, y_l, y_w) (the
 * pair shown in both orders), a reward model's r(x, y_w) − r(x, y_l). With p = 1 (a winner and a
 * loser) it is softplus(−z); a soft p (annotators' shares, or the true preference where it is
 * known) carries what a drawn winner only samples.
 */
export function judgeLoss(z: Tensor, label: Tensor): Tensor {
  return T.add(T.mul(label, T.softplus(T.neg(z))), T.mul(T.sub(1, label), T.softplus(z)));
}

/** SFT: mean token cross-entropy over every completion token of the batch (a scalar). */
export function sftLoss(tokLogps: Tensor, mask: Tensor): Tensor {
  return T.neg(T.div(T.reduceSum(T.mul(tokLogps, mask)), T.reduceSum(mask)));
}
