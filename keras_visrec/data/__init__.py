"""Small real datasets that ship with installed packages, for demos, tests and CI-sized studies."""

from keras_visrec.data.digits import load_digits_images

__all__ = ["load_digits_images"]
