"""keras_visrec.converters — read upstream checkpoints (without torch) and map their keys onto Keras models."""
