"""keras_visrec.zoo — the weights catalogue as data, its typed loader, download and cache."""
