"""Tests of case_jax.sinkhorn against independent computations."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st
from jax.sharding import Mesh, PartitionSpec as P

from case_jax import sinkhorn
from tests.sinkhorn_reference import released_ot_numpy, sinkhorn_scaling_f64

ITERATIVE = ("auto", "scaling", "log")


def cosine_log_p(rng, n, k, temp=10.0):
  """CASE-like input: log_softmax(temp * cos) of unit vectors vs prototypes."""
  x = rng.normal(size=(n, 32))
  w = rng.normal(size=(k, 32))
  cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (
      w / np.linalg.norm(w, axis=1, keepdims=True)).T
  logits = temp * cos
  return (logits - np.log(np.exp(logits).sum(1, keepdims=True))).astype(np.float32)


def row_normalised(q, alpha):
  return np.asarray(q, np.float64) / np.asarray(alpha, np.float64)[:, None]


# ---------------------------------------------------------------------------
# Agreement with independent solvers.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ITERATIVE)
def test_fixed_iterations_match_float64_numpy(mode):
  rng = np.random.default_rng(0)
  n, k = 300, 16
  log_p = cosine_log_p(rng, n, k)
  alpha = rng.uniform(0.5, 2.0, n).astype(np.float32)
  beta = rng.uniform(0.5, 2.0, k).astype(np.float32)
  q, info = sinkhorn.solve(log_p, alpha, beta, eps=2.0, num_iters=50, mode=mode)
  ref = sinkhorn_scaling_f64(log_p, alpha, beta, eps=2.0, iters=50)
  np.testing.assert_allclose(row_normalised(q, alpha), row_normalised(ref, alpha),
                             atol=1e-5)
  assert int(info.num_iters) == 50
  assert not bool(info.converged)


@pytest.mark.parametrize("mode", ITERATIVE)
def test_converged_matches_pot_sinkhorn_log(mode):
  ot = pytest.importorskip("ot")
  rng = np.random.default_rng(1)
  n, k, eps = 200, 8, 5.0
  log_p = cosine_log_p(rng, n, k)
  alpha = rng.uniform(0.2, 3.0, n)
  beta = rng.uniform(0.2, 3.0, k)
  a = alpha / alpha.sum()
  b = beta / beta.sum()
  plan = ot.bregman.sinkhorn_log(a, b, -log_p.astype(np.float64), 1.0 / eps,
                                 numItermax=100000, stopThr=1e-13)
  ref = plan * alpha.sum()
  q, info = sinkhorn.solve(log_p, alpha.astype(np.float32),
                           beta.astype(np.float32), eps=eps, tol=1e-6,
                           max_iters=5000, mode=mode)
  assert bool(info.converged)
  np.testing.assert_allclose(row_normalised(q, alpha), row_normalised(ref, alpha),
                             atol=1e-5)


def test_kl_prior_closed_form_matches_direct_convex_solve():
  """Eq. 30 (the solver) vs. a direct solve of the constrained problem Eq. 26."""
  scipy_opt = pytest.importorskip("scipy.optimize")
  rng = np.random.default_rng(2)
  n, k, eps = 4, 3, 1.5
  p = rng.dirichlet(np.ones(k), size=n)
  q_hat = rng.uniform(0.1, 1.0, size=(n, k))
  alpha = rng.uniform(0.5, 1.5, n)
  beta = rng.uniform(0.5, 1.5, k)
  beta = beta * alpha.sum() / beta.sum()

  def objective(x):
    q = x.reshape(n, k)
    val = np.sum(-q * np.log(p)) + np.sum(q * np.log(q / q_hat)) / eps
    grad = -np.log(p) + (np.log(q / q_hat) + 1.0) / eps
    return val, grad.ravel()

  # Row sums, and all but one column sum (the last is implied by the totals;
  # a linearly dependent constraint set makes SLSQP fail).
  a_mat = np.concatenate([np.kron(np.eye(n), np.ones((1, k))),
                          np.kron(np.ones((1, n)), np.eye(k))[:-1]])
  target = np.concatenate([alpha, beta[:-1]])
  cons = [{"type": "eq", "fun": lambda x: a_mat @ x - target,
           "jac": lambda x: a_mat}]
  x0 = np.outer(alpha, beta).ravel() / alpha.sum()
  res = scipy_opt.minimize(objective, x0, jac=True, method="SLSQP",
                           bounds=[(1e-12, None)] * (n * k), constraints=cons,
                           options={"ftol": 1e-15, "maxiter": 2000})
  assert res.success, res.message
  direct = res.x.reshape(n, k)
  for mode in ITERATIVE:
    q, info = sinkhorn.solve(np.log(p).astype(np.float32), alpha.astype(np.float32),
                             beta.astype(np.float32), eps=eps,
                             log_prior=np.log(q_hat).astype(np.float32),
                             tol=1e-7, max_iters=5000, mode=mode)
    np.testing.assert_allclose(np.asarray(q), direct, atol=2e-5)
  # And the prior matters: without it the answer is different.
  q_flat, _ = sinkhorn.solve(np.log(p).astype(np.float32), alpha.astype(np.float32),
                             beta.astype(np.float32), eps=eps, tol=1e-7)
  assert np.abs(np.asarray(q_flat) - direct).max() > 1e-3


def test_released_mode_matches_numpy_transcription():
  rng = np.random.default_rng(3)
  n, k = 500, 16
  cos = rng.uniform(-1, 1, size=(n, k))
  logits = 10.0 * cos                              # released: 10 * cos
  prior = rng.uniform(0.9, 1.1, size=(n, k))
  prior /= prior.sum()
  ref = released_ot_numpy(logits, prior=prior, eps=20.0, temp=10.0)
  # Released kernel exp(logits / temp * eps): log_p = logits / temp, eps = 20.
  q, info = sinkhorn.solve((logits / 10.0).astype(np.float32), eps=20.0,
                           log_prior=np.log(prior).astype(np.float32),
                           mode="released")
  np.testing.assert_allclose(np.asarray(q), ref, atol=1e-6)
  np.testing.assert_allclose(np.asarray(q).sum(1), 1.0, atol=1e-6)
  assert int(info.num_iters) == 3


def test_released_mode_with_beta_matches_numpy_transcription():
  """Cluster classification: 16 clusters x {fg, bg} with beta^R = batch fractions."""
  rng = np.random.default_rng(4)
  logits = 10.0 * rng.uniform(-1, 1, size=(16, 2))
  beta = np.array([0.3, 0.7])
  ref = released_ot_numpy(logits, beta=beta, eps=20.0, temp=10.0)
  q, _ = sinkhorn.solve((logits / 10.0).astype(np.float32), beta=beta.astype(np.float32),
                        eps=20.0, mode="released")
  np.testing.assert_allclose(np.asarray(q), ref, atol=1e-6)


# ---------------------------------------------------------------------------
# Properties.
# ---------------------------------------------------------------------------
@settings(max_examples=14, deadline=None)   # each shape compiles: suite time
@given(n=st.integers(1, 48), k=st.integers(2, 20), seed=st.integers(0, 2**31 - 1),
       eps=st.floats(0.5, 5.0), span=st.floats(0.0, 2.0),
       mode=st.sampled_from(ITERATIVE))
# A nearly-permutation kernel (off-diagonal odds 3e-12): Sinkhorn contracts
# so slowly that f32 stalls at a relative error of 2e-6 > tol; the
# marginals still hold to 1e-5 and ``converged`` must say False.
@example(n=2, k=2, seed=0, eps=3.0, span=0.0, mode="auto")
def test_marginals_hold_at_convergence(n, k, seed, eps, span, mode):
  rng = np.random.default_rng(seed)
  log_p = cosine_log_p(rng, n, k)
  alpha = 10.0 ** rng.uniform(-span, span, n)
  beta = 10.0 ** rng.uniform(-span, span, k)
  q, info = sinkhorn.solve(log_p, alpha.astype(np.float32), beta.astype(np.float32),
                           eps=eps, tol=1e-6, max_iters=20000, mode=mode)
  q = np.asarray(q, np.float64)
  b = beta * alpha.sum() / beta.sum()
  assert np.all(np.isfinite(q)) and np.all(q >= 0)
  # Independent float64 check of the marginals (relative L1), not info's.
  row_err = np.abs(q.sum(1) - alpha).sum() / alpha.sum()
  col_err = np.abs(q.sum(0) - b).sum() / b.sum()
  assert row_err <= 1e-5 and col_err <= 1e-5
  # ``info`` is honest: its errors are the returned Q's, and a solve that
  # did not meet tol says so and used every iteration.
  np.testing.assert_allclose([float(info.row_error), float(info.col_error)],
                             [row_err, col_err], atol=5e-7)
  if max(float(info.row_error), float(info.col_error)) <= 1e-6:
    assert bool(info.converged)
  if not bool(info.converged):
    assert int(info.num_iters) == 20000


@pytest.mark.parametrize("mode", ITERATIVE + ("released",))
def test_per_row_constant_changes_nothing(mode):
  rng = np.random.default_rng(5)
  log_p = cosine_log_p(rng, 120, 8)
  shift = rng.uniform(-50, 50, size=(120, 1)).astype(np.float32)
  q1, _ = sinkhorn.solve(log_p, eps=2.0, num_iters=30, mode=mode)
  q2, _ = sinkhorn.solve(log_p + shift, eps=2.0, num_iters=30, mode=mode)
  np.testing.assert_allclose(np.asarray(q1), np.asarray(q2), atol=1e-5)


@pytest.mark.parametrize("mode", ITERATIVE + ("released",))
def test_permuting_rows_permutes_q(mode):
  rng = np.random.default_rng(6)
  log_p = cosine_log_p(rng, 130, 8)
  alpha = rng.uniform(0.5, 2, 130).astype(np.float32)
  perm = rng.permutation(130)
  q1, _ = sinkhorn.solve(log_p, alpha, eps=2.0, tol=1e-6, mode=mode)
  q2, _ = sinkhorn.solve(log_p[perm], alpha[perm], eps=2.0, tol=1e-6, mode=mode)
  np.testing.assert_allclose(np.asarray(q1)[perm], np.asarray(q2), atol=1e-5)


def test_default_marginals_are_the_papers():
  """alpha = 1 (Eq. 4), beta = N/K equipartition (Eq. 5)."""
  rng = np.random.default_rng(7)
  q, _ = sinkhorn.solve(cosine_log_p(rng, 64, 4), eps=2.0, tol=1e-6)
  np.testing.assert_allclose(np.asarray(q).sum(1), 1.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(q).sum(0), 16.0, rtol=1e-5)


def test_beta_is_rescaled_to_alphas_total():
  """Eq. 12's beta^R are proportions while alpha^R = 1: only the ratio matters."""
  rng = np.random.default_rng(8)
  log_p = cosine_log_p(rng, 16, 2)
  q1, _ = sinkhorn.solve(log_p, beta=np.array([0.25, 0.75], np.float32), tol=1e-6)
  q2, _ = sinkhorn.solve(log_p, beta=np.array([4.0, 12.0], np.float32), tol=1e-6)
  np.testing.assert_allclose(np.asarray(q1), np.asarray(q2), atol=1e-6)
  np.testing.assert_allclose(np.asarray(q1).sum(0), [4.0, 12.0], rtol=1e-5)


