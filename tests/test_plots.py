"""PNG plots (case_jax/plots.py) and --mode=plots (case_jax/visualize.py).

The content is checked without rendering (projections, the series taken
from metrics.jsonl, the three foreground scores a timeline draws); the
rendering only has to produce valid, non-trivial PNG files.
"""
import io
import json
import os
import struct
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest

from case_jax import datasets, defaults, plots, runs, train, visualize
from case_jax.data.synthetic import write_synthetic_thumos

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
  """(width, height) of a PNG file; asserts the signature and IHDR chunk."""
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == PNG_SIGNATURE, path
  assert head[12:16] == b"IHDR", path
  return struct.unpack(">II", head[16:24])


def assert_png(path, min_w=300, min_h=200):
  assert os.path.getsize(path) > 2000, path   # more than a blank canvas
  w, h = png_size(path)
  assert min_w <= w <= 4000 and min_h <= h <= 4000, (path, w, h)


def metric_rows(n=12):
  """metrics.jsonl-like rows: train steps every 5, evaluations every 20."""
  rng = np.random.default_rng(0)
  rows = []
  for i in range(1, n + 1):
    step = 5 * i
    rows.append({"step": step, "loss": 3.0 / i, "L_V": 1.0 / i, "L_A": 0.5,
                 "L_C": 1.2, "L_R": 0.3, "fb_acc": 0.5 + 0.02 * i,
                 "H_qc": 2.0 - 0.05 * i, "H_qr": 0.6 / i,
                 "mean_att": 0.4, "pa_max": 0.9, "pa_min": float(rng.uniform(0, 0.1)),
                 "qr_fg_max": 0.8, "qr_fg_mean": 0.5, "qr_fg_min": 0.2})
    if step % 20 == 0:
      rows.append({"step": step, "mAP": 0.01 * i, "test_fb_acc": 0.6,
                   **{f"mAP@{t:.2f}": 0.02 * i * (1 - t) for t in (0.1, 0.3, 0.5, 0.7)}})
  return rows


# =============================================================================
# Content: projections.
# =============================================================================
def test_pca_matches_numpy_svd_on_a_low_rank_set():
  rng = np.random.default_rng(1)
  # Rank 2 around an offset, variance 9 on one axis and 1 on the other.
  basis = np.linalg.qr(rng.normal(size=(10, 2)))[0].T        # (2, 10) orthonormal
  coef = rng.normal(size=(300, 2)) * np.array([3.0, 1.0])
  x = coef @ basis + rng.normal(size=10)
  pts, extra, var = visualize.pca_2d(x, x[:7])
  u, s, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
  # Same coordinates as U S up to each axis' sign.
  for j in range(2):
    sign = np.sign(pts[:, j] @ (u[:, j] * s[j]))
    np.testing.assert_allclose(pts[:, j], sign * u[:, j] * s[j], atol=1e-9)
  np.testing.assert_allclose(var, s[:2] ** 2 / np.sum(s ** 2), atol=1e-12)
  assert var.sum() == pytest.approx(1.0, abs=1e-9)         # rank 2: all of it
  assert var[0] > var[1] and np.var(pts[:, 0]) > np.var(pts[:, 1])
  np.testing.assert_allclose(extra, pts[:7], atol=1e-9)    # same map for extras
  # Distances within the rank-2 plane are preserved exactly.
  d_x = np.linalg.norm(x[:, None] - x[None], axis=-1)
  d_p = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
  np.testing.assert_allclose(d_p, d_x, atol=1e-8)


def test_pca_is_deterministic_in_sign():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(50, 6))
  a, _, _ = visualize.pca_2d(x)
  b, _, _ = visualize.pca_2d(x[::-1].copy())
  np.testing.assert_allclose(a, b[::-1], atol=1e-9)


