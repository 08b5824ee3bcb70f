"""Sentence queries over the demo caption set's 18 photos (``tools.demo_captions.PHOTOS``), as a user
would type or say them: three phrasings per photo, none of them a caption of the set, plus each
photo's short noun phrase (its label). Written for ``benchmarks.quality``; never used for training."""

from __future__ import annotations

SENTENCES: dict[str, tuple[str, str, str]] = {
    "astronaut": (
        "show me the astronaut in her space suit",
        "I am looking for a portrait of a woman from NASA",
        "find the picture of the smiling shuttle pilot",
    ),
    "brick": (
        "a photo of an old brick wall",
        "I want the picture with the grey bricks",
        "show me some masonry",
    ),
    "camera": (
        "the man standing behind a camera on a tripod",
        "find the old black and white photo of a photographer",
        "someone filming outside in a park",
    ),
    "chelsea": (
        "show me my cat",
        "the picture of the tabby kitten with whiskers",
        "I am looking for a photo of a pet staring at me",
    ),
    "coffee": (
        "a cup of coffee on a saucer",
        "find the picture of my morning espresso",
        "show me a hot drink in a white mug",
    ),
    "coins": (
        "a pile of old coins",
        "show me the picture of the money",
        "I want the photo with the metal coins laid out in rows",
    ),
    "grass": (
        "a close-up of green grass",
        "find the picture of the lawn",
        "show me blades of grass",
    ),
    "gravel": (
        "a photo of small stones on the ground",
        "find the picture of the gravel path",
        "show me a lot of pebbles",
    ),
    "horse": (
        "a horse in a field",
        "find the picture of the pony",
        "show me the animal you can ride",
    ),
    "hubble_deep_field": (
        "a photo of distant galaxies",
        "show me the night sky full of stars",
        "find the picture of deep space from the telescope",
    ),
    "moon": (
        "a picture of the moon",
        "show me the craters on the lunar surface",
        "find the black and white photo of the moon at night",
    ),
    "rocket": (
        "a rocket on the launch pad",
        "show me the space shuttle before takeoff",
        "find the picture of the launch tower",
    ),
    "china": (
        "a temple on a hill",
        "show me the old Chinese pagoda",
        "find the picture of the pavilion among the trees",
    ),
    "flower": (
        "a pink flower in bloom",
        "show me the picture of the blossom",
        "find the close-up photo of petals",
    ),
    "motorcycle": (
        "a red motorbike",
        "show me the picture of the motorcycle",
        "find the photo of a bike with an engine",
    ),
    "clock": (
        "a clock on the wall",
        "show me the picture of the clock face",
        "find the photo that shows what time it is",
    ),
    "ihc": (
        "a microscope image of stained cells",
        "show me the tissue sample under the microscope",
        "find the purple and brown stained slide",
    ),
    "page": (
        "a page of printed text",
        "show me the scanned document",
        "find the picture of an old book page",
    ),
}