# ---------------------------------------------------------------------------
# Extreme inputs.
# ---------------------------------------------------------------------------
def _extreme_cases():
  rng = np.random.default_rng(9)
  deep = rng.uniform(-1e4, 0, size=(200, 16)).astype(np.float32)
  yield "log-probs down to -1e4", deep, None, None
  yield "all-equal rows", np.zeros((50, 7), np.float32), None, None
  yield "N=1", rng.normal(size=(1, 5)).astype(np.float32), None, None
  yield "K=2", cosine_log_p(rng, 40, 2), None, None
  yield "N=1, K=2", np.array([[-3.0, -1e4]], np.float32), None, None
  n, k = 60, 6
  yield ("marginals 1e-6..1e6", cosine_log_p(rng, n, k),
         (10.0 ** rng.uniform(-6, 6, n)).astype(np.float32),
         (10.0 ** rng.uniform(-6, 6, k)).astype(np.float32))
  yield ("-1e4 and extreme marginals", deep[:60, :6],
         (10.0 ** rng.uniform(-6, 6, 60)).astype(np.float32),
         (10.0 ** rng.uniform(-6, 6, 6)).astype(np.float32))


@pytest.mark.parametrize("mode", ITERATIVE + ("released",))
@pytest.mark.parametrize("fixed", [True, False])
def test_extreme_inputs_give_finite_nonnegative_q(mode, fixed):
  for name, log_p, alpha, beta in _extreme_cases():
    kwargs = dict(num_iters=50) if fixed else dict(tol=1e-5, max_iters=300)
    q, info = sinkhorn.solve(log_p, alpha, beta, eps=20.0, mode=mode, **kwargs)
    q = np.asarray(q)
    assert np.all(np.isfinite(q)), (name, mode)
    assert np.all(q >= 0), (name, mode)
    assert np.isfinite(float(info.row_error)) and np.isfinite(float(info.col_error))
    a = np.ones(len(log_p)) if alpha is None else alpha.astype(np.float64)
    # Rows are exact after the last row update, whatever happened to columns.
    np.testing.assert_allclose(q.sum(1), a, rtol=1e-4, err_msg=name)