def test_tsne_affinities_and_embedding_separate_two_blobs():
  rng = np.random.default_rng(3)
  x = np.concatenate([rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 8.0])
  labels = np.repeat([0, 1], 30)
  p = visualize.tsne_affinities(x, perplexity=10.0)
  np.testing.assert_allclose(p, p.T, atol=1e-15)
  assert p.sum() == pytest.approx(1.0) and np.all(np.diag(p) == 0)
  y = visualize.tsne_2d(x, perplexity=10.0, num_steps=300, seed=0)
  assert y.shape == (60, 2) and np.all(np.isfinite(y))
  d = np.linalg.norm(y[:, None] - y[None], axis=-1) + np.eye(60) * 1e9
  assert np.all(labels[d.argmin(1)] == labels)            # 1-NN stays in its blob
  np.testing.assert_array_equal(
      y, visualize.tsne_2d(x, perplexity=10.0, num_steps=300, seed=0))


def test_project_normalises_and_validates():
  rng = np.random.default_rng(4)
  snip, protos = rng.normal(size=(40, 8)), rng.normal(size=(3, 8))
  a = visualize.project(snip, protos, "pca")
  b = visualize.project(5.0 * snip, 0.1 * protos, "pca")  # cosine: scale-free
  np.testing.assert_allclose(a[0], b[0], atol=1e-9)
  np.testing.assert_allclose(a[1], b[1], atol=1e-9)
  assert a[2][0].startswith("PC 1") and a[3] == 40
  with pytest.raises(ValueError, match="projection"):
    visualize.project(snip, protos, "umap")


# =============================================================================
# Content: the series of Fig. 3 / Fig. 4 are the logged values.
# =============================================================================
def test_series_from_metrics_equal_the_logged_values(tmp_path):
  rows = metric_rows()
  path = tmp_path / "metrics.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  read = plots.read_metrics(str(path))
  assert read == rows
  for key in ("H_qc", "H_qr", *plots.FG_RANGE_KEYS["P^A"],
              *plots.FG_RANGE_KEYS["Q^R[:,0]"]):
    steps, values = plots.metric_series(read, key)
    logged = [(r["step"], r[key]) for r in rows if key in r]
    assert steps.tolist() == [s for s, _ in logged]
    assert values.tolist() == [v for _, v in logged], key
  steps, _ = plots.metric_series(read, "mAP")
  assert steps.tolist() == [20, 40, 60]                   # evaluation lines only
  # A resumed run logs a step twice: the last line wins; NaN is skipped.
  extra = [{"step": 5, "H_qc": 7.0}, {"step": 99, "H_qc": float("nan")}]
  steps, values = plots.metric_series(rows + extra, "H_qc")
  assert values[0] == 7.0 and 99 not in steps.tolist()
  by_step = plots.map_by_step(read)
  assert [s for s, _, _ in by_step] == [20, 40, 60]
  np.testing.assert_allclose(by_step[-1][1], [0.1, 0.3, 0.5, 0.7])
  np.testing.assert_allclose(by_step[-1][2], [0.02 * 12 * (1 - t) for t in (0.1, 0.3, 0.5, 0.7)])


# =============================================================================
# Rendering: every function writes a valid PNG.
# =============================================================================
def test_every_plot_function_writes_a_png(tmp_path):
  rows = metric_rows()
  out = lambda name: str(tmp_path / "p" / name)  # noqa: E731 (folder is created)
  paths = [plots.training_curves(rows, out("training_curves.png")),
           plots.entropy_curves(rows, out("entropy.png"), num_clusters=16),
           plots.fg_range_curves(rows, out("fg_range.png"))]
  t = (np.arange(100) + 0.5) * 0.64
  p_a = 0.5 + 0.4 * np.sin(t / 5)
  p_hat = 0.5 + 0.4 * np.cos(t / 7)
  paths.append(plots.video_timeline(
      out("timeline.png"), "video_test_0000001", t,
      {"p_a": p_a, "p_hat": p_hat, "p_ddot": 0.5 * (p_a + p_hat)},
      [(3.0, 12.5, 0), (40.0, 52.0, 1)],
      [{"label": "Jump", "score": 0.9, "segment": [2.0, 13.0]},
       {"label": 1, "score": 0.4, "segment": [41.0, 50.0]}], ["Jump", "Run"]))
  rng = np.random.default_rng(0)
  panel = {"title": "RGB", "points": rng.normal(size=(300, 2)),
           "fg": rng.integers(-1, 2, 300), "protos": rng.normal(size=(6, 2)),
           "proto_fg": np.array([1, 0, 1, 0, 0, 1], bool),
           "axis_labels": ("PC 1", "PC 2")}
  paths.append(plots.embedding_scatter(out("embedding.png"), [panel, panel]))
  paths.append(plots.map_tiou(out("map_tiou.png"), [0.1, 0.3, 0.5, 0.7],
                              [0.5, 0.4, 0.2, 0.1],
                              history=[("step 10", [0.1, 0.3, 0.5, 0.7], [0.2] * 4)]))
  for p in paths:
    assert_png(p)
  # Atomic writes leave no temporary files behind; empty input still plots.
  assert sorted(os.listdir(tmp_path / "p")) == sorted(os.path.basename(p) for p in paths)
  assert_png(plots.training_curves([], out("empty.png")), min_w=200, min_h=100)
  assert_png(plots.entropy_curves([], out("empty_h.png")))


