"""The default hyper-parameters of CASE, shared by every ``configs/<dataset>.py``.

Defaults reproduce the released PyTorch code (github.com/Qinying-Liu/CASE,
see ../shared/reference/official_code_notes.md, "notes" below).  Wherever the
paper (arXiv 2312.14138, "paper") says otherwise, the switch is here with both
values in its comment, and ``paper_variant(config)`` sets the paper's.
"""
import importlib.util
import json
import os

import ml_collections

# configs/<name>.py of this repository (a source checkout: configs/ is not
# part of the installed package).
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "configs")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()

  # --- Run --------------------------------------------------------------------
  c.seed = 1                      # notes §2.1: seed=1
  c.num_steps = 3600              # notes §2.1: 300 epochs x 12 iterations
  c.batch_size = 16               # paper E.3 and notes: B = 16 (global batch)
  c.eval_every = 50               # notes §2.1: detection_inf_step = 50
  c.log_every = 10
  c.checkpoint_every = 200
  c.keep_checkpoints = 3
  c.checkpoint_commit = "auto"    # "auto" | "rename" | "commit_file" (object
                                  # stores, e.g. a gcsfuse-mounted bucket)
  c.parallel = "pmap"             # "pmap" | "shard_map" (same per-device step)
  # Resuming a workdir with another value of a trained key (anything but the
  # run keys here, inference.* and eval.*) is refused; this comma-separated
  # list of keys or sections ("optim.learning_rate,loss") allows it.  Each
  # change is appended to <workdir>/config_history.jsonl (step, diff, the
  # earlier config).  Keys that change array shapes (model.embed_dim) cannot
  # resume a checkpoint either way.
  c.allow_config_change = ""
  # Several seeds (paper Table 12, mean +- std): "" = one run with ``seed``;
  # "0,1,2" = one run per listed seed into <workdir>/seed_<s>/, then
  # <workdir>/seeds.md/.json (case_jax/seeds.py).  Each seed sets both the
  # initialisation and the data order.
  c.seeds = ""
  c.seeds_mode = "auto"           # "vmap" (all seeds in one stacked step) |
                                  # "sequential" (the train loop once per seed) | "auto"
                                  # (vmap when its memory estimate fits)

  # --- Data -------------------------------------------------------------------
  c.data = ml_collections.ConfigDict()
  c.data.root = ml_collections.FieldReference(None, field_type=str)
  c.data.dataset = "thumos14"
  c.data.layout = "auto"          # feature release layout: "basnet" (BaS-Net/ASL/
                                  # CASE per-video rgb/flow), "wtalc" (W-TALC /
                                  # CO2-Net joint .npy), "acmnet" (ACM-Net 2048-d),
                                  # "tfds" (prepared; data.root = TFDS data_dir),
                                  # "auto" (recognised from data.root's contents,
                                  # data/layouts.py detect_layout; the choice is
                                  # printed)
  c.data.tfds_name = "thumos14/basnet"  # with layout "tfds" (with "auto": the one
                                  # prepared dataset found, or "" to insist on that)
  c.data.on_error = "raise"       # "raise" (refuse before training, naming every
                                  # bad video and file) | "skip" (leave exactly the
                                  # bad videos out, each one listed)
  c.data.classes = ml_collections.FieldReference(None, field_type=object)
                                  # the class list: names (a config sets them, e.g.
                                  # THUMOS14's 20), a text file (one class a line),
                                  # or None/"" = the dataset's rule (synthetic: the
                                  # generator's; else the training split's labels)
  c.data.check_values = True      # read every feature once before training (NaN/inf,
                                  # truncated files); verified files are remembered
  c.data.verified_cache = "auto"  # where: "auto" (<root>/.case_jax_verified.json,
                                  # else ~/.cache/case_jax/verified/), a file, "off"
  c.data.num_segments = 750       # T; paper E.3 / notes §2.1: 750 THUMOS, 50 ANet
  c.data.fps = 25.0               # notes §4: features at 25 fps
  c.data.snippet_frames = 16      # notes §4: 16-frame snippets
  c.data.drop_last = True         # notes §2.1: DataLoader drop_last=True
  c.data.test_sampling = "resample"  # test-time videos shorter than T: "resample"
                                  # (stretched to T, notes §4 uniform_sampling) |
                                  # "no_upsample" (kept at their length; notes §9)

  # --- Model (paper §3, E.3; notes §1) -----------------------------------------
  c.model = ml_collections.ConfigDict()
  c.model.embed_dim = 512         # paper E.3 and notes: 512 channels
  c.model.num_clusters = 16       # K^C; paper E.3: 16 THUMOS, 64 ANet
  c.model.cluster_temp = 10.0     # paper E.3 "temperature of 10"; notes: hard-coded 10
  c.model.kernel_size = 1         # notes §1: every conv has k=1; paper says "temporal
                                  # convolution": 3 is the paper variant
  c.model.dtype = "float32"       # matmul dtype: "float32" | "bfloat16" (f32
                                  # params and accumulation; see benchmarks/train_step.py)
  c.model.init = "pytorch"        # "pytorch" (U(+-1/sqrt(fan_in)) weights and biases,
                                  # as released) | "flax" (lecun_normal, zero bias)
  c.model.cluster_encoder = "shared"  # the clusters read the attention's encoder
                                  # (released and paper) | "separate": their own
  c.model.streams = "rgb,flow"    # "rgb,flow" (released) | "rgb" | "flow": a one-stream
                                  # CASE (e.g. on RGB features extracted from your own
                                  # videos); co-labeling then has nothing to fuse

  # --- Pseudo-labels (paper §3.2, E.1-E.2; notes §2.2) -------------------------
  c.labeling = ml_collections.ConfigDict()
  c.labeling.topk_divisor = 8     # k = T // 8 THUMOS (paper E.3), T // 2 ANet
  c.labeling.mil_omega = 1.0 / 3.0  # calibrated T-CAS w*P^V + (1-w)*P^A per stream.
                                  # Released (sm_f+sm_r)/2 + att_f + att_r, /3 == w=1/3.
                                  # Paper E.3: w = 0.25
  c.labeling.use_attention = True  # Table 9 ATB: False = baseline without attention
  c.labeling.snippet_clustering = True  # Table 2 SCC (L_C)
  c.labeling.cluster_classification = True  # Table 2 CCC (L_R)
  c.labeling.dcl = True           # Table 4: SCC's distribution constraint (False = "PL")
  c.labeling.hard = False         # Table 4: one-hot (argmax) Q^C
  c.labeling.ddcl = True          # Table 2 DDCL: KL prior of Eq. 13-15
  c.labeling.sigma = 10.0         # paper E.3 and notes: std 10 (prior almost flat!)
  c.labeling.rank = "argsort"     # DDCL ordering: "argsort" (released: the sort
                                  # permutation of -P^A used as if it were a rank),
                                  # "rank" (the true rank), "prob" (P^A itself,
                                  # paper appendix F.2 alternative)
  c.labeling.prior_qr_init = "uniform_all"  # Q^R before the first step: released
                                  # fills (K^C, 2) with 1/K^C; "half" = 0.5 each
  c.labeling.eps = 20.0           # paper E.3: eps = 20
  c.labeling.eps_on = "cosine"    # what eps multiplies: "cosine" (released:
                                  # exp(eps * cos) = (P^C)^2 for P^C = softmax(10 cos))
                                  # | "log_prob" (paper Eq. 7: (P^C)^eps)
  c.labeling.sinkhorn_mode = "released"  # "released" (3 SwAV passes) | "auto" |
                                  # "scaling" | "log" (iterate to sinkhorn_tol)
  c.labeling.sinkhorn_iters = 3   # notes §2.2(f): 3 passes
  c.labeling.sinkhorn_tol = 1e-5  # for the iterative modes
  c.labeling.sinkhorn_max_iters = 500
  c.labeling.beta_r = "empirical"  # Eq. 12 (batch fg/bg fractions of Q^A) |
                                  # "uniform" ([0.5, 0.5], Table 5)
  c.labeling.proto_temp = 10.0    # the released --temp: rho of Eq. 10 and the
                                  # divisor of both OT steps' logits (notes §2.2(f))
  # Two-stream co-labeling, per pseudo-labeling step (Table 10).
  c.labeling.colabel_topk = True      # Eq. 24
  c.labeling.colabel_clusters = True  # Eq. 20
  c.labeling.colabel_cluster_cls = True  # Eq. 22
  c.labeling.colabel_fuse = "logits"  # "logits" (released: 0.5/0.5 on logits) |
                                      # "probs" (paper Eq. 20, 22: on probabilities)

  # --- Losses (paper Eq. 1, 2, 3, 11, 16; notes §2.2) --------------------------
  c.loss = ml_collections.ConfigDict()
  c.loss.lambda_a = 1.0           # paper E.3
  c.loss.lambda_c = 1.0           # paper E.3 / notes w_clu = 1
  c.loss.lambda_r = 0.3           # paper E.3 / notes w_cls = 0.3
  c.loss.attention = "gce"        # "gce" (Eq. 2, q = 0.7) | "bce" (Table 9)
  c.loss.gce_q = 0.7              # paper gamma = 0.7 / notes q_val
  c.loss.stream_reduce = "released"  # "released": L_V averaged over streams,
                                  # L_A, L_C, L_R summed | "mean": all averaged

  # --- Optimiser (notes §2.1) --------------------------------------------------
  c.optim = ml_collections.ConfigDict()
  c.optim.learning_rate = 1e-4    # paper E.3 and notes
  c.optim.weight_decay = 5e-4     # notes: Adam weight_decay (coupled L2)
  c.optim.decay = "coupled"       # "coupled" (PyTorch Adam) | "decoupled" (AdamW)
  c.optim.b1 = 0.9
  c.optim.b2 = 0.999
  c.optim.eps = 1e-8

  # --- Inference (filled in by the evaluation issue) ---------------------------
  c.inference = ml_collections.ConfigDict()
  c.inference.cat = True          # clustering-assisted testing (Table 2 CAT)
  c.inference.fg_score = "fused"  # Table 5 columns: "attention" (P^A), "cluster"
                                  # (P-hat^A = P^C Q^R[:, 0]), "fused" (P-ddot^A);
                                  # used when cat is True
  c.inference.omega = ml_collections.FieldReference(None, field_type=float)
                                  # S = w*softmax(CAS) + (1-w)*foreground; None =
                                  # released (1/5 with CAT: its 5-term fusion;
                                  # 1/3 without); paper E.3: w = 0.25
  c.inference.batch_size = 16     # test videos per jit call (padded)
  c.inference.topk_divisor = 8    # video scores: top T//8 on S (notes §3.3)
  c.inference.class_threshold = 0.25  # notes §3.4 (THUMOS)
  c.inference.scale = 24          # upsampling factor (notes §3.5)
  c.inference.thresholds = "released"  # np.arange(0.1, 1.0, 0.1) as is (notes §3.6)
  # Outer-inner-contrastive score = inner - outer + video_weight * video score,
  # outer margin = outer_ratio * length.  The released call passes its "gamma"
  # (0.15) positionally into the outer ratio, so its effective values are
  # outer_ratio = 0.15 and video_weight = 0.2 (notes §3.7).
  c.inference.outer_ratio = 0.15
  c.inference.video_weight = 0.2
  c.inference.nms = "soft_released"  # "soft_released" (decay once, keep all,
                                  # "+1" IoU) | "hard" | "none"
  c.inference.nms_iou = 0.4       # notes §2.1 nms_thresh
  c.inference.nms_sigma = 0.35    # notes §2.1 nms_alpha
  c.inference.max_detections = ml_collections.FieldReference(None, field_type=int)
  # Evaluation (official ActivityNet protocol, notes §5).
  c.eval = ml_collections.ConfigDict()
  c.eval.tiou_thresholds = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)  # THUMOS
  c.eval.gt_subset = "auto"       # the ground truth's subset scored; "auto" = the
                                  # test split's subset as its reader found it
                                  # (THUMOS14 "test", ActivityNet "validation")
  c.eval.tie_order = "numpy"      # "numpy" (the installed numpy's argsort, as
                                  # the official code) | "stable"
  c.eval.num_plots = 4            # per-video timelines in <workdir>/plots/
  c.eval.plots = True             # PNG figures at the end of training
  return c


