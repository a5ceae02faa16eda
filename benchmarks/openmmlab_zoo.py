"""mmdet 2.28.2's config zoo through ``detlight fit``: each leaf config, pointed at the synthetic COCO set.

For every leaf config of mmdet's ``.mim/configs`` (``_base_`` and ``common/`` fragments skipped), :func:`adapt`
rewrites the config (read with mmcv's ``Config.fromfile``, so ``_base_`` inheritance is mmdet's) and a worker
subprocess runs :func:`run_one` on each in turn: ``detlight.api.fit`` for 2 train iterations and 1 val step, with a
timeout per config (imports are paid once per worker; a fresh worker after a crash, a timeout or ``--recycle``). Results
are appended to a resumable jsonl file (one line per config: status, seconds, a one-line reason); a summary table by
family (config folder) and by reason is printed at the end (``--summary`` prints it for an existing file).

The overrides (the only changes made to a config), all in :func:`adapt`:

- every dataset dict (one holding ``ann_file``, inside wrappers such as ``RepeatDataset``, ``ClassBalancedDataset``,
  ``MultiImageMixDataset`` or a list for ``ConcatDataset``) becomes ``CocoDataset`` on the synthetic COCO set
  (``type``, ``ann_file``, ``img_prefix``, ``classes``); the pipelines are the config's own;
- image sizes in the pipelines and ``custom_hooks`` (``img_scale``, ``crop_size``, ``size``, ``img_size``,
  ``input_size`` pairs) are scaled so that the longer side is at most ``--max-side`` (128) pixels (SSD's VGG keeps
  its anchors' ``input_size``, 300 / 512: its extra layers need it);
- every integer ``num_classes`` (and Mask2Former's ``num_things_classes``) in the model is the synthetic set's class
  count (4);
- two-stage heads see fewer boxes: a ``sampler``'s ``num`` is at most 64 and the ``rpn`` / ``rpn_proposal``
  proposal counts (``nms_pre``, ``max_per_img``, ``max_num``, ``nms_post``) at most 100 (a Cascade Mask R-CNN step
  otherwise costs 30-50 s on 2 cores, whatever the image size);
- ``pretrained``, ``init_cfg`` of type ``Pretrained`` (or with a ``checkpoint``) and a distillation
  ``teacher_ckpt`` are set to ``None`` (nothing is downloaded), as are ``load_from`` / ``resume_from``; a
  ``teacher_config`` is adapted the same way and pointed at;
- the synthetic data stands in for what some datasets read besides COCO annotations: semantic maps for a
  ``seg_prefix`` (HTC, SCNet: the category index inside each box) and a ``proposal_file`` (Fast R-CNN: jittered
  and random boxes); keys ``CocoDataset`` does not take (OpenImages' ``label_file``, ...) are dropped;
- ``data.samples_per_gpu = 2``, ``workers_per_gpu = 0``, a val batch of 1 image;
- ``runner = EpochBasedRunner(max_epochs=1)``, ``evaluation.interval = 1`` (a VOC ``mAP`` metric becomes
  ``bbox``: the dataset is COCO's), the text logger only, ``auto_scale_lr`` off;
- detlight overrides: ``trainer.max_steps=2``, ``trainer.limit_train_batches=2`` (an epoch of 2 iterations, so
  the val step runs after them even under a ``RepeatDataset``), ``trainer.limit_val_batches=1``, no progress bar, sanity check off.

Reasons: ``op not provided: <op>`` (an mmcv op the provider lacks), ``dataset type: ...`` (a dataset that cannot read
COCO-format annotations, e.g. panoptic), ``registry: ...`` (a type not registered, e.g. a ``custom_imports`` module
of another package), ``timeout``, otherwise ``<ErrorClass>: <first line>``.

Run (OpenMMLab venv, ``PYTHONPATH`` at the repository): ``python benchmarks/openmmlab_zoo.py --sample
--out zoo.jsonl`` (one config per family folder), without ``--sample`` for all leaves; ``--summary`` prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

CONFIG_ROOT = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / \
    "site-packages" / "mmdet" / ".mim" / "configs"
SIZE_KEYS = ("img_scale", "crop_size", "size", "img_size", "input_size")
COCO_METRICS = ("bbox", "segm", "proposal", "proposal_fast")
#: fast configs of 20 families (one-stage, two-stage, cascade, query-based, anchor-free, instance masks): the marked
#: test ``tests/openmmlab/test_zoo_sample.py`` runs them through :func:`run_one`
REPRESENTATIVE = (
    "atss/atss_r50_fpn_1x_coco.py", "cascade_rcnn/cascade_rcnn_r50_fpn_1x_coco.py",
    "centernet/centernet_resnet18_140e_coco.py", "detr/detr_r50_8x2_150e_coco.py",
    "faster_rcnn/faster_rcnn_r50_fpn_1x_coco.py", "fcos/fcos_r50_caffe_fpn_gn-head_1x_coco.py",
    "gfl/gfl_r50_fpn_1x_coco.py", "mask_rcnn/mask_rcnn_r50_fpn_1x_coco.py", "paa/paa_r50_fpn_1x_coco.py",
    "reppoints/reppoints_moment_r50_fpn_1x_coco.py", "retinanet/retinanet_r18_fpn_1x_coco.py",
    "rpn/rpn_r50_fpn_1x_coco.py", "solo/solo_r50_fpn_1x_coco.py", "sparse_rcnn/sparse_rcnn_r50_fpn_1x_coco.py",
    "ssd/ssdlite_mobilenetv2_scratch_600e_coco.py", "tood/tood_r50_fpn_1x_coco.py", "vfnet/vfnet_r50_fpn_1x_coco.py",
    "yolo/yolov3_mobilenetv2_320_300e_coco.py", "yolof/yolof_r50_c5_8x8_1x_coco.py",
    "yolox/yolox_tiny_8x8_300e_coco.py",
)


def config_root() -> Path:
    """mmdet's shipped configs folder (``mmdet/.mim/configs``) of the running interpreter."""
    import mmdet

    return Path(mmdet.__file__).parent / ".mim" / "configs"