# =============================================================================
# visualize: one pass, three scores, write_plots and --mode=plots.
# =============================================================================
def tiny_config(root, num_steps=6):
  c = defaults.base_config()
  c.data.dataset = "synthetic"
  c.data.root = root
  c.data.num_segments = 32
  c.model.embed_dim = 16
  c.model.num_clusters = 6
  c.batch_size = 8
  c.num_steps = num_steps
  c.log_every = 2
  c.eval_every = 3
  c.checkpoint_every = 3
  c.eval.num_plots = 2
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A 6-step run on tiny synthetic data (its own plots written at the end)."""
  root = str(tmp_path_factory.mktemp("synthetic"))
  write_synthetic_thumos(root, num_train=16, num_test=6, num_classes=3,
                         feature_dim=12, seed=5)
  work = str(tmp_path_factory.mktemp("run"))
  cfg = tiny_config(root)
  summary = train.train_and_evaluate(cfg, work, devices=jax.devices()[:1],
                        stream=open(os.devnull, "w"))
  return cfg, work, summary


def expected_pngs(cfg, test_ids):
  return ({"training_curves.png", "entropy.png", "fg_range.png", "embedding.png",
           "map_tiou.png"}
          | {f"timeline_{v}.png" for v in test_ids[:cfg.eval.num_plots]})


def test_training_ends_with_the_pngs(trained):
  cfg, work, summary = trained
  test_set = datasets.open_split(cfg, cfg.data.root, "test", classes=summary["classes"])
  names = set(os.listdir(os.path.join(work, "plots")))
  assert names == expected_pngs(cfg, [r.video_id for r in test_set])
  for name in names:
    assert_png(os.path.join(work, "plots", name))
  # eval/ keeps the numbers; the figures live in plots/.
  assert not any(f.endswith((".svg", ".png")) for f in os.listdir(os.path.join(work, "eval")))


def test_collect_snippets_three_scores_and_a_seeded_sample(trained):
  from case_jax import inference
  cfg, work, summary = trained
  model, state = summary["model"], summary["state"]
  test_set = datasets.open_split(cfg, cfg.data.root, "test", classes=summary["classes"])
  ids = [test_set[i].video_id for i in range(3)]
  a = visualize.collect_snippets(test_set, model, state.params, state.q_r, cfg,
                                 timeline_ids=ids, max_points=50, seed=1)
  assert set(a["scores"]) == set(ids)
  for vid in ids:
    sc = a["scores"][vid]
    # What the timeline plots: P-ddot^A = (P^A + P-hat^A) / 2, three curves.
    np.testing.assert_allclose(sc["p_ddot"], 0.5 * (sc["p_a"] + sc["p_hat"]), atol=1e-6)
    assert np.abs(sc["p_a"] - sc["p_hat"]).max() > 1e-3
  # The fused curve is the score the detections were cut from (same pass).
  _, fg, _ = inference.detect_dataset(test_set, model, state.params, state.q_r, cfg,
                                      keep_scores=True)
  assert cfg.inference.fg_score == "fused" and cfg.inference.cat
  for vid in ids:
    np.testing.assert_allclose(a["scores"][vid]["p_ddot"], fg[vid], atol=1e-6)
  # Uniform sample of max_points of all (video, position) pairs, seeded.
  assert a["total"] == len(test_set) * cfg.data.num_segments
  assert a["emb"]["rgb"].shape == (50, cfg.model.embed_dim) == a["emb"]["flow"].shape
  np.testing.assert_allclose(np.linalg.norm(a["emb"]["rgb"], axis=1)[
      np.linalg.norm(a["emb"]["rgb"], axis=1) > 0], 1.0, atol=1e-5)
  assert set(np.unique(a["fg"])) <= {-1, 0, 1}
  np.testing.assert_allclose(np.linalg.norm(a["protos"]["flow"], axis=1), 1.0, atol=1e-6)
  cfg1 = tiny_config(cfg.data.root)
  cfg1.inference.batch_size = 1                            # batching-independent
  b = visualize.collect_snippets(test_set, model, state.params, state.q_r, cfg1,
                                 max_points=50, seed=1)
  np.testing.assert_array_equal(a["fg"], b["fg"])
  np.testing.assert_allclose(a["emb"]["rgb"], b["emb"]["rgb"], atol=1e-6)
  c = visualize.collect_snippets(test_set, model, state.params, state.q_r, cfg,
                                 max_points=50, seed=2)
  assert not np.allclose(a["emb"]["rgb"], c["emb"]["rgb"])


def test_write_plots_from_the_checkpoint(trained, tmp_path, monkeypatch):
  import shutil
  cfg, work, _ = trained
  copy = str(tmp_path / "run")
  shutil.copytree(work, copy)
  shutil.rmtree(os.path.join(copy, "plots"))
  drawn = {}
  real = plots.video_timeline

  def spy(out_png, video_id, times, scores, *args, **kw):
    drawn[video_id] = (np.asarray(times), dict(scores))
    return real(out_png, video_id, times, scores, *args, **kw)

  monkeypatch.setattr(plots, "video_timeline", spy)
  log = open(os.devnull, "w")
  written = runs.plots(cfg, copy, stream=log)
  assert {os.path.basename(p) for p in written} == set(os.listdir(os.path.join(copy, "plots")))
  assert len(written) == 5 + cfg.eval.num_plots
  for p in written:
    assert_png(p)
  assert len(drawn) == cfg.eval.num_plots
  for times, scores in drawn.values():
    assert set(scores) == {"p_a", "p_hat", "p_ddot"}
    np.testing.assert_allclose(scores["p_ddot"], 0.5 * (scores["p_a"] + scores["p_hat"]),
                               atol=1e-6)
  # Seconds: the centres of the snippets the T test positions sample,
  # floor(i * L / T) (the released uniform sampling), at 0.64 s per snippet.
  test_set = datasets.open_split(cfg, cfg.data.root, "test")
  t = cfg.data.num_segments
  for rec in test_set:
    if rec.video_id in drawn:
      n = rec.num_snippets
      want = (np.floor(np.arange(t) * n / t) + 0.5) * 16 / 25
      np.testing.assert_allclose(drawn[rec.video_id][0], want, rtol=1e-9)


def test_write_plots_names_the_missing_file_and_the_fix(tmp_path):
  cfg = tiny_config(str(tmp_path / "data"))
  with pytest.raises(FileNotFoundError, match=r"metrics\.jsonl is missing.*--mode=train"):
    runs.plots(cfg, str(tmp_path))
  (tmp_path / "metrics.jsonl").write_text(json.dumps(metric_rows()[0]) + "\n")
  with pytest.raises(FileNotFoundError, match=r"run\.json is missing.*--mode=train"):
    runs.plots(cfg, str(tmp_path), stream=open(os.devnull, "w"))
  with pytest.raises(ValueError, match="projection"):
    runs.plots(cfg, str(tmp_path), projection="umap")


@pytest.mark.slow
def test_mode_plots_end_to_end(tmp_path):
  """python -m case_jax.main --mode=plots on a tiny synthetic run."""
  env = dict(os.environ, PYTHONPATH=REPO)
  env.pop("XLA_FLAGS", None)
  work = str(tmp_path / "run")
  common = ["--config=configs/synthetic.py", f"--workdir={work}",
            "--config.num_steps=4", "--config.eval_every=0",
            "--config.checkpoint_every=4", "--config.log_every=2",
            "--config.data.synthetic.num_train=16", "--config.data.synthetic.num_test=4",
            "--config.data.synthetic.feature_dim=8", "--config.data.num_segments=16",
            "--config.model.embed_dim=8", "--config.eval.num_plots=2"]
  run = lambda *a: subprocess.run(  # noqa: E731
      [sys.executable, "-m", "case_jax.main", *common, *a], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=600)
  proc = run()
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  os.rename(os.path.join(work, "plots"), os.path.join(work, "plots_train"))
  proc = run("--mode=plots", "--projection=tsne")
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert "Wrote 7 plots in" in proc.stdout
  names = sorted(os.listdir(os.path.join(work, "plots")))
  assert names == sorted(os.listdir(os.path.join(work, "plots_train")))
  assert len(names) == 7
  for name in names:
    assert_png(os.path.join(work, "plots", name))


def test_fig4_series_keep_the_steps_with_all_three_statistics():
  """A run resumed across the version that added pa_max/pa_min: its older
  rows have the mean alone; the band keeps the steps that have all three."""
  old = [{"step": s, "mean_att": 0.4} for s in (10, 20)]
  new = [{"step": s, "mean_att": 0.5, "pa_max": 0.9, "pa_min": 0.1} for s in (30, 40)]
  got = plots.fg_range_series(old + new)
  assert set(got) == {"P^A"}                    # no Q^R statistics logged
  x, hi, mid, lo = got["P^A"]
  assert x.tolist() == [30, 40]
  assert hi.tolist() == [0.9, 0.9] and mid.tolist() == [0.5, 0.5]
  assert lo.tolist() == [0.1, 0.1]


def test_a_cut_short_last_line_is_skipped_a_bad_middle_line_is_named(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
  assert plots.read_metrics(str(path)) == [{"step": 1, "loss": 2.0},
                                          {"step": 2, "loss": 1.5}]
  path.write_text('{"step": 1, "loss": 2.0}\nnot json\n{"step": 3, "loss": 1.0}\n')
  with pytest.raises(ValueError, match="metrics.jsonl:2"):
    plots.read_metrics(str(path))


def test_an_empty_test_split_gives_the_training_curves_and_a_note(trained, tmp_path,
                                                                  monkeypatch):
  import shutil
  cfg, work, _ = trained
  copy = str(tmp_path / "run")
  shutil.copytree(work, copy)
  shutil.rmtree(os.path.join(copy, "plots"))

  class EmptySplit:
    classes = ["a", "b", "c"]

    def __len__(self):
      return 0
  real_open = datasets.open_split
  monkeypatch.setattr(datasets, "open_split", lambda c, root, split, **kw: (
      EmptySplit() if split == "test" else real_open(c, root, split, **kw)))
  out = io.StringIO()
  written = runs.plots(cfg, copy, stream=out)
  assert sorted(os.path.basename(p) for p in written) == [
      "entropy.png", "fg_range.png", "training_curves.png"]
  assert "No usable test split (the test split has no videos)" in out.getvalue()


def test_plotting_a_run_with_another_model_config_warns(trained, tmp_path):
  """The figures come from the command-line config: one that differs from
  the run's own config.json in what was trained is named."""
  from case_jax import runs
  cfg, work, _ = trained
  other = tiny_config(cfg.data.root)
  other.labeling.ddcl = not cfg.labeling.ddcl
  other.inference.fg_score = "attention"        # evaluating otherwise is fine
  with pytest.warns(UserWarning, match=r"labeling\.ddcl: trained") as caught:
    runs.load_trained(other, work)
  assert "inference" not in str(caught[0].message)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    runs.load_trained(cfg, work)                 # the same config: silent