def set_dotted(c: ml_collections.ConfigDict, overrides: dict,
               what: str = "override") -> ml_collections.ConfigDict:
  """Sets {"model.num_clusters": 32, ...} in ``c`` (in place; returns it).
  An unknown key is an error naming it and ``what`` set it (an ablation row,
  a seed's override): a typo must not be silently added.

  Not ``ConfigDict.update_from_flattened_dict``: that refuses an unknown key
  only when ``c`` is locked and adds it as a new leaf otherwise (and
  ``base_config()``, which tests and ``ablations.apply`` use, is unlocked);
  its errors do not say which override set the key.  Values go through the
  same ``ConfigDict.__setitem__`` either way, so the type checks are
  identical (an int field refuses 3.0 and "x", a float field takes 1 as 1.0,
  a ``FieldReference(None)`` field such as ``inference.omega`` takes its type
  or None); tests/test_configs.py pins both."""
  for dotted, value in overrides.items():
    node = c
    *parents, leaf = dotted.split(".")
    for p in parents:
      if not isinstance(node, ml_collections.ConfigDict) or p not in node:
        raise KeyError(f"{what} sets unknown config key {dotted!r}")
      node = node[p]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise KeyError(f"{what} sets unknown config key {dotted!r}")
    node[leaf] = value
  return c


