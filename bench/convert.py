"""Benchmark: read and convert a ConvNeXt-B-sized checkpoint (random weights, official keys).

    .venv/bin/python bench/convert.py

Each measurement runs in a fresh subprocess so peak RSS (``VmHWM``, Linux) belongs to it alone;
"peak rss added" is the peak (VmHWM) minus the resident set right after the imports the step
needs (TensorFlow for the conversion) — an upper bound, since an import-time peak counts too.
The conversion step includes the Keras model's own variables (1× the checkpoint). Anchor: ``torch.load(weights_only=True)`` of the same file in the same run, when torch
is installed. Goal (issue 3): conversion < 20 s and peak RSS added < 3× the checkpoint size.
Figures are taken on a CPU shared with other jobs, so treat them as indicative.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

DEPTHS, DIMS = (3, 3, 27, 3), (128, 256, 512, 1024)


def _write_checkpoint(path):
    """A ConvNeXt-B state dict with random float32 weights in the official layout."""
    import numpy as np

    rng = np.random.default_rng(0)
    shapes = {"downsample_layers.0.0.weight": (DIMS[0], 3, 4, 4), "downsample_layers.0.0.bias": (DIMS[0],),
              "downsample_layers.0.1.weight": (DIMS[0],), "downsample_layers.0.1.bias": (DIMS[0],)}
    for stage in range(1, 4):
        shapes[f"downsample_layers.{stage}.0.weight"] = (DIMS[stage - 1],)
        shapes[f"downsample_layers.{stage}.0.bias"] = (DIMS[stage - 1],)
        shapes[f"downsample_layers.{stage}.1.weight"] = (DIMS[stage], DIMS[stage - 1], 2, 2)
        shapes[f"downsample_layers.{stage}.1.bias"] = (DIMS[stage],)
    for stage, (depth, dim) in enumerate(zip(DEPTHS, DIMS)):
        for block in range(depth):
            p = f"stages.{stage}.{block}"
            shapes.update({f"{p}.dwconv.weight": (dim, 1, 7, 7), f"{p}.dwconv.bias": (dim,),
                           f"{p}.norm.weight": (dim,), f"{p}.norm.bias": (dim,),
                           f"{p}.pwconv1.weight": (4 * dim, dim), f"{p}.pwconv1.bias": (4 * dim,),
                           f"{p}.pwconv2.weight": (dim, 4 * dim), f"{p}.pwconv2.bias": (dim,), f"{p}.gamma": (dim,)})
    shapes.update({"norm.weight": (DIMS[-1],), "norm.bias": (DIMS[-1],), "head.weight": (1000, DIMS[-1]),
                   "head.bias": (1000,)})
    state = {k: rng.standard_normal(s, dtype=np.float32) * 0.02 for k, s in shapes.items()}
    try:
        import torch

        torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}}, path)
        return path, True
    except ImportError:
        from safetensors.numpy import save_file

        path = path.replace(".pth", ".safetensors")
        save_file(state, path)
        return path, False


_CHILD = r"""
import json, sys, time
step, path = sys.argv[1], sys.argv[2]
def rss_mb():  # peak resident set so far (VmHWM of this process image), MiB
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
def current_mb():  # resident set now (VmRSS), MiB
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
if step == "read":
    from keras_visrec.converters.pytorch_reader import load_pytorch_checkpoint
    base = current_mb(); start = time.perf_counter()
    state = load_pytorch_checkpoint(path)
elif step == "torch_load":
    import torch
    base = current_mb(); start = time.perf_counter()
    state = torch.load(path, map_location="cpu", weights_only=True)
else:
    import keras_visrec
    from keras_visrec.convnext import ConvNeXtBase
    from keras_visrec.converters.loading import load_checkpoint_into_model
    import tensorflow
    base = current_mb(); start = time.perf_counter()
    model = ConvNeXtBase(include_preprocessing=False)
    built = time.perf_counter()
    after_build = current_mb(); peak_build = rss_mb()
    load_checkpoint_into_model(model, path, include_top=True)
    print(json.dumps({"build_s": built - start, "load_s": time.perf_counter() - built,
                      "build_rss_added_mb": after_build - base,
                      "load_peak_rss_added_mb": rss_mb() - max(after_build, 0)}), flush=True)
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "peak_rss_mb": rss_mb(), "peak_rss_added_mb": rss_mb() - base}))
"""


def _measure(step, path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", _CHILD, step, path], capture_output=True, text=True, env=env,
                         check=True).stdout.strip().splitlines()
    result = json.loads(out[-1])
    for line in out[:-1]:
        if line.startswith("{"):
            result.update(json.loads(line))
    return result


def main():
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        path, have_torch = _write_checkpoint(os.path.join(directory, "convnext_base_random.pth"))
        size_mb = os.path.getsize(path) / 2**20
        print(f"checkpoint: {os.path.basename(path)} (ConvNeXt-B, random weights)")
        print(f"checkpoint_mb: {size_mb:.1f}")
        print(f"write_s: {time.perf_counter() - start:.2f}")
        read = _measure("read", path)
        print(f"read_s: {read['seconds']:.2f}")
        print(f"read_peak_rss_added_mb: {read['peak_rss_added_mb']:.0f}")
        print(f"read_peak_rss_added_over_checkpoint: {read['peak_rss_added_mb'] / size_mb:.2f}")
        if have_torch:
            anchor = _measure("torch_load", path)
            print(f"torch_load_s: {anchor['seconds']:.2f}")
            print(f"torch_load_peak_rss_added_mb: {anchor['peak_rss_added_mb']:.0f}")
            print(f"read_time_ratio_vs_torch_load: {read['seconds'] / anchor['seconds']:.2f}")
            print(f"read_rss_ratio_vs_torch_load: {read['peak_rss_added_mb'] / max(anchor['peak_rss_added_mb'], 1):.2f}")
        else:
            print("torch_load_s: n/a (torch not installed; the checkpoint was written as safetensors)")
        convert = _measure("convert", path)
        print(f"convert_s (build ConvNeXt-B + read + map + assign): {convert['seconds']:.2f}")
        print(f"convert_build_s (keras_visrec.ConvNeXtBase, not the converter): {convert['build_s']:.2f}")
        print(f"convert_load_s (read + map + assign): {convert['load_s']:.2f}")
        print(f"convert_build_rss_added_mb (the model's own variables): {convert['build_rss_added_mb']:.0f}")
        print(f"convert_load_peak_rss_added_mb: {convert['load_peak_rss_added_mb']:.0f}")
        print(f"convert_load_peak_rss_added_over_checkpoint: {convert['load_peak_rss_added_mb'] / size_mb:.2f}")
        print(f"convert_peak_rss_mb (incl. TensorFlow): {convert['peak_rss_mb']:.0f}")
        print(f"convert_peak_rss_added_mb: {convert['peak_rss_added_mb']:.0f}")
        print(f"convert_peak_rss_added_over_checkpoint: {convert['peak_rss_added_mb'] / size_mb:.2f}")
        print("goal: convert_s < 20 and peak rss added < 3x the checkpoint "
              "(figures taken on a shared, contended CPU)")


if __name__ == "__main__":
    main()
