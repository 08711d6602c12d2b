"""Dense 3×3 convolutions of HRNet / ADP-C / UperNet: oneDNN's Conv2D against keras_visrec.layers.Conv2D.

``import keras_visrec`` turns TensorFlow's oneDNN rewrites on, which send ``tf.nn.conv2d`` to
oneDNN; :class:`keras_visrec.layers.Conv2D` convolves through TensorFlow's generic ``Conv`` op
instead (the Eigen kernel). This times both, forward only, in one process, and prints the ratio.
A call over ``--cap`` seconds is stopped being repeated and printed as a lower bound.

    .venv/bin/python bench/conv_onednn.py
"""

import argparse
import time

SHAPES = (  # (input NHWC, output channels): HRNet-W48 at 1024x2048, HRNet-W18 at 512, UperNet-T at 512
    ((1, 256, 512, 256), 48), ((1, 256, 512, 48), 48), ((1, 128, 256, 96), 96), ((1, 64, 128, 192), 192),
    ((1, 128, 128, 512), 512), ((8, 56, 56, 96), 96),
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per way (best counts; default 2)")
    parser.add_argument("--cap", type=float, default=30.0, help="seconds after which a way is not repeated")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.cap <= 0:
        parser.error("--repeats must be >= 1 and --cap > 0")

    import keras_visrec  # noqa: F401  first: it turns TensorFlow's oneDNN rewrites on
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.util import _pywrap_util_port

    from keras_visrec.layers.conv import tf_conv2d

    print(f"oneDNN rewrites on: {_pywrap_util_port.IsMklEnabled()}; tensorflow {tf.__version__}")
    print(f"{'input':>22s} {'out':>4s} | {'oneDNN Conv2D ms':>16s} | {'generic Conv ms':>15s} | ratio")
    rng = np.random.default_rng(0)
    for shape, out in SHAPES:
        x = tf.constant(rng.normal(size=shape).astype("float32"))
        kernel = tf.constant(rng.normal(size=(3, 3, shape[-1], out)).astype("float32"))
        ways = {"onednn": tf.function(lambda: tf.nn.conv2d(x, kernel, 1, "SAME")),
                "generic": tf.function(lambda: tf_conv2d(x, kernel, (1, 1), "SAME"))}
        best = {}
        for name, fn in ways.items():
            times = []
            for _ in range(args.repeats + 1):  # the first call traces
                start = time.perf_counter()
                fn().numpy()
                times.append(time.perf_counter() - start)
                if times[-1] > args.cap:
                    break
            best[name] = (min(times[1:]) if len(times) > 1 else times[0], len(times) == 1)
        (a, a_capped), (b, _) = best["onednn"], best["generic"]
        print(f"{str(shape):>22s} {out:>4d} | {('>' if a_capped else ' ') + f'{1000 * a:.1f}':>16s} | "
              f"{1000 * b:>15.1f} | {('>' if a_capped else '') + f'{a / b:.2f}x'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