def config_diff(old, new, *, only: tuple = (), ignore: tuple = ()) -> list:
  """[(dotted key, old value, new value)] where two configs (ConfigDicts or
  their JSON dicts, e.g. a workdir's config.json) differ; ``only``: keys
  under these prefixes ("model.", ...); ``ignore``: exact keys to skip."""
  def flat(tree, prefix=""):
    if hasattr(tree, "to_json_best_effort"):
      tree = json.loads(tree.to_json_best_effort())
    out = {}
    for k, v in tree.items():
      if isinstance(v, dict):
        out.update(flat(v, f"{prefix}{k}."))
      else:
        out[prefix + k] = v
    return out
  a, b = flat(old), flat(new)
  return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
          if k not in ignore and (not only or k.startswith(only))
          and a.get(k) != b.get(k)]


def paper_variant(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Switches every documented paper-vs-code difference to the paper's value."""
  c.model.kernel_size = 3
  c.labeling.mil_omega = 0.25
  c.labeling.rank = "rank"
  c.labeling.prior_qr_init = "half"
  c.labeling.eps_on = "log_prob"
  c.labeling.sinkhorn_mode = "auto"
  c.labeling.colabel_fuse = "probs"
  c.inference.omega = 0.25
  return c


VARIANTS = ("paper", "runlocal", "rgb")


def apply_variant(c: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """The ``--config=configs/x.py:<variant>`` suffix shared by every config:
  "" (released), "paper" (``paper_variant``), "runlocal" (a seconds-long run),
  "rgb" (an RGB-only model, ``model.streams``); several join with "+"
  ("rgb+runlocal")."""
  for part in (arg or "").split("+"):
    if part == "paper":
      paper_variant(c)
    elif part == "runlocal":
      c.num_steps = min(c.num_steps, 20)
      c.log_every = 5
    elif part == "rgb":
      c.model.streams = "rgb"
    elif part:
      raise ValueError(f"unknown config variant {part!r}: use '' or any of "
                       f"{', '.join(repr(v) for v in VARIANTS)} (joined with '+')")
  return c


def activitynet_config(version: str) -> ml_collections.ConfigDict:
  """ActivityNet v1.2 / v1.3.  The released code has no ActivityNet recipe
  (notes §9): values come from the paper (appendix E.3: T = 50, k = T // 2,
  K^C = 64, B = 16, Adam 1e-4) and, where it is silent, from the same lab's
  ActivityNet pipeline (notes §9)."""
  c = base_config()
  c.data.dataset = {"1.2": "anet12", "1.3": "anet13"}[version]
  c.data.num_segments = 50        # T (paper E.3)
  c.labeling.topk_divisor = 2     # k = T // 2 (paper E.3)
  c.model.num_clusters = 64       # K^C (paper E.3)
  c.eval_every = 200              # notes §9 (SAL_ActivityNet tests every 200 steps)
  # Ours, not sourced: the paper gives no step budget and SAL_ActivityNet's
  # (notes §9, field notes §3.4: 50k steps at batch 8) is another method's.
  c.num_steps = 6000
  c.inference.topk_divisor = 2    # same k as training
  c.inference.class_threshold = 0.1  # notes §9 (SAL_ActivityNet)
  c.inference.nms_iou = 0.7       # notes §9
  # OIC: SAL_ActivityNet's gamma is 0.2 (notes §9).  The call binds it
  # positionally to the outer ratio in CASE (0.15) and ASL (0.2; notes §3
  # item 7, §8, §10.7) and, per issue #13, in SAL_ActivityNet too (the notes
  # do not quote that call): lambda = 0.2, the video-score weight keeps the
  # function default 0.2.
  c.inference.outer_ratio = 0.2
  c.inference.video_weight = 0.2
  # notes §9: SAL_ActivityNet's test does not resample videos shorter than T.
  c.data.test_sampling = "no_upsample"
  c.eval.tiou_thresholds = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
  return c


def config_path(name: str) -> str:
  """configs/<name>.py for a bare name ("thumos14"); a path ("x/y.py") as is."""
  if name.endswith(".py") or os.sep in name:
    return name
  return os.path.join(CONFIG_DIR, f"{name}.py")


def load_config(spec: str, arg: str | None = None) -> ml_collections.ConfigDict:
  """The locked ConfigDict that ``--config=<spec>`` gives: ``spec`` is a
  config name ("thumos14") or file, optionally with ``:<arg>`` as on the
  command line ("synthetic:paper", "configs/ablations.py:thumos14/table2/row1");
  ``arg`` is the same suffix given separately.  As ml_collections'
  config_flags: get_config() without an argument when there is none, then
  lock() (unknown keys refused, existing ones settable)."""
  path, _, suffix = spec.partition(":")
  if arg is None and suffix:
    arg = suffix
  elif suffix:
    raise ValueError(f"config {spec!r} has an argument and arg={arg!r} gives another")
  path = config_path(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no config file {path!r}")
  module_spec = importlib.util.spec_from_file_location(
      "config_" + os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config() if arg is None else module.get_config(arg)
  config.lock()
  return config