def test_auto_falls_back_where_scaling_breaks_and_matches_log():
  rng = np.random.default_rng(10)
  # Column 0 is exp(-2e5) times the others in every row: it underflows to an
  # all-zero column of the scaling kernel, while the log domain is unaffected.
  log_p = cosine_log_p(rng, 200, 16)
  log_p[:, 0] -= 1e4
  q_auto, info = sinkhorn.solve(log_p, eps=20.0, num_iters=50, mode="auto")
  q_log, _ = sinkhorn.solve(log_p, eps=20.0, num_iters=50, mode="log")
  assert bool(info.fell_back)
  np.testing.assert_allclose(np.asarray(q_auto), np.asarray(q_log), atol=1e-6)
  assert abs(float(np.asarray(q_log)[:, 0].sum()) - 200 / 16) < 1.0  # column 0 is served
  # The raw scaling path stays finite there, flagged nowhere, but is not trusted.
  q_scaling, _ = sinkhorn.solve(log_p, eps=20.0, num_iters=50, mode="scaling")
  assert np.all(np.isfinite(np.asarray(q_scaling)))
  # A benign problem does not fall back.
  _, info = sinkhorn.solve(cosine_log_p(rng, 200, 16), eps=20.0, num_iters=50)
  assert not bool(info.fell_back)


