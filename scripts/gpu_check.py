"""Check the real GPU path of the Ray backend: two trials sharing one GPU (half each), bf16 AMP on.

Run it on a machine with a CUDA GPU:  python scripts/gpu_check.py
It starts a private local Ray, runs a tiny search with ``--gpus-per-trial 0.5``, and asserts from
the trials' own MLflow records that each trial trained on CUDA, saw exactly the GPU Ray gave it
(both the same one), and left no tensor allocated on it when it ended. Without a GPU it says so
and exits 0, so it can sit in any checklist. Exit code 1 when a check fails.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

SPACE = """\
name: gpu-check
dataset: digits
backbone: seed-cnn
plugins:
  kernel: {choices: [3, 5]}
  residual: {}
  attention: {kinds: [none, se]}
objectives: [val_accuracy]
budget: {trials: 2, epochs: 3}
search: {sampler: tpe, seed: 0}
"""


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no GPU: torch sees no CUDA device here, nothing to check (the CPU placement logic is tested by tests/test_ray_backend.py)")
        return 0
    from mlflow.tracking import MlflowClient

    import searchcore
    from searchcore.track.tracking import TAG_KIND

    with tempfile.TemporaryDirectory(prefix="searchcore-gpu-check-") as tmp:
        space = Path(tmp, "space.yaml")
        space.write_text(SPACE)
        tracking = f"sqlite:///{Path(tmp, 'mlflow.db')}"
        result = searchcore.search(space, backend="ray", gpus_per_trial=0.5, cpus_per_trial=1, max_concurrent=2, name="gpu-check",
                                   tracking_uri=tracking, ray_storage=str(Path(tmp, "ray_results")), register=False, baseline=False,
                                   progress=False)
        client = MlflowClient(tracking_uri=tracking)
        exp = client.get_experiment_by_name("gpu-check")
        runs = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(TAG_KIND) == "trial"]
        print(f"{'trial':>5}  {'state':8}  {'device':6}  {'gpu ids':7}  {'CUDA_VISIBLE':12}  {'mem after':>9}  {'val acc':>7}  {'s/epoch':>7}")
        failures = []
        for run in sorted(runs, key=lambda r: int(r.data.tags["searchcore.trial"])):
            t, m = run.data.tags, run.data.metrics
            epochs = client.get_metric_history(run.info.run_id, "epoch_seconds")
            per_epoch = sum(e.value for e in epochs) / max(1, len(epochs))
            print(f"{t['searchcore.trial']:>5}  {t['searchcore.state']:8}  {t.get('searchcore.device', '?'):6}  {t.get('searchcore.gpu_ids', '?'):7}  "
                  f"{t.get('searchcore.cuda_visible_devices', '?'):12}  {t.get('searchcore.cuda_memory_after', '?'):>9}  "
                  f"{m.get('val_accuracy', float('nan')):7.4f}  {per_epoch:7.3f}")
            if t.get("searchcore.device") != "cuda":
                failures.append(f"trial {t['searchcore.trial']} trained on {t.get('searchcore.device')}, not CUDA")
            gpus = t.get("searchcore.gpu_ids", "")
            if len(gpus.split(",")) != 1 or not gpus or t.get("searchcore.cuda_visible_devices") != gpus:
                failures.append(f"trial {t['searchcore.trial']} saw GPUs {t.get('searchcore.cuda_visible_devices')!r}, Ray gave it {gpus!r}")
            if int(t.get("searchcore.cuda_memory_after", "-1")) != 0:
                failures.append(f"trial {t['searchcore.trial']} left {t.get('searchcore.cuda_memory_after')} bytes allocated on the GPU")
        if len(runs) != 2:
            failures.append(f"expected 2 trial records, found {len(runs)}")
        if len({r.data.tags.get("searchcore.gpu_ids") for r in runs}) != 1:
            failures.append("the two half-GPU trials were not given the same GPU")
        print(f"search: {result.counts}; AMP: the trainer autocasts to bf16 on CUDA ({torch.cuda.get_device_name(0)})")
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    if not failures:
        print("GPU check passed: two fractional trials shared one GPU on CUDA with AMP, and freed it")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
