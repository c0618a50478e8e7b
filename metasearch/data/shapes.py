"""`colour_shapes`: a built-in, procedurally generated colour data set (no files, no network).

A class is one combination of a shape (circles, ellipses, polygons,
rectangles, stars, flowers), a palette (a main hue and a second colour:
its complement, a neighbouring hue or a darker shade) and a texture drawn
on the shape in those two colours (stripes at one of four angles, checks or
dots on a straight or diagonal lattice, or rings) at one of three
frequencies; no two classes share all of them. Classes are taken from a
fixed shuffle of every combination, so the first N classes are the same
whatever the number asked for.

Every image redraws its class: the shape at a random position, size and
rotation (its texture turns with it), its colours slightly shifted, on a
random two-colour gradient background, under random lighting (a colour
cast, brightness, contrast and a shading gradient) with pixel noise. Everything follows from
a fixed data seed, so "colour_shapes" names one data set; the run's
`--seed` only changes how episodes are drawn from it. Images are rendered
with numpy in chunks of whole classes that bound the temporaries to about
16 MB. Class sets: 80/10/10 of the classes, in order.
"""

from __future__ import annotations

import math

import numpy as np

from metasearch.api import ClassSet, ClassSplits, Dataset
from metasearch.options import Option

DEFAULT_CLASSES = 600
IMAGES_PER_CLASS = 20
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

# name, polygon corners, inner radius of a star (None: regular polygon), petal depth of a
# flower (None: polygon or star), aspect ratio (height over width of the unrotated shape).
SHAPES = (
    ("circle", 48, None, None, 1.0),
    ("ellipse", 48, None, None, 0.55),
    ("triangle", 3, None, None, 1.0),
    ("square", 4, None, None, 1.0),
    ("rhombus", 4, None, None, 0.55),
    ("pentagon", 5, None, None, 1.0),
    ("hexagon", 6, None, None, 1.0),
    ("star4", 4, 0.4, None, 1.0),
    ("star5", 5, 0.45, None, 1.0),
    ("star7", 7, 0.55, None, 1.0),
    ("trefoil", 3, None, 0.45, 1.0),
    ("flower5", 5, None, 0.35, 1.0),
    ("cog", 10, None, 0.2, 1.0),
)
HUES = 18  # main hues, evenly spaced
# The second colour of a palette: the complementary hue, a neighbouring hue, a dark shade.
RELATIONS = ("complement", "neighbour", "dark")
# kind, angle in degrees (rings have none).
TEXTURES = (
    ("stripes", 0),
    ("stripes", 45),
    ("stripes", 90),
    ("stripes", 135),
    ("checks", 0),
    ("checks", 45),
    ("dots", 0),
    ("dots", 45),
    ("rings", 0),
)
FREQUENCIES = (1.0, 1.7, 2.6)  # texture periods per shape radius
MAX_CLASSES = len(SHAPES) * HUES * len(RELATIONS) * len(TEXTURES) * len(FREQUENCIES)
# Floats each rendered pixel needs at most at once (coordinates, shape, texture, RGB layers).
_FLOATS_PER_PIXEL = 24
_CHUNK_BYTES = 16 * 2**20


def combinations(num_classes: int, seed: int) -> np.ndarray:
    """The first `num_classes` of a fixed shuffle of every class combination: `[n, 5]` indices.

    Columns: shape, hue, relation, texture, frequency.
    """
    order = np.random.default_rng(seed).permutation(MAX_CLASSES)[:num_classes]
    sizes = (len(SHAPES), HUES, len(RELATIONS), len(TEXTURES), len(FREQUENCIES))
    return np.stack(np.unravel_index(order, sizes), axis=1)