def test_scaling_absorbs_large_scalings_and_matches_log():
  """eps = 20 on 10*cos logits needs scalings far beyond exp(30): absorption."""
  rng = np.random.default_rng(11)
  log_p = cosine_log_p(rng, 2000, 16)
  alpha = (10.0 ** rng.uniform(-3, 3, 2000)).astype(np.float32)
  q_s, info_s = sinkhorn.solve(log_p, alpha, eps=20.0, num_iters=200, mode="scaling")
  q_l, _ = sinkhorn.solve(log_p, alpha, eps=20.0, num_iters=200, mode="log")
  assert np.all(np.isfinite(np.asarray(q_s)))
  np.testing.assert_allclose(row_normalised(q_s, alpha), row_normalised(q_l, alpha),
                             atol=1e-5)


# ---------------------------------------------------------------------------
# Batching, distribution, gradients, errors.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ITERATIVE + ("released",))
def test_vmap_equals_separate_solves(mode):
  rng = np.random.default_rng(12)
  log_p = np.stack([cosine_log_p(rng, 100, 8) for _ in range(3)])
  log_p[1] = rng.uniform(-1e4, 0, size=(100, 8))  # one problem needs the fallback
  solve = functools.partial(sinkhorn.solve, eps=20.0, num_iters=40, mode=mode)
  q_batch, info = jax.vmap(solve)(log_p)
  for i in range(3):
    q_i, _ = solve(log_p[i])
    np.testing.assert_allclose(np.asarray(q_batch[i]), np.asarray(q_i), atol=1e-6)
  assert info.num_iters.shape == (3,)


