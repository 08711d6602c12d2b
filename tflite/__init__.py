"""keras_visrec.tflite — TFLite / Edge TPU export, the op compatibility report and the LiteRT runtime."""