def class_name(combination: np.ndarray) -> str:
    shape, hue, relation, texture, frequency = (int(i) for i in combination)
    kind, angle = TEXTURES[texture]
    return (
        f"{SHAPES[shape][0]}/hue{hue * 360 // HUES:03d}-{RELATIONS[relation]}/"
        f"{kind}{angle if kind != 'rings' else ''}-f{frequency}"
    )


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] (any equal shapes) to RGB `[..., 3]`."""
    h6 = (h % 1.0) * 6.0
    channel = [np.clip(np.abs((h6 + shift) % 6.0 - 3.0) - 1.0, 0.0, 1.0) for shift in (0, 4, 2)]
    return np.stack([v * (1.0 - s + s * c) for c in channel], axis=-1).astype(np.float32)


def _class_draws(combination: np.ndarray, count: int, size: int, rng: np.random.Generator) -> dict:
    """Per-image drawing parameters of one class (arrays of length `count`) and its grain.

    The grain is unit triangular noise `[count, size, size]` (the sum of two
    uniforms, cheaper than Gaussian), drawn last from the class's own
    generator, so a class's images never depend on the classes drawn with it.
    """
    shape, hue, relation, texture, frequency = (int(i) for i in combination)
    base_hue = (hue + rng.uniform(-0.15, 0.15)) / HUES
    saturation, value = rng.uniform(0.6, 0.95), rng.uniform(0.7, 1.0)
    hue_jitter = rng.normal(0.0, 0.02, count)
    main = _hsv_to_rgb(
        base_hue + hue_jitter,
        np.clip(saturation + rng.normal(0, 0.05, count), 0, 1),
        np.clip(value + rng.normal(0, 0.05, count), 0, 1),
    )
    if RELATIONS[relation] == "dark":
        second = main * rng.uniform(0.3, 0.45)
    else:
        offset = 0.5 if RELATIONS[relation] == "complement" else 1.5 / HUES
        second = _hsv_to_rgb(
            base_hue + offset + hue_jitter,
            np.clip(saturation + rng.normal(0, 0.05, count), 0, 1),
            np.clip(value + rng.normal(0, 0.05, count), 0, 1),
        )
    # Backgrounds are washed out a little so that shapes stand out from most of them.
    low, high = (0.35 + 0.5 * rng.uniform(0.0, 1.0, (2, count, 3))).astype(np.float32)
    kind, angle = TEXTURES[texture]
    draws = {
        "shape": np.full(count, shape),
        "texture": np.full(count, ["stripes", "checks", "dots", "rings"].index(kind)),
        "texture_angle": np.full(count, math.radians(angle), np.float32),
        "frequency": np.full(count, FREQUENCIES[frequency] * rng.uniform(0.95, 1.05), np.float32),
        "main": main,
        "second": second,
        "centre": rng.uniform(0.3, 0.7, (count, 2)).astype(np.float32),
        "radius": rng.uniform(0.17, 0.36, count).astype(np.float32),
        "rotation": rng.uniform(-0.5, 0.5, count).astype(np.float32),
        "background_low": low,
        "background_high": high,
        "background_angle": rng.uniform(0, 2 * np.pi, count).astype(np.float32),
        "shading": rng.uniform(0.0, 0.35, count).astype(np.float32),
        "shading_angle": rng.uniform(0, 2 * np.pi, count).astype(np.float32),
        "brightness": rng.uniform(-0.12, 0.12, count).astype(np.float32),
        "contrast": rng.uniform(0.7, 1.15, count).astype(np.float32),
        "cast": rng.uniform(0.8, 1.2, (count, 3)).astype(np.float32),
        "noise": rng.uniform(0.01, 0.05, count).astype(np.float32),
    }
    grain = rng.random((count, size, size), dtype=np.float32)
    grain += rng.random((count, size, size), dtype=np.float32)
    grain -= 1.0
    draws["grain"] = grain
    return draws


def _shape_radius(shape: int, theta: np.ndarray) -> np.ndarray:
    """Boundary radius of `SHAPES[shape]` (corner radius 1) in direction `theta`."""
    _, corners, inner, petal, _ = SHAPES[shape]
    if petal is not None:
        return 1.0 - petal + petal * np.abs(np.cos(corners * theta / 2.0))
    sector = 2.0 * np.pi / corners
    inner = math.cos(math.pi / corners) if inner is None else inner
    # Each edge runs from a corner (angle 0, radius 1) to the inner point (angle sector/2,
    # radius inner); in polar form a line is r = distance / cos(theta - normal).
    ax, ay = 1.0, 0.0
    bx, by = inner * math.cos(sector / 2), inner * math.sin(sector / 2)
    normal = math.atan2(bx - ax, -(by - ay))
    distance = ax * math.cos(normal) + ay * math.sin(normal)
    phi = theta / sector
    phi = (phi - np.floor(phi)) * sector
    phi = np.minimum(phi, sector - phi)
    return distance / np.cos(phi - normal)


def _texture(kind: int, u: np.ndarray, v: np.ndarray, frequency: np.ndarray) -> np.ndarray:
    """Share of the second colour in [0, 1] at object coordinates `u, v` `[n, H, W]`."""
    f = frequency[:, None, None]
    if kind == 0:  # stripes
        wave = np.sin(2 * np.pi * f * u)
    elif kind == 1:  # checks
        wave = np.sin(2 * np.pi * f * u) * np.sin(2 * np.pi * f * v) * 2.0
    elif kind == 2:  # dots
        du, dv = f * u, f * v
        du, dv = du - np.floor(du) - 0.5, dv - np.floor(dv) - 0.5
        wave = (0.3 - np.sqrt(du * du + dv * dv)) * 8.0
    else:  # rings
        wave = np.sin(2 * np.pi * f * np.sqrt(u * u + v * v))
    return np.clip(0.5 + 2.0 * wave, 0.0, 1.0)


def render(draws: dict, size: int, out: np.ndarray | None = None) -> np.ndarray:
    """The images `[n, size, size, 3]` float32 in [0, 1] drawn from per-image `draws` (into `out`)."""
    n = len(draws["radius"])
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    gx, gy = coords[None, None, :], coords[None, :, None]

    def column(name):
        return draws[name][:, None, None]

    dx, dy = gx - column("centre")[..., 0], gy - column("centre")[..., 1]
    cos, sin = np.cos(column("rotation")), np.sin(column("rotation"))
    radius = column("radius")
    u = (cos * dx + sin * dy) / radius  # object coordinates: corners at radius 1
    v = (cos * dy - sin * dx) / radius
    mask = np.empty((n, size, size), np.float32)
    for shape in np.unique(draws["shape"]):
        at = draws["shape"] == shape
        aspect = SHAPES[shape][4]
        su, sv = u[at], v[at] / aspect
        rho, theta = np.sqrt(su * su + sv * sv), np.arctan2(sv, su)
        edge = (_shape_radius(int(shape), theta) - rho) * radius[at] * size * aspect
        mask[at] = np.clip(edge + 0.5, 0.0, 1.0)
    mix = np.empty((n, size, size), np.float32)
    angle = column("texture_angle")
    tu = np.cos(angle) * u + np.sin(angle) * v
    tv = np.cos(angle) * v - np.sin(angle) * u
    for kind in np.unique(draws["texture"]):
        at = draws["texture"] == kind
        mix[at] = _texture(int(kind), tu[at], tv[at], draws["frequency"][at])
    del u, v, tu, tv, dx, dy

    def ramp(angle_name):
        a = column(angle_name)
        return np.clip((gx - 0.5) * np.cos(a) + (gy - 0.5) * np.sin(a) + 0.5, 0.0, 1.0)

    backdrop = ramp("background_angle")
    # Lighting: a colour cast, a shading gradient, then contrast about mid-grey and brightness.
    contrast = column("contrast")
    gain = (1.0 + column("shading") * (ramp("shading_angle") - 0.5) * 2.0) * contrast
    # Grain of the image's standard deviation, the same in the three channels.
    grain = draws["grain"] * (column("noise") * math.sqrt(6.0))
    grain += 0.5 - 0.5 * contrast + column("brightness")
    images = np.empty((n, size, size, 3), np.float32) if out is None else out
    # Channel by channel: numpy broadcasts [n, 1, 1, 3] against [n, H, W, 1] slowly.
    for c in range(3):
        main, second = draws["main"][:, c, None, None], draws["second"][:, c, None, None]
        low, high = (draws[key][:, c, None, None] for key in ("background_low", "background_high"))
        background = low + (high - low) * backdrop
        plane = background + (main + (second - main) * mix - background) * mask
        plane *= gain
        plane *= draws["cast"][:, c, None, None]
        plane += grain
        images[..., c] = plane
    return np.clip(images, 0.0, 1.0, out=images)


def generate(
    num_classes: int, size: int, seed: int, images_per_class: int = IMAGES_PER_CLASS
) -> tuple[np.ndarray, list[str]]:
    """All classes `[num_classes, images_per_class, size, size, 3]` float32 and their names."""
    combos = combinations(num_classes, seed)
    images = np.empty((num_classes, images_per_class, size, size, 3), np.float32)
    per_class = images_per_class * size * size * _FLOATS_PER_PIXEL * 4
    chunk = max(1, _CHUNK_BYTES // per_class)
    for start in range(0, num_classes, chunk):
        stop = min(num_classes, start + chunk)
        draws = [
            _class_draws(combos[c], images_per_class, size, np.random.default_rng([seed, c]))
            for c in range(start, stop)
        ]
        joined = {key: np.concatenate([d[key] for d in draws]) for key in draws[0]}
        render(joined, size, out=images[start:stop].reshape(-1, size, size, 3))
    return images, [class_name(c) for c in combos]


class ColourShapes(Dataset):
    """The built-in procedurally generated colour data set.

    Options: `classes` (default 600) and `images_per_class` (default 20).
    Class sets are 80/10/10 of the classes. Colour (3 channels).
    """

    channels = 3
    data_seed = 20240521
    OPTIONS = (
        Option(
            "classes",
            int,
            DEFAULT_CLASSES,
            f"number of generated classes (distinct shape, palette and texture; at most "
            f"{MAX_CLASSES})",
            lower_bound=50,
            upper_bound=MAX_CLASSES,
        ),
        Option("images_per_class", int, IMAGES_PER_CLASS, "images per class", lower_bound=2),
    )

    def load(self) -> ClassSplits:
        num_classes = self.options.options["classes"]
        per_class = self.options.options["images_per_class"]
        images, names = generate(num_classes, self.options.image_size, self.data_seed, per_class)
        n_train = int(round(num_classes * SPLIT_FRACTIONS[0]))
        n_val = int(round(num_classes * SPLIT_FRACTIONS[1]))
        cut = (0, n_train, n_train + n_val, num_classes)
        sets = [ClassSet(images[a:b], names[a:b]) for a, b in zip(cut[:-1], cut[1:])]
        return ClassSplits(*sets)