def _split_solve(log_p, mode, wrap, **kw):
  devices = jax.devices()[:4]
  n = log_p.shape[0]
  blocks = log_p.reshape(4, n // 4, -1)

  def per_device(block):
    return sinkhorn.solve(block, eps=2.0, mode=mode, axis_name="rows", **kw)

  if wrap == "pmap":
    q, info = jax.pmap(per_device, axis_name="rows", devices=devices)(blocks)
    return np.asarray(q).reshape(n, -1), jax.tree.map(lambda x: np.asarray(x)[0], info)
  mesh = Mesh(np.array(devices), ("rows",))
  fn = jax.jit(jax.shard_map(lambda x: per_device(x), mesh=mesh,
                             in_specs=P("rows"), out_specs=(P("rows"), P())))
  q, info = fn(log_p)
  return np.asarray(q), jax.tree.map(np.asarray, info)


@pytest.mark.parametrize("wrap", ["pmap", "shard_map"])
@pytest.mark.parametrize("mode", ITERATIVE + ("released",))
def test_rows_split_over_four_devices_equal_one_device(mode, wrap):
  if len(jax.devices()) < 4:
    pytest.skip("needs 4 (simulated) devices; see tests/conftest.py")
  rng = np.random.default_rng(13)
  log_p = cosine_log_p(rng, 4 * 250, 16)
  kw = dict(tol=1e-6) if mode != "released" else {}
  q_one, info_one = sinkhorn.solve(log_p, eps=2.0, mode=mode, **kw)
  q_split, info_split = _split_solve(log_p, mode, wrap, **kw)
  jax.block_until_ready(q_split)  # sync every call: see jax_stack_notes.md
  np.testing.assert_allclose(q_split, np.asarray(q_one), atol=1e-5)
  assert int(info_split.num_iters) == int(info_one.num_iters)
  if mode != "released":  # (3 released passes enforce columns only roughly)
    # Column sums hold over the global batch, not per device.
    np.testing.assert_allclose(q_split.sum(0), 1000 / 16, rtol=1e-4)


def test_no_gradient_flows_through_the_solver():
  rng = np.random.default_rng(14)
  log_p = jnp.asarray(cosine_log_p(rng, 30, 4))

  def loss(x):
    q, _ = sinkhorn.solve(x, eps=2.0, num_iters=10)
    return jnp.sum(q * x)

  grad = jax.grad(loss)(log_p)
  q, _ = sinkhorn.solve(log_p, eps=2.0, num_iters=10)
  # d/dx sum(stop_gradient(q) * x) = q exactly.
  np.testing.assert_allclose(np.asarray(grad), np.asarray(q), atol=1e-7)


@pytest.mark.parametrize("kwargs, match", [
    (dict(log_p=np.zeros((3, 4, 5), np.float32)), "must be \\(N, K\\)"),
    (dict(log_p=np.zeros((3, 4), np.float32), alpha=np.ones(4, np.float32)), "alpha"),
    (dict(log_p=np.zeros((3, 4), np.float32), beta=np.ones(3, np.float32)), "beta"),
    (dict(log_p=np.zeros((3, 4), np.float32),
          log_prior=np.zeros((4, 3), np.float32)), "log_prior"),
    (dict(log_p=np.zeros((3, 4), np.float32), mode="fast"), "unknown mode"),
])
def test_bad_input_raises_clear_error(kwargs, match):
  with pytest.raises(ValueError, match=match):
    sinkhorn.solve(**kwargs)


# ---------------------------------------------------------------------------
# Degenerate inputs (zero masses, a flat kernel, a single cluster).
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, bad", [
    ("alpha", np.array([1.0, 0.0, 2.0], np.float32)),
    ("alpha", np.array([1.0, -1.0, 2.0], np.float32)),
    ("beta", np.array([0.5, 0.0, 0.25, 0.25], np.float32)),
    ("beta", np.array([0.5, np.nan, 0.25, 0.25], np.float32)),
])
def test_zero_or_negative_marginal_entries_are_rejected(name, bad):
  """A row or column without mass is refused before solving (its
  log-marginal would be -inf, which the scaling iterations turn into 0/0)."""
  with pytest.raises(ValueError, match=f"{name} must be finite and positive"):
    sinkhorn.solve(np.zeros((3, 4), np.float32), **{name: bad})