def leaf_configs(root: Path | None = None) -> list[Path]:
    """Every leaf config under ``root``, sorted: ``_base_`` and ``common/`` fragments excluded."""
    root = root or config_root()
    return sorted(p for p in root.rglob("*.py") if "_base_" not in p.parts and "common" not in p.parts)


def sample_configs(root: Path | None = None) -> list[Path]:
    """One config per family folder: the leaf with the shortest name (usually the plain variant)."""
    by_family: dict[str, list[Path]] = defaultdict(list)
    root = root or config_root()
    for path in leaf_configs(root):
        by_family[path.relative_to(root).parts[0]].append(path)
    return [min(paths, key=lambda p: (len(p.name), p.name)) for _, paths in sorted(by_family.items())]


def _scale_pair(value: Any, max_side: int) -> Any:
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        big = max(value)
        if big > max_side:
            f = max_side / big
            return type(value)(max(8, int(round(v * f))) for v in value)
        return value
    if isinstance(value, list) and value and all(isinstance(v, (list, tuple)) for v in value):
        return [_scale_pair(v, max_side) for v in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > max_side:
        return max_side
    return value


def _scale_sizes(node: Any, max_side: int) -> Any:
    if isinstance(node, dict):
        return {k: (_scale_pair(v, max_side) if k in SIZE_KEYS else _scale_sizes(v, max_side)) for k, v in node.items()}
    if isinstance(node, list):
        return [_scale_sizes(v, max_side) for v in node]
    if isinstance(node, tuple):
        return tuple(_scale_sizes(v, max_side) for v in node)
    return node


#: caps on the per-image RoI counts of two-stage heads (``train_cfg.rcnn.sampler.num`` 512, ``rpn_proposal`` /
#: test ``rpn`` 1000-2000 proposals): the RoI heads' cost does not shrink with the image, and these counts change how
#: many boxes flow through mmdet's code, not which code runs
MAX_SAMPLED_ROIS = 64
MAX_PROPOSALS = 100
_PROPOSAL_KEYS = ("nms_pre", "max_per_img", "max_num", "nms_post")


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _model_fixes(node: Any, num_classes: int, parent: str = "") -> Any:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k in ("num_classes", "num_things_classes") and _int(v):  # Mask2Former counts things and stuff
                out[k] = num_classes
            elif k == "class_weight" and isinstance(v, list) and len(v) > num_classes + 1:  # Mask2Former: 80 + 1
                out[k] = [v[0]] * num_classes + [v[-1]]
            elif parent == "sampler" and k == "num" and _int(v):
                out[k] = min(v, MAX_SAMPLED_ROIS)
            elif parent in ("rpn", "rpn_proposal") and k in _PROPOSAL_KEYS and _int(v) and v > 0:
                out[k] = min(v, MAX_PROPOSALS)
            elif k == "pretrained" and isinstance(v, str):
                out[k] = None
            elif k == "init_cfg" and isinstance(v, dict) and (v.get("type") == "Pretrained" or "checkpoint" in v):
                out[k] = None
            elif k in ("teacher_ckpt", "load_from") and isinstance(v, str):
                out[k] = None
            else:
                out[k] = _model_fixes(v, num_classes, k)
        return out
    if isinstance(node, (list, tuple)):
        return type(node)(_model_fixes(v, num_classes, parent) for v in node)
    return node


#: what mmdet's ``CocoDataset`` accepts (``CustomDataset.__init__``); other dataset keys (OpenImages' ``label_file``,
#: LVIS' ``ins_ann_file``, ...) are dropped
COCO_DATASET_KEYS = ("type", "ann_file", "pipeline", "classes", "img_prefix", "seg_prefix", "seg_suffix",
                     "proposal_file", "test_mode", "filter_empty_gt", "file_client_args")


def _boxes(ann: Path) -> dict[str, Any]:
    """``file name -> (image size, [(x1, y1, x2, y2, category index)])`` of a COCO annotation file, in id order."""
    coco = json.loads(ann.read_text())
    cats = {c["id"]: i for i, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}
    images = sorted(coco["images"], key=lambda i: i["id"])
    out: dict[str, Any] = {im["file_name"]: ((im["height"], im["width"]), []) for im in images}
    names = {im["id"]: im["file_name"] for im in images}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        out[names[a["image_id"]]][1].append((x, y, x + w, y + h, cats[a["category_id"]]))
    return out


def semantic_maps(ann: Path, out_dir: Path) -> Path:
    """A ``seg_prefix`` folder for HTC-style configs: per image a PNG of the category index inside each box, 255
    (the semantic heads' ``ignore_label``) elsewhere: what ``LoadAnnotations(with_seg=True)`` reads in place of
    COCO-stuff maps."""
    import numpy as np
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, ((h, w), boxes) in _boxes(ann).items():
        target = out_dir / (name.rsplit(".", 1)[0] + ".png")
        if not target.exists():
            seg = np.full((h, w), 255, np.uint8)
            for x1, y1, x2, y2, c in boxes:
                seg[int(y1):int(y2) + 1, int(x1):int(x2) + 1] = c
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(seg).save(target)
    return out_dir


def proposals(ann: Path, out: Path, per_image: int = 50) -> Path:
    """A ``proposal_file`` for Fast R-CNN configs: per image (in id order) the boxes jittered and random boxes, with
    scores, as ``(N, 5)`` float32 arrays in a pickle (the layout of mmdet's ``rpn_*.pkl``)."""
    import pickle

    import numpy as np

    if out.exists():
        return out
    rng = np.random.default_rng(0)
    rows = []
    for (h, w), boxes in _boxes(ann).values():
        gt = np.array([b[:4] for b in boxes], np.float32).reshape(-1, 4)
        jitter = (np.repeat(gt, 4, 0) + rng.normal(0, 3, (len(gt) * 4, 4))).astype(np.float32)
        xy = rng.uniform(0, [w, h], (per_image, 2))
        wh = rng.uniform(4, max(w, h) / 2, (per_image, 2))
        rand = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        props = np.concatenate([jitter, rand])[:per_image]
        props[:, 0::2] = props[:, 0::2].clip(0, w - 1)
        props[:, 1::2] = props[:, 1::2].clip(0, h - 1)
        rows.append(np.concatenate([props, rng.uniform(0, 1, (len(props), 1)).astype(np.float32)], 1))
    out.write_bytes(pickle.dumps(rows))
    return out


def _point_datasets(node: Any, ann: str, img: str, classes: tuple[str, ...], data_root: Path) -> Any:
    if isinstance(node, dict):
        if "ann_file" in node:
            out = {k: v for k, v in node.items() if k in COCO_DATASET_KEYS}
            out.update(type="CocoDataset", ann_file=ann, img_prefix=img, classes=classes)
            if "seg_prefix" in out:  # HTC / SCNet semantic heads
                out["seg_prefix"] = str(semantic_maps(Path(ann), data_root / f"semantic_{Path(ann).stem}")) + "/"
                out.pop("seg_suffix", None)
            if out.get("proposal_file"):  # Fast R-CNN
                out["proposal_file"] = str(proposals(Path(ann), data_root / f"proposals_{Path(ann).stem}.pkl"))
            out["pipeline"] = _point_datasets(out.get("pipeline", []), ann, img, classes, data_root)
            return out
        return {k: _point_datasets(v, ann, img, classes, data_root) for k, v in node.items()}
    if isinstance(node, list):
        return [_point_datasets(v, ann, img, classes, data_root) for v in node]
    return node


def adapt(path: Path, data_root: Path, max_side: int = 128, num_train: int = 4, samples_per_gpu: int = 2) -> dict[str, Any]:
    """The config at ``path`` (mmcv ``Config.fromfile``) with the overrides of the module docstring, as a dict
    (``num_train`` synthetic train images, ``samples_per_gpu`` per batch)."""
    from mmcv import Config

    from detlight.data.synthetic import SyntheticCocoSpec, ensure_synthetic_coco

    paths = ensure_synthetic_coco(SyntheticCocoSpec(root=str(data_root), num_train=num_train, num_val=2,
                                                    image_size=max_side))
    classes = tuple(paths.classes)
    cfg = Config.fromfile(str(path)).to_dict()
    if (cfg["model"].get("backbone") or {}).get("type") == "SSDVGG":  # its extra layers need the full input
        anchors = (cfg["model"].get("bbox_head") or {}).get("anchor_generator") or {}
        max_side = max(max_side, int(anchors.get("input_size", 300)))
    cfg.pop("model_wrapper_cfg", None)
    cfg["model"] = _model_fixes(cfg["model"], len(classes))
    teacher = cfg["model"].get("teacher_config")
    if isinstance(teacher, str):  # knowledge distillation: mmdet's path is relative to its repository root
        rel = Path(teacher)
        rel = rel.relative_to("configs") if rel.parts[:1] == ("configs",) else rel
        adapted = adapt(config_root() / rel, data_root, max_side, num_train, samples_per_gpu)
        cfg["model"]["teacher_config"] = str(write_py(adapted, Path(data_root) / f"teacher_{rel.stem}.py"))
    for key in ("train_cfg", "test_cfg"):
        if isinstance(cfg.get(key), dict):
            cfg[key] = _model_fixes(cfg[key], len(classes))
    data = cfg["data"]
    for split, ann, img in (("train", paths.train_ann, paths.train_img_prefix),
                            ("val", paths.val_ann, paths.val_img_prefix), ("test", paths.val_ann, paths.val_img_prefix)):
        if split in data:
            ds = data[split]
            if isinstance(ds, dict) and isinstance(ds.get("ann_file"), (list, tuple)):
                ds["ann_file"] = ds["ann_file"][0]
            data[split] = _point_datasets(ds, str(ann), str(img) + "/", classes, Path(data_root))
    data["samples_per_gpu"] = samples_per_gpu
    data["workers_per_gpu"] = 0
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        if isinstance(data.get(key), dict):
            data[key]["workers_per_gpu"] = 0
            data[key].pop("persistent_workers", None)
    data["val_dataloader"] = {**(data.get("val_dataloader") or {}), "samples_per_gpu": 1}
    cfg["data"] = _scale_sizes(data, max_side)
    for key in ("train_pipeline", "test_pipeline", "img_scale", "img_scales"):
        cfg.pop(key, None)  # copies already resolved into `data`
    if cfg.get("custom_hooks"):
        cfg["custom_hooks"] = _scale_sizes(cfg["custom_hooks"], max_side)
    evaluation = dict(cfg.get("evaluation") or {})
    metric = evaluation.get("metric", "bbox")
    metrics = [metric] if isinstance(metric, str) else list(metric)
    metrics = [m for m in metrics if m in COCO_METRICS] or ["bbox"]
    cfg["evaluation"] = {"interval": 1, "metric": metrics if len(metrics) > 1 else metrics[0]}
    cfg["runner"] = {"type": "EpochBasedRunner", "max_epochs": 1}
    cfg.pop("total_epochs", None)
    cfg["log_config"] = {"interval": 1, "hooks": [{"type": "TextLoggerHook"}]}
    cfg["checkpoint_config"] = {"interval": 1}
    cfg["load_from"] = None
    cfg["resume_from"] = None
    cfg.pop("auto_scale_lr", None)
    cfg["workflow"] = [("train", 1)]
    return cfg


def write_py(cfg: dict[str, Any], out: Path) -> Path:
    """``cfg`` as a ``.py`` config of plain literals (``name = <repr>``)."""
    out.write_text("".join(f"{k} = {v!r}\n" for k, v in cfg.items() if re.fullmatch(r"[A-Za-z_]\w*", k)))
    return out


def classify(err: BaseException) -> str:
    """One line naming why a config failed."""
    name = type(err).__name__
    msg = " ".join(str(err).split())
    if name == "OpNotProvidedError":
        match = re.search(r"`?(\w+)`? is not provided|op `?(\w+)`?", msg)
        return f"op not provided: {next(g for g in match.groups() if g) if match else msg[:80]}"
    if "is not in the" in msg and "registry" in msg:
        match = re.search(r"(\w+) is not in the (\w+) registry", msg)
        kind = match.group(2) if match else ""
        what = "dataset type" if kind == "dataset" else "registry"
        return f"{what}: {match.group(1) if match else msg[:80]} ({kind})"
    if isinstance(err, ImportError) and not msg:
        missing = err.name or (err.__cause__.name if isinstance(err.__cause__, ImportError) else None)
        return f"ImportError: module {missing or '?'} not installed"
    return f"{name}: {msg[:160]}"


#: failures whose cause is outside detlight: (pattern on the reason, the cause as the table names it)
OUTSIDE = (
    (r"albumentations is not installed", "optional package not installed: albumentations"),
    (r"panopticapi is not installed", "optional package not installed: panopticapi (panoptic datasets)"),
    (r"instaboostfast", "optional package not installed: instaboostfast"),
    (r"module (mmcls|timm)\S* not installed|No module named '(mmcls|timm)|ImportError: module \? not installed",
     "optional package not installed: mmcls (ConvNeXt / timm backbones via custom_imports)"),
    (r"Unknown hook type `RFSearchHook`", "needs mmcv >= 1.7.1 (RFSearchHook); mmdet3d 1.0 pins mmcv <= 1.7.0"),
    (r"FasterRCNN.__init__\(\) got an unexpected keyword argument 'bbox_head'",
     "mmdet 2.28.2's own config is broken (a RetinaNet head on the Faster R-CNN base)"),
    (r"upper bound and lower bound inconsistent with step sign",
     "mmdet's CPU mask pasting (_do_paste_mask, skip_empty) fails on a box outside the image"),
)


def outside_cause(reason: str) -> str | None:
    """The cause of :data:`OUTSIDE` that ``reason`` names, if any."""
    return next((cause for pattern, cause in OUTSIDE if re.search(pattern, reason)), None)


def run_one(config: Path, work: Path, max_side: int = 128) -> dict[str, Any]:
    """Adapt ``config`` and run ``detlight fit`` for 2 train iterations and 1 val step; a result dict."""
    import detlight.openmmlab

    detlight.openmmlab.install_ops()
    start = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    try:
        cfg = adapt(config, work.parent / "data", max_side)
        py = write_py(cfg, work / f"{config.stem}.py")
        from lightning.pytorch import Callback

        from detlight.api import fit

        class ValSteps(Callback):
            count = 0

            def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
                ValSteps.count += 1

        trainer, module = fit(str(py), callbacks=[ValSteps()], overrides={
            "trainer.default_root_dir": str(work / "run"), "trainer.max_steps": 2, "trainer.limit_train_batches": 2,
            "trainer.limit_val_batches": 1,
            "trainer.num_sanity_val_steps": 0, "trainer.enable_progress_bar": False})
        steps = int(trainer.global_step)
        status = "ok" if steps == 2 and ValSteps.count >= 1 else "fail"
        reason = "" if status == "ok" else f"ran {steps} train iterations, {ValSteps.count} val steps"
    except BaseException as err:  # noqa: BLE001 - every failure is a table row
        status, reason = "fail", classify(err)
    finally:
        for ckpt in work.rglob("*.ckpt"):  # hundreds of MB per config: the table needs none of them
            ckpt.unlink(missing_ok=True)
    return {"status": status, "reason": reason, "seconds": round(time.perf_counter() - start, 1)}


def _family(config: str) -> str:
    return config.split("/", 1)[0]


def summary(lines: list[dict[str, Any]]) -> str:
    """Markdown tables: pass rate by family, failures by reason."""
    fam: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: Counter[str] = Counter()
    for line in lines:
        fam[_family(line["config"])][line["status"]] += 1
        if line["status"] != "ok" and not outside_cause(line["reason"]):
            reasons[re.sub(r"\d+", "N", line["reason"])[:110]] += 1
    ok = sum(c["ok"] for c in fam.values())
    outside = Counter(c for line in lines if line["status"] != "ok" and (c := outside_cause(line["reason"])))
    n_out = sum(outside.values())
    rest = len(lines) - ok - n_out
    out = [f"{ok}/{len(lines)} configs ran ({100 * ok / max(1, len(lines)):.0f} %); {n_out} failed for a cause "
           f"outside detlight; {rest} failed in detlight or its op provider "
           f"({100 * ok / max(1, len(lines) - n_out):.0f} % of the configs whose cause is not outside)", "",
           "| cause outside detlight | configs |", "|---|---|"]
    out += [f"| {c} | {n} |" for c, n in outside.most_common()]
    out += ["", "| family | ok | failed |", "|---|---|---|"]
    out += [f"| {f} | {c['ok']} | {sum(c.values()) - c['ok']} |" for f, c in sorted(fam.items())]
    out += ["", "| other reason | configs |", "|---|---|"]
    out += [f"| {r} | {n} |" for r, n in reasons.most_common()]
    return "\n".join(out)


class Worker:
    """One child process that runs configs one after another (imports paid once), restarted after a crash, a
    timeout or ``recycle`` configs (bounded memory)."""

    def __init__(self, work: Path, max_side: int, timeout: float, recycle: int) -> None:
        self.work, self.max_side, self.timeout, self.recycle = work, max_side, timeout, recycle
        self.proc: subprocess.Popen[str] | None = None
        self.served = 0
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.tail: list[str] = []

    def _start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", "--work", str(self.work), "--max-side", str(self.max_side)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env={**os.environ, "PYTHONWARNINGS": "ignore"})
        self.lines = queue.Queue()
        self.served = 0
        proc, lines = self.proc, self.lines

        def pump() -> None:
            assert proc.stdout is not None
            for ln in proc.stdout:
                lines.put(ln.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def run(self, config: Path) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None or self.served >= self.recycle:
            self.stop()
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        start = time.perf_counter()
        self.tail = []
        self.proc.stdin.write(f"{config}\n")
        self.proc.stdin.flush()
        self.served += 1
        while True:
            left = self.timeout - (time.perf_counter() - start)
            try:
                ln = self.lines.get(timeout=max(0.01, left))
            except queue.Empty:
                self.stop()
                return {"status": "fail", "reason": "timeout", "seconds": self.timeout}
            if ln is None:
                rc = self.proc.wait()
                self.proc = None
                tail = next((t for t in reversed(self.tail) if t.strip()), "no output")
                return {"status": "fail", "reason": f"crashed (rc {rc}): {tail[:160]}",
                        "seconds": round(time.perf_counter() - start, 1)}
            if ln.startswith("ZOO-RESULT "):
                return dict(json.loads(ln.split(" ", 1)[1]))
            self.tail = (self.tail + [ln])[-20:]


def serve(work: Path, max_side: int) -> None:
    """Child side of :class:`Worker`: one config path per stdin line, one ``ZOO-RESULT`` line per config."""
    for raw in sys.stdin:
        config = Path(raw.strip())
        result = run_one(config, work / config.stem, max_side)
        print("ZOO-RESULT " + json.dumps(result), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="openmmlab_zoo.jsonl", help="resumable jsonl of results")
    parser.add_argument("--sample", action="store_true", help="one config per family folder")
    parser.add_argument("--representative", action="store_true", help="the 20 configs of the marked test")
    parser.add_argument("--configs", nargs="*", help="configs relative to mmdet's configs folder")
    parser.add_argument("--shuffle", type=int, default=None, help="run in a random order with this seed")
    parser.add_argument("--part", default="0/1", help="K/N: run every N-th config from the K-th (after --shuffle), so "
                        "N processes can share one --out file")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--max-side", type=int, default=128)
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--summary", action="store_true", help="print the tables of --out and stop")
    parser.add_argument("--recycle", type=int, default=20, help="configs per worker process before a fresh one")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(Path(args.work), args.max_side)
        return
    out = Path(args.out)
    done = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    if args.summary:
        print(summary(done))
        return
    root = config_root()
    configs = ([root / c for c in args.configs] if args.configs else [root / c for c in REPRESENTATIVE]
               if args.representative else sample_configs(root) if args.sample else leaf_configs(root))
    if args.shuffle is not None:  # a partial run is then an unbiased sample
        import random

        random.Random(args.shuffle).shuffle(configs)
    k, n = (int(x) for x in args.part.split("/"))
    configs = configs[k::n]
    seen = {d["config"] for d in done}
    todo = sum(str(c.relative_to(root)) not in seen for c in configs)
    print(f"{len(configs)} configs, {len(configs) - todo} already in {out}, {todo} to run", flush=True)
    scratch = Path(args.work or tempfile.mkdtemp(prefix="detlight-zoo-"))
    worker = Worker(scratch, args.max_side, args.timeout, args.recycle)
    for i, config in enumerate(configs):
        rel = str(config.relative_to(root))
        if rel in seen:
            continue
        result = worker.run(config)
        line = {"config": rel, **result}
        with out.open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(f"[{i + 1}/{len(configs)}] {rel}: {result['status']} {result['reason']} ({result['seconds']} s)",
              flush=True)
        done.append(line)
    worker.stop()
    print(summary(done))


if __name__ == "__main__":
    main()
