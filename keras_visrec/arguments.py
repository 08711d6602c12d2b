"""The arguments every model builder shares, validated in one place.

keras.applications' vocabulary (``include_top, weights, input_tensor, input_shape, pooling,
classes, classifier_activation, include_preprocessing``) plus ``name``, with the same accepted
values and the same error messages in every family. A builder calls these before it creates a
layer, so a wrong argument never leaves a half-built model behind.
"""

import numbers

import keras

__all__ = [
    "POOLINGS",
    "check_choice",
    "model_inputs",
    "validate_classes",
    "validate_classifier_activation",
    "validate_input_shape",
    "validate_name",
    "validate_pooling",
    "validate_rate",
]

POOLINGS = (None, "avg", "max")


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def validate_classes(classes, *, minimum=1):
    """``classes`` as a Python int (numpy integers accepted); at least ``minimum``."""
    if not _is_int(classes) or classes < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"`classes` must be {what}; received classes={classes!r}.")
    return int(classes)


def validate_pooling(pooling):
    """``pooling``: None, "avg" or "max" (applies when ``include_top=False``)."""
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}; received pooling={pooling!r}.")
    return pooling


def validate_classifier_activation(classifier_activation):
    """``classifier_activation``: None, a Keras activation name or a callable."""
    if classifier_activation is None or callable(classifier_activation):
        return classifier_activation
    try:
        keras.activations.get(classifier_activation)
    except (ValueError, TypeError) as error:
        raise ValueError(
            "`classifier_activation` must be None, a Keras activation name (e.g. 'softmax') or a "
            f"callable; received classifier_activation={classifier_activation!r}."
        ) from error
    return classifier_activation


def validate_name(name):
    """``name``: a non-empty string (it prefixes every layer name)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"`name` must be a non-empty string; received name={name!r}.")
    return name


def validate_rate(value, argument, *, high=1.0, high_inclusive=False):
    """A rate in ``[0, high)`` (or ``[0, high]``) named ``argument`` in the error."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0.0 <= value
    ok = ok and (value <= high if high_inclusive else value < high)
    if not ok:
        interval = f"[0, {high}]" if high_inclusive else f"[0, {high})"
        raise ValueError(f"`{argument}` must be a number in {interval}; received {argument}={value!r}.")
    return float(value)


def check_choice(value, argument, choices):
    """``value`` if it is one of ``choices``; else a ValueError naming ``argument`` and the choices."""
    if value not in choices:
        raise ValueError(f"`{argument}` must be one of {tuple(choices)}; received {argument}={value!r}.")
    return value


def validate_input_shape(input_shape, *, input_tensor=None, default=(None, None, 3), multiple=1,
                         minimum=None, arch="this model"):
    """``(height, width, 3)`` channels-last, sides None or multiples of ``multiple``.

    Taken from ``input_tensor`` when ``input_shape`` is None; ``default`` when both are.
    """
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        input_shape = default
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(f"`input_shape` must be a tuple (height, width, 3); received input_shape={input_shape!r}.")
    if len(shape) != 3:
        raise ValueError(f"`input_shape` must be (height, width, 3) (channels last); received input_shape={shape}.")
    if shape[-1] != 3:
        raise ValueError(f"`input_shape` must have 3 channels (RGB, channels last); received input_shape={shape}.")
    minimum = multiple if minimum is None else minimum
    for side in shape[:2]:
        if side is None:
            continue
        if not _is_int(side) or side < minimum or side % multiple:
            rule = f"multiples of {multiple} that are >= {minimum}" if multiple > 1 else f"integers >= {minimum}"
            raise ValueError(
                f"`input_shape` height and width must be None or {rule} for {arch}; received input_shape={shape}."
            )
    return tuple(None if side is None else int(side) for side in shape[:2]) + (3,)


def model_inputs(input_tensor, input_shape):
    """``(inputs, model_inputs)``: the tensor to build on and what ``keras.Model`` takes as inputs."""
    if input_tensor is None:
        inputs = keras.Input(shape=input_shape)
        return inputs, inputs
    if not keras.backend.is_keras_tensor(input_tensor):
        inputs = keras.Input(tensor=input_tensor, shape=input_shape)
        return inputs, inputs
    return input_tensor, keras.utils.get_source_inputs(input_tensor)