@pytest.mark.parametrize("mode", sinkhorn.MODES)
def test_flat_kernel_gives_the_independent_plan(mode):
  """All costs equal: Q = alpha beta^T / sum(beta), beta rescaled to alpha's total."""
  rng = np.random.default_rng(21)
  n, k = 40, 5
  alpha = rng.uniform(0.5, 2.0, n).astype(np.float32)
  beta = rng.uniform(0.5, 2.0, k).astype(np.float32)
  q, info = sinkhorn.solve(np.full((n, k), -0.7, np.float32), alpha, beta,
                           eps=20.0, mode=mode)
  want = alpha[:, None].astype(np.float64) * beta / beta.sum()
  np.testing.assert_allclose(np.asarray(q), want, rtol=1e-5)
  assert np.isfinite(np.asarray(q)).all() and float(info.col_error) < 1e-5


@pytest.mark.parametrize("mode", sinkhorn.MODES)
def test_single_cluster_takes_every_row_mass(mode):
  rng = np.random.default_rng(22)
  alpha = rng.uniform(0.5, 2.0, 30).astype(np.float32)
  log_p = rng.normal(size=(30, 1)).astype(np.float32)
  q, info = sinkhorn.solve(log_p, alpha, eps=20.0, mode=mode)
  np.testing.assert_allclose(np.asarray(q)[:, 0], alpha, rtol=1e-6)
  assert float(info.row_error) < 1e-6 and float(info.col_error) < 1e-6


# ---------------------------------------------------------------------------
# The Solver object.
# ---------------------------------------------------------------------------
def test_solver_from_config_and_call_equal_solve():
  from case_jax import defaults
  lc = defaults.base_config().labeling
  released = sinkhorn.Solver.from_config(lc)
  assert (released.mode, released.eps, released.num_iters) == (
      "released", lc.eps, lc.sinkhorn_iters)
  lc.sinkhorn_mode = "auto"
  auto = sinkhorn.Solver.from_config(lc)
  assert (auto.num_iters, auto.tol, auto.max_iters) == (
      None, lc.sinkhorn_tol, lc.sinkhorn_max_iters)
  hash(auto)   # frozen: usable as a static argument
  log_p = cosine_log_p(np.random.default_rng(23), 50, 4)
  for solver in (released, auto):
    want, _ = sinkhorn.solve(log_p, eps=solver.eps, num_iters=solver.num_iters,
                             tol=solver.tol, max_iters=solver.max_iters,
                             mode=solver.mode)
    np.testing.assert_array_equal(np.asarray(solver(log_p)[0]), np.asarray(want))
  with pytest.raises(ValueError, match="unknown mode"):
    sinkhorn.Solver(mode="fast")
