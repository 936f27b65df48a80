"""One phantom (`make_phantom`) and a balanced, seeded set of them (`generate_phantoms`), in any style."""

import difflib

import numpy as np

from ptx_keras.constants import IMAGE_SIZE, PHANTOM_POSITIVE_FRACTION, PHANTOM_STYLES
from ptx_keras.data.phantoms import classic, processing, styled
from ptx_keras.data.phantoms._common import as_hw, check_bit_depth, check_conspicuity, check_n, check_seed

__all__ = [
    "KINDS",
    "SIDES",
    "SIZE_CLASSES",
    "STYLE_STREAMS",
    "balanced_labels",
    "check_generate_kwargs",
    "check_style",
    "generate_phantoms",
    "make_phantom",
    "quantise",
    "render_phantom",
    "sample_id",
    "sample_stream",
]


KINDS = ("apical", "lateral", "apicolateral", "basal", "bilateral")  # basal: randomised styles only
SIZE_CLASSES = classic.SIZE_CLASSES
SIDES = classic.SIDES
# Salt of each randomised style's random streams: the same seed never gives a `heldout` phantom the stream
# of a `varied` one (and classic streams, unsalted, stay as they always were).
STYLE_STREAMS = {"varied": 1, "heldout": 2}


def check_style(style):
    """Returns `style` if it is one of `PHANTOM_STYLES`; raises ValueError with a suggestion otherwise."""
    if not isinstance(style, str) or style not in PHANTOM_STYLES:
        close = difflib.get_close_matches(str(style), PHANTOM_STYLES, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"style must be one of {PHANTOM_STYLES}. Received: style={style!r}.{hint}")
    return style


def quantise(intensity, bits):
    """Float intensity in [0, 1] -> unsigned integers of `bits` significant bits (uint8 for 8, else uint16)."""
    top = (1 << bits) - 1
    return np.rint(np.clip(intensity, 0.0, 1.0) * top).astype(np.uint8 if bits <= 8 else np.uint16)


def _salted(seed, style):
    """The seed a randomised style's stream starts from: integer seeds get the style's salt appended."""
    if style == "classic" or seed is None:
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [int(seed), STYLE_STREAMS[style]]
    if isinstance(seed, (list, tuple)) and all(isinstance(v, (int, np.integer)) for v in seed):
        return [*map(int, seed), STYLE_STREAMS[style]]
    return seed


def make_phantom(size=IMAGE_SIZE, rng=None, *, positive=None, seed=None, bit_depth=8, conspicuity=1.0, style="classic"):
    """Renders one synthetic chest radiograph with its pneumothorax mask.

    Args:
        size: Image side in pixels, or `(height, width)`; at least 32. Geometry is normalised, so the
            same seed gives the same anatomy at every size.
        rng: A `numpy.random.Generator` to draw from (advanced by the call). Mutually exclusive with `seed`.
        positive: True for a pneumothorax, False for none, None to draw it with probability 0.5.
        seed: Integer seed (or anything `numpy.random.default_rng` accepts) for a reproducible image. For
            the randomised styles an integer seed is salted with the style, so `varied` and `heldout`
            phantoms of one seed share no random stream.
        bit_depth: 8 (uint8 image) or 16 (uint16 image, full 0..65535 range).
        conspicuity: How visible a pneumothorax is; 1 (default) is the calibrated hard setting described in
            docs/data.md. Larger values widen the air band (x `1 + 0.75 (c - 1)`), darken it (x c) and
            brighten the pleural line (x `1 + 0.5 (c - 1)`); the anatomy and the random draws are unchanged.
            The quick start uses 2 so that a small CPU model learns the task in minutes.
        style: `"classic"` (the original generator, one look, unchanged bit for bit), `"varied"` (randomised
            anatomy, exposure, processing, positioning, devices and mimics: the training distribution) or
            `"heldout"` (the same finding in other ranges, devices and processing: for testing a model
            trained on `varied` on a style it never saw). docs/data.md lists every factor.

    Returns:
        `(image, mask, info)`: `image` a 2-D uint8/uint16 array `(height, width)`, `mask` a bool array of the
        same shape (empty for a negative), and `info` a dict with `style`, `positive` (bool), `kind`
        (`"none"`, `"apical"`, `"lateral"`, `"apicolateral"`, `"basal"` (randomised styles) or
        `"bilateral"`), `size_class` (`"none"`, `"small"`, `"moderate"`, `"large"`; the larger side's for
        bilateral), `sides` (tuple of the patient's sides, `"right"` = image left), `area_fraction` (mask
        pixels / image pixels) and `regions` (one dict per side: side, kind, size_class, depth in image
        widths). The randomised styles add `mimics` and `devices` (names drawn) and `processing` (tone
        curve, unsharp-mask radius and amount, noise kind and level, grid).

    Raises:
        ValueError: If `size`, `bit_depth`, `positive`, `conspicuity` or `style` is invalid, or both `rng`
            and `seed` are given.
    """
    image, mask, info, _ = _make_phantom_layers(
        size, rng, positive=positive, seed=seed, bit_depth=bit_depth, conspicuity=conspicuity, style=style
    )
    return image, mask, info


