"""A procedural vision-language world for the offline demo.

Scenes are a sky over one kind of ground with 1-3 objects standing on it. Every object
class is made of two parts, and every part and every ground has its own *local*
texture, so a 16-pixel patch says what it belongs to (a flat-coloured shape would not:
a patch inside a circle looks like one inside a square):

========  ==========================================  ====================================
object    parts (texture)                             attribute
========  ==========================================  ====================================
house     roof (dark diagonal tiles), wall (bricks)   wall colour: red, yellow, orange
tree      leaves (dotted foliage), trunk (bark)       leaves colour: green, orange
car       body (glossy with a stripe), wheel (spoked) body colour: red, purple, yellow
mushroom  cap (white spots), stem (fine lines)        cap colour: red, brown
========  ==========================================  ====================================

Grounds: grass (blades), sand (speckles), water (waves), snow (sparkles); the sky is
a smooth gradient. A scene comes with its class map (:data:`CLASSES`), its part map
(:data:`PARTS`, :data:`PART_BACKGROUND` elsewhere) and a caption. :func:`close_up`
crops one object, part or ground and captions it with a prompt template, like the
close-ups web image/caption data is full of. :func:`region_map` says what each pixel
of a scene or close-up is (its part, sky or ground), for the demo CLIP's region-text loss.

The planted structure: every part lies inside its object (part -> object), and the words
are the world's vocabulary (:func:`world_words`); :mod:`insight.demo.recovery` scores how
much of it the concepts recover.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

GROUNDS = ("grass", "sand", "water", "snow")


STUFF = ("sky", *GROUNDS)


OBJECT_PARTS = {
    "house": ("roof", "wall"),
    "tree": ("leaves", "trunk"),
    "car": ("body", "wheel"),
    "mushroom": ("cap", "stem"),
}


OBJECTS = tuple(OBJECT_PARTS)


CLASSES = STUFF + OBJECTS  # class ids of the class map (the world's OVS benchmark)


PARTS = tuple(part for parts in OBJECT_PARTS.values() for part in parts)


PART_BACKGROUND = 40  # the PartImageNet layout's background id


PART_OF = {part: obj for obj, parts in OBJECT_PARTS.items() for part in parts}


COLOURS = {
    "red": (200, 45, 40),
    "yellow": (230, 200, 50),
    "green": (60, 150, 50),
    "orange": (225, 130, 35),
    "purple": (140, 60, 180),
    "brown": (130, 80, 40),
}


ATTRIBUTES = {  # object -> (the part the colour applies to, its colours)
    "house": ("wall", ("red", "yellow", "orange")),
    "tree": ("leaves", ("green", "orange")),
    "car": ("body", ("red", "purple", "yellow")),
    "mushroom": ("cap", ("red", "brown")),
}


def world_words() -> list[str]:
    """The world's vocabulary: classes, parts, attributes and object-part phrases."""
    phrases = [f"{obj} {part}" for part, obj in PART_OF.items()]
    colours = sorted({c for _, cs in ATTRIBUTES.values() for c in cs})
    coloured = [f"{c} {obj}" for obj, (_, cs) in ATTRIBUTES.items() for c in cs]
    return [*CLASSES, *PARTS, *colours, *phrases, *coloured]


# ---------------------------------------------------------------- textures (H, W, 3) floats


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:height, 0:width]
    return rows.astype(np.float32), cols.astype(np.float32)


def _mix(mask: np.ndarray, on: tuple, off: tuple) -> np.ndarray:
    return np.where(mask[..., None], np.array(on, np.float32), np.array(off, np.float32))


def _shade(colour: tuple, factor: float) -> tuple:
    return tuple(min(255.0, c * factor) for c in colour)