def _make_phantom_layers(size, rng, *, positive, seed, bit_depth, conspicuity=1.0, style="classic"):
    """`make_phantom` plus the normal (texture-bearing) lung mask, for the benchmarks and tests."""
    image, mask, info, layers = render_phantom(
        size,
        rng,
        positive=positive,
        seed=seed,
        bits=check_bit_depth(bit_depth),
        conspicuity=conspicuity,
        style=style,
    )
    return image, mask, info, layers["normal_lung"]


def render_phantom(size, rng, *, positive, seed, bits, conspicuity=1.0, style="classic"):
    """The one entry point behind `make_phantom`: any style, `bits` in (8, 12, 16) (12 for DICOM export).

    Returns:
        `(image, mask, info, layers)`; `layers` holds `normal_lung` for every style and, for the randomised
        ones, the drawn pneumothorax (`ptx_alpha`), the skin-fold and mimic layers (see `styled.render`).
    """
    hw = as_hw(size)
    style = check_style(style)
    if bits not in (8, 12, 16) or isinstance(bits, bool):
        raise ValueError(f"bits must be 8, 12 or 16. Received: bits={bits!r}")
    if positive is not None and not isinstance(positive, (bool, np.bool_)):
        raise ValueError(f"positive must be True, False or None. Received: positive={positive!r}")
    if rng is not None and seed is not None:
        raise ValueError(f"Pass either rng or seed, not both. Received: rng={rng!r}, seed={seed!r}")
    if rng is None:
        rng = np.random.default_rng(_salted(seed, style))
    elif not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator. Received: rng={rng!r}")
    if positive is None:
        positive = bool(rng.random() < PHANTOM_POSITIVE_FRACTION)
    conspicuity = check_conspicuity(conspicuity)
    extra = {}
    if style == "classic":
        params = classic.draw_anatomy(rng)
        regions = classic.draw_pneumothorax(rng, bool(positive))
        if conspicuity != 1.0:
            # Scaled after the draws so that the random streams, hence the anatomy, stay the same.
            params["ptx_air"] *= conspicuity
            params["a_line"] *= 1.0 + 0.5 * (conspicuity - 1.0)
            for region in regions:
                region["depth"] *= 1.0 + 0.75 * (conspicuity - 1.0)
        image, mask, normal_lung = classic.render(params, regions, rng, hw, 16 if bits == 12 else bits)
        if bits == 12:  # rounded from the 16-bit rendering
            image = np.minimum((image.astype(np.uint32) * 4095 + 32767) // 65535, 4095).astype(np.uint16)
        layers = {"normal_lung": normal_lung}
    else:
        intensity, layers, regions, s, drawn = styled.draw_and_render(style, rng, bool(positive), hw, conspicuity)
        image, mask = quantise(intensity, bits), layers["mask"]
        extra = {"mimics": drawn["mimics"], "devices": drawn["devices"], "processing": processing.summary(s)}
    if regions:
        kind = "bilateral" if len(regions) > 1 else regions[0]["kind"]
        size_class = max((r["size_class"] for r in regions), key=SIZE_CLASSES.index)
    else:
        kind, size_class = "none", "none"
    info = {
        "style": style,
        "positive": bool(positive),
        "kind": kind,
        "size_class": size_class,
        "sides": tuple(r["side"] for r in regions),
        "area_fraction": float(mask.mean()),
        "regions": [
            {"side": r["side"], "kind": r["kind"], "size_class": r["size_class"], "depth": r["depth"]} for r in regions
        ],
        **extra,
    }
    return image, mask, info, layers


# ----------------------------------------------------------------------------------------------------
# Sets
# ----------------------------------------------------------------------------------------------------
def balanced_labels(n, seed):
    """Exactly n // 2 positives (one more with probability 1/2 when n is odd), in a seeded random order."""
    rng = np.random.default_rng([seed, n, 0x50544])  # a stream of its own, apart from the samples'
    positives = n // 2 + (n % 2 if rng.random() < PHANTOM_POSITIVE_FRACTION else 0)
    labels = np.zeros(n, bool)
    labels[:positives] = True
    rng.shuffle(labels)
    return labels


def sample_id(index):
    """The id of phantom number `index` in a generated set: `"phantom_00042"`."""
    return f"phantom_{index:05d}"


def sample_stream(seed, index, style):
    """The random stream of sample `index` of a set: (seed, index), plus the style's salt if randomised."""
    return np.random.default_rng([seed, index] if style == "classic" else [seed, index, STYLE_STREAMS[style]])


def check_generate_kwargs(kwargs):
    """Validates `generate_phantoms`' keywords; returns `(bit_depth, conspicuity, style)`."""
    reserved = sorted(set(kwargs) & {"rng", "seed", "positive"})
    if reserved:
        raise ValueError(f"generate_phantoms sets {reserved} itself. Received: {reserved[0]}={kwargs[reserved[0]]!r}")
    unknown = sorted(set(kwargs) - {"bit_depth", "conspicuity", "style"})
    if unknown:
        raise ValueError(f"Unknown argument for make_phantom. Received: {unknown[0]}={kwargs[unknown[0]]!r}")
    return (
        check_bit_depth(kwargs.get("bit_depth", 8)),
        check_conspicuity(kwargs.get("conspicuity", 1.0)),
        check_style(kwargs.get("style", "classic")),
    )


def generate_phantoms(n, size=IMAGE_SIZE, seed=0, **kwargs):
    """Yields a balanced, seeded set of phantoms.

    Sample `i` is drawn from its own stream (`seed`, `i`, and the style's salt for the randomised styles),
    so a sample's anatomy does not depend on `n`; which samples are positive is a seeded shuffle with
    exactly `n // 2` positives when `n` is even.

    Args:
        n: Number of images (>= 1).
        size: Image side or `(height, width)`, as in `make_phantom`.
        seed: Non-negative integer seed of the whole set.
        **kwargs: Passed to `make_phantom` (`bit_depth`, `conspicuity`, `style`).

    Yields:
        `(sample_id, image, mask, info)` tuples, ids `"phantom_00000"`, `"phantom_00001"`, ...

    Raises:
        ValueError: If `n`, `size`, `seed` or a keyword is invalid (checked before the first image).
    """
    n = check_n(n)
    seed = check_seed(seed)
    as_hw(size)
    _, _, style = check_generate_kwargs(kwargs)
    labels = balanced_labels(n, seed)

    def samples():
        for index in range(n):
            rng = sample_stream(seed, index, style)
            image, mask, info = make_phantom(size, rng, positive=bool(labels[index]), **kwargs)
            yield sample_id(index), image, mask, info

    return samples()