def _spots(
    rng: np.random.Generator, height: int, width: int, period: int, radius: float
) -> np.ndarray:
    """Jittered grid of round spots, one per ``period`` cell."""
    rows, cols = _grid(height, width)
    cell_r, cell_c = (rows // period).astype(int), (cols // period).astype(int)
    jitter = rng.uniform(0.3, 0.7, size=(height // period + 2, width // period + 2, 2)) * period
    centre_r = cell_r * period + jitter[cell_r, cell_c, 0]
    centre_c = cell_c * period + jitter[cell_r, cell_c, 1]
    return (rows - centre_r) ** 2 + (cols - centre_c) ** 2 < radius**2


def elsewhere_pattern(key: int) -> dict:
    """The pattern of :func:`elsewhere_image` ``key``: two colours, a kind (stripes, checks,
    rings or blobs), a period, an angle and a centre, all drawn from the key."""
    own = np.random.default_rng([key, 7919])
    return {
        "colours": own.integers(0, 256, (2, 3)).astype(np.float32),
        "kind": ("stripes", "checks", "rings", "blobs")[int(own.integers(4))],
        "period": float(own.uniform(40.0, 112.0)),
        "angle": float(own.uniform(0.0, np.pi)),
        "centre": own.uniform(0.0, 1.0, 2),
    }


def elsewhere_image(key: int, rng: np.random.Generator, size: int = 224) -> np.ndarray:
    """A picture of something the world does not contain, ``(size, size, 3)`` uint8: the
    pattern of ``key`` (:func:`elsewhere_pattern`), shifted and noised afresh from ``rng``.
    The demo's CLIP meets each vocabulary word the world has no use for with its own such
    picture, as a real CLIP met the words of its vocabulary with pictures of other things."""
    pattern = elsewhere_pattern(key)
    period, angle = pattern["period"], pattern["angle"]
    rows, cols = _grid(size, size)
    shift = rng.uniform(0.0, 2.0 * period, 2)
    u = cols * np.cos(angle) + rows * np.sin(angle) + shift[0]
    v = rows * np.cos(angle) - cols * np.sin(angle) + shift[1]
    if pattern["kind"] == "stripes":
        on = (u // period) % 2 == 0
    elif pattern["kind"] == "checks":
        on = ((u // period) + (v // period)) % 2 == 0
    elif pattern["kind"] == "rings":
        centre = pattern["centre"] * size
        on = (np.hypot(rows - centre[0], cols - centre[1]) + shift[0]) // period % 2 == 0
    else:
        on = np.sin(2 * np.pi * u / period) + np.sin(2 * np.pi * v / period) > 0
    colours = pattern["colours"]
    noise = 6 * rng.standard_normal((size, size, 3), dtype=np.float32)
    return np.clip(np.where(on[..., None], colours[0], colours[1]) + noise, 0, 255).astype(np.uint8)


def texture(name: str, rng: np.random.Generator, height: int, width: int, colour=None):
    """The texture of a part or ground over a whole ``height x width`` canvas."""
    rows, cols = _grid(height, width)
    if name == "sky":
        top, bottom = np.array((110, 160, 230), np.float32), np.array((190, 215, 245), np.float32)
        t = (rows / max(height - 1, 1))[..., None]
        return top * (1 - t) + bottom * t
    if name == "grass":
        blades = (rng.random((height, width)) < 0.08).astype(np.float32)
        blades = np.maximum.reduce([np.roll(blades, k, axis=0) for k in range(5)])
        return _mix(blades > 0, (35, 95, 30), (95, 170, 70))
    if name == "sand":
        return _mix(rng.random((height, width)) < 0.15, (170, 145, 95), (222, 200, 150))
    if name == "water":
        wave = np.sin(cols / 5.0 + 2.5 * np.sin(rows / 3.0)) * np.sin(rows * 1.3)
        return _mix(wave > 0.45, (160, 200, 240), (30, 90, 170))
    if name == "snow":
        return _mix(rng.random((height, width)) < 0.03, (150, 175, 210), (245, 247, 252))
    if name == "roof":
        return _mix(((rows + cols) // 4) % 2 == 0, (70, 60, 65), (120, 110, 115))
    if name == "wall":
        course = (rows // 8).astype(int)
        offset = np.where(course % 2 == 0, 0, 8)
        mortar = (rows % 8 < 2) | ((cols + offset) % 16 < 2)
        return _mix(mortar, (210, 210, 200), colour)
    if name == "leaves":
        return _mix(_spots(rng, height, width, 6, 2.2), _shade(colour, 0.55), colour)
    if name == "trunk":
        return _mix((cols // 3) % 2 == 0, (95, 60, 30), (140, 95, 55))
    if name == "body":
        stripe = (rows // 3) % 6 == 0
        return _mix(stripe, _shade(colour, 1.35), colour)
    if name == "wheel":
        return _mix(np.ones((height, width), bool), (30, 30, 30), (30, 30, 30))
    if name == "cap":
        return _mix(_spots(rng, height, width, 9, 2.6), (250, 250, 245), colour)
    if name == "stem":
        return _mix(cols % 4 == 0, (200, 185, 150), (240, 230, 200))
    raise KeyError(f"no texture for {name!r}")


# ---------------------------------------------------------------- objects and scenes


@dataclass
class WorldObject:
    """An object in a scene: its class, attribute colour, box and part masks (H, W)."""

    name: str
    colour: str
    box: tuple[int, int, int, int]
    parts: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def mask(self) -> np.ndarray:
        return np.logical_or.reduce(list(self.parts.values()))


def _mask(size: tuple[int, int], draw) -> np.ndarray:
    image = Image.new("L", size, 0)
    draw(ImageDraw.Draw(image))
    return np.array(image) > 0


def part_masks(name: str, box: tuple[int, int, int, int], size: tuple[int, int]) -> dict:
    """The part masks of object ``name`` drawn in ``box`` = (x0, y0, x1, y1); a later
    part covers an earlier one where they overlap."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if name == "house":
        roof = _mask(
            size,
            lambda d: d.polygon(
                [(x0, y0 + 0.42 * h), (x0 + w / 2, y0), (x1, y0 + 0.42 * h)], fill=1
            ),
        )
        wall = _mask(
            size, lambda d: d.rectangle((x0 + 0.1 * w, y0 + 0.42 * h, x1 - 0.1 * w, y1), fill=1)
        )
        return {"wall": wall & ~roof, "roof": roof}
    if name == "tree":
        trunk = _mask(
            size, lambda d: d.rectangle((x0 + 0.38 * w, y0 + 0.5 * h, x1 - 0.38 * w, y1), fill=1)
        )
        leaves = _mask(size, lambda d: d.ellipse((x0, y0, x1, y0 + 0.68 * h), fill=1))
        return {"trunk": trunk & ~leaves, "leaves": leaves}
    if name == "car":
        body = _mask(
            size,
            lambda d: (
                d.rectangle((x0, y0 + 0.35 * h, x1, y0 + 0.8 * h), fill=1),
                d.rectangle((x0 + 0.22 * w, y0, x1 - 0.22 * w, y0 + 0.4 * h), fill=1),
            ),
        )
        r = 0.2 * h
        wheel = _mask(
            size,
            lambda d: [
                d.ellipse((cx - r, y1 - 2 * r, cx + r, y1), fill=1)
                for cx in (x0 + 0.25 * w, x0 + 0.75 * w)
            ],
        )
        return {"body": body & ~wheel, "wheel": wheel}
    if name == "mushroom":
        stem = _mask(
            size, lambda d: d.rectangle((x0 + 0.33 * w, y0 + 0.4 * h, x1 - 0.33 * w, y1), fill=1)
        )
        cap = _mask(size, lambda d: d.pieslice((x0, y0, x1, y0 + 1.1 * h), 180, 360, fill=1))
        return {"stem": stem & ~cap, "cap": cap}
    raise KeyError(f"unknown object {name!r}")  # fmt: skip


OBJECT_ASPECT = {"house": 1.0, "tree": 0.75, "car": 1.7, "mushroom": 1.0}  # width / height


@dataclass
class Scene:
    """A drawn scene: the image, its class map, part map, ground and objects."""

    image: Image.Image
    classes: np.ndarray  # (H, W) ids into CLASSES
    parts: np.ndarray  # (H, W) ids into PARTS, PART_BACKGROUND elsewhere
    ground: str
    objects: list[WorldObject]

    @property
    def caption(self) -> str:
        return scene_caption(self.objects, self.ground)


def draw_scene(
    rng: np.random.Generator, size: tuple[int, int] = (224, 224), objects: list[str] | None = None
) -> Scene:
    """One scene: sky above a random ground and 1-3 random objects (or ``objects``)
    standing on the ground, drawn far to near (a nearer object covers a farther one in
    the image and the labels)."""
    width, height = size
    ground = GROUNDS[rng.integers(len(GROUNDS))]
    horizon = int(height * rng.uniform(0.25, 0.45))
    pixels = texture("sky", rng, height, width)
    pixels[horizon:] = texture(ground, rng, height, width)[horizon:]
    classes = np.full((height, width), CLASSES.index("sky"), np.uint8)
    classes[horizon:] = CLASSES.index(ground)
    parts = np.full((height, width), PART_BACKGROUND, np.uint8)
    if objects is None:
        objects = [OBJECTS[rng.integers(len(OBJECTS))] for _ in range(int(rng.integers(1, 4)))]
    placed = []
    for name in objects:
        obj_h = int(height * rng.uniform(0.3, 0.55))
        obj_w = min(int(obj_h * OBJECT_ASPECT[name]), width - 2)
        base = int(rng.uniform(horizon + 0.15 * height, height + 0.05 * height))
        x0 = int(rng.integers(0, width - obj_w))
        placed.append((base, name, (x0, base - obj_h, x0 + obj_w, base)))
    drawn = []
    for _, name, box in sorted(placed):
        attribute_part, colours = ATTRIBUTES[name]
        colour = colours[rng.integers(len(colours))]
        obj = WorldObject(name, colour, box, part_masks(name, box, size))
        for part, mask in obj.parts.items():
            tint = COLOURS[colour] if part == attribute_part else None
            pixels[mask] = texture(part, rng, height, width, tint)[mask]
            classes[mask] = CLASSES.index(name)
            parts[mask] = PARTS.index(part)
        drawn.append(obj)
    noise = rng.normal(0, 6, size=pixels.shape)
    image = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    return Scene(image, classes, parts, ground, drawn)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def scene_caption(
    objects: list[WorldObject], ground: str, reverse: bool = False, colours: bool = True
) -> str:
    """``a red car and a green tree on grass``: objects left to right (or right to left),
    with their colour unless ``colours`` is False (``a car and a tree on grass``)."""
    ordered = sorted(objects, key=lambda o: o.box[0], reverse=reverse)
    words = [f"{o.colour} {o.name}" if colours else o.name for o in ordered]
    things = [f"{_article(word)} {word}" for word in words]
    listed = things[0] if len(things) == 1 else ", ".join(things[:-1]) + " and " + things[-1]
    return f"{listed} on {ground}"


def close_up(
    scene: Scene, rng: np.random.Generator, templates: tuple[str, ...], size: int = 224
) -> tuple[Image.Image, str, tuple[int, int, int, int]] | None:
    """A square crop around one object, part or ground of ``scene`` resized to ``size``,
    captioned with a random template (``a photo of the car wheel.``), and the crop's box
    in the scene; None when the chosen region is too small to crop."""
    choices = [("stuff", name) for name in ("sky", scene.ground)]
    for obj in scene.objects:
        choices.append(("object", obj))
        choices += [("part", (obj, part)) for part in obj.parts]
    kind, target = choices[rng.integers(len(choices))]
    if kind == "stuff":
        mask = scene.classes == CLASSES.index(target)
        words = target
    elif kind == "object":
        mask = scene.classes == CLASSES.index(target.name)
        mask &= target.mask
        words = f"{target.colour} {target.name}" if rng.random() < 0.5 else target.name
    else:
        obj, part = target
        mask = (scene.parts == PARTS.index(part)) & obj.parts[part]
        words = f"{obj.name} {part}" if rng.random() < 0.5 else part
    rows, cols = np.nonzero(mask)
    if len(rows) < 64:
        return None
    if kind == "stuff":  # a window of the region, not its (scene-wide) bounding box
        side = int(rng.integers(48, 112))
        centre = int(rng.integers(len(rows)))
        cy, cx = rows[centre], cols[centre]
    else:
        side = int(max(np.ptp(rows), np.ptp(cols)) * rng.uniform(1.0, 1.3)) + 8
        cy, cx = (rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2
    width, height = scene.image.size
    side = min(side, width, height)
    left = int(np.clip(cx - side // 2, 0, width - side))
    top = int(np.clip(cy - side // 2, 0, height - side))
    box = (left, top, left + side, top + side)  # inside the image: no black borders
    crop = scene.image.crop(box).resize((size, size), Image.BICUBIC)
    template = templates[rng.integers(len(templates))]
    return crop, template.format(words), box


REGIONS = (*STUFF, *PARTS)  # the ids of a region map (:func:`region_map`)


REGION_WORDS = (*STUFF, *PARTS, *OBJECTS)  # what a region map's pixels are, as words


def region_map(
    scene: Scene, box: tuple[int, int, int, int] | None = None, size: int = 224
) -> np.ndarray:
    """What each pixel of ``scene`` is, ``(H, W)`` uint8 ids into :data:`REGIONS`: its part
    where an object stands, else the sky or ground; cropped to ``box`` and resized
    (nearest) to ``size`` squared when given, as :func:`close_up` crops the image."""
    ids = np.where(scene.parts == PART_BACKGROUND, scene.classes, len(STUFF) + scene.parts)
    image = Image.fromarray(ids.astype(np.uint8))
    if box is not None:
        image = image.crop(box).resize((size, size), Image.NEAREST)
    return np.asarray(image)
