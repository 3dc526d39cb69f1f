"""Caption sources for caption-conditioned features (the paper's v2/v4 "unified" image + text tokens).

Every source is a callable ``source(paths, images) -> list[str]``: ``paths`` are the image files of
the batch, or None for in-memory images (camera frames), and ``images`` the uint8 RGB arrays. Each
source has a ``cache_id`` naming it and its settings, so cached features change when captions do.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from prosthesis_sim.features.clip import offline_help

NEUTRAL_CAPTION = "a photo"  # for images without a file (and so without a THINGS concept)


class ConceptCaptions:
    """"a photo of a {concept}" from the THINGS concept of each image, read as English.

    The concept comes from the image's folder (THINGS-EEG2 ``00001_aircraft_carrier``, THINGS-MEG
    ``aircraft_carrier``), or from its file name in a flat folder (THINGS-MEG test images,
    ``images_test_meg/coat_rack_13s.jpg``): see ``concept_of``. An article "a"/"an" right before
    ``{concept}`` in the template is chosen to fit the concept ("an astronaut", "a unicorn").
    In-memory images have no folder and get ``neutral`` (default "a photo"), the same for every
    frame, so the text tokens carry no image-specific information there.
    """

    def __init__(self, template: str = "a photo of a {concept}", neutral: str = NEUTRAL_CAPTION):
        if "{concept}" not in template:
            raise ValueError(f"features.captions.template must contain '{{concept}}', got {template!r}")
        self.template, self.neutral = template, neutral
        # "concept2": captions changed (variant suffixes stripped, articles fitted), so caches keyed by
        # the id of the old captions must not be reused
        self.cache_id = f"concept2({template}|{neutral})"

    def __call__(self, paths: Sequence[Path] | None, images) -> list[str]:
        if paths is None:
            return [self.neutral] * len(images)
        return [caption(self.template, concept_of(Path(p))) for p in paths]


_FOLDER_NUMBER = re.compile(r"^\d+_")  # THINGS-EEG2 folders: 00001_aircraft_carrier
_IMAGE_NUMBER = re.compile(r"_\d+[a-z]?$")  # THINGS files: aircraft_carrier_01b, coat_rack_13s
_VARIANT = re.compile(r"_?\d+$")  # homonyms and variants: bat2, astronaut_02


def concept_of(path: Path) -> str:
    """The concept of a THINGS image, as words: ``.../00001_aircraft_carrier/aircraft_carrier_01b.jpg``
    -> "aircraft carrier", ``images_test_meg/coat_rack_13s.jpg`` -> "coat rack",
    ``.../00007_astronaut_02/astronaut_02_03b.jpg`` -> "astronaut".

    The folder names the concept unless the file is a THINGS image name (``<concept>_<number>``)
    that does not start with it (a flat folder of test images). Leading folder numbers, numeric
    variant suffixes (``bat2``, ``astronaut_02``) and underscores are dropped.
    """
    folder = _FOLDER_NUMBER.sub("", path.parent.name)
    name = folder
    if _IMAGE_NUMBER.search(path.stem) and not path.stem.startswith(folder):
        name = _IMAGE_NUMBER.sub("", path.stem)
    words = _VARIANT.sub("", name) or name  # a name of digits only stays as it is
    return re.sub(r"[_\s]+", " ", words).strip()


def caption(template: str, concept: str) -> str:
    """``template`` with ``{concept}`` filled in and an "a"/"an" right before it fitted to the concept."""
    def fit(match: re.Match) -> str:
        word = indefinite_article(concept)
        return (word.capitalize() if match.group(1)[0].isupper() else word) + match.group(2)

    return re.sub(r"\b([Aa]n?)(\s+)(?=\{concept\})", fit, template).format(concept=concept)


# Spellings that start with a vowel but sound a consonant ("a unicorn", "a urinal", "a ukulele",
# "a eucalyptus", "a one-way sign"), and the reverse ("an hourglass").
_CONSONANT_SOUND = re.compile(r"^(uni|use|usu|ura|uri|uro|uku|ute|euc|eul|eur|ewe|one\b|once)")
_VOWEL_SOUND = re.compile(r"^(hour|honest|honou?r|heir)")


def indefinite_article(phrase: str) -> str:
    """ "an" before a vowel sound, else "a" (by spelling, with the common exceptions)."""
    word = phrase.strip().lower()
    if _VOWEL_SOUND.match(word):
        return "an"
    if _CONSONANT_SOUND.match(word):
        return "a"
    return "an" if word[:1] in tuple("aeiou") else "a"


class FileCaptions:
    """Captions from a JSON object ``{image: caption}`` or a CSV with columns ``image,caption``.

    An image matches a key by its path as given, its absolute path, its path relative to any parent
    folder, or its file name (longest match first), so caption files written on another machine
    still match. Missing images get ``fallback``, or raise KeyError naming the file and the image.
    """

    def __init__(self, path: str | Path, fallback: str | None = None):
        self.path = Path(path).resolve()
        self.fallback = fallback
        raw = self.path.read_bytes()  # read once: a missing caption file fails at config time
        self.table = {Path(k).as_posix(): str(v) for k, v in _parse(self.path, raw).items()}
        digest = hashlib.sha256(raw).hexdigest()[:12]  # edited captions -> new feature cache
        self.cache_id = f"file({self.path}|{digest}|{fallback})"

    def __call__(self, paths: Sequence[Path] | None, images) -> list[str]:
        if paths is None:
            if self.fallback is None:
                raise KeyError(f"{self.path}: in-memory images have no file name to look up; "
                               "set FileCaptions(fallback=...) to caption them")
            return [self.fallback] * len(images)
        return [self._lookup(Path(p)) for p in paths]

    def _lookup(self, path: Path) -> str:
        parts = path.resolve().parts
        candidates = [path.as_posix()] + ["/".join(parts[i:]).replace("//", "/") for i in range(len(parts))]
        for key in candidates:
            if key in self.table:
                return self.table[key]
        if self.fallback is not None:
            return self.fallback
        raise KeyError(f"caption file {self.path} has no caption for image {path} "
                       f"(matched by full path, path relative to a parent folder, or file name {path.name!r}); "
                       "add it or set FileCaptions(fallback=...)")


def _parse(path: Path, raw: bytes) -> dict[str, str]:
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(raw.decode("utf-8-sig").splitlines()))
        if rows and not {"image", "caption"} <= set(rows[0]):
            raise ValueError(f"{path}: CSV needs columns 'image,caption', found {sorted(rows[0])}")
        return {row["image"]: row["caption"] for row in rows}
    table = json.loads(raw)
    if not isinstance(table, dict):
        raise ValueError(f"{path}: expected a JSON object {{image path or file name: caption}}")
    return table


class VLMWeightsNotFound(FileNotFoundError):
    """The captioning model is neither a local folder nor in the Hugging Face cache."""


class VLMCaptions:
    """Captions generated by a local vision-language model through a transformers pipeline.

    ``model`` is a folder with a ``save_pretrained()`` checkpoint, or a Hugging Face id found in the
    local cache (never downloaded). The paper's Qwen2-VL-2B-Instruct runs with the default task
    "image-text-to-text" (transformers 5 removed "image-to-text" and maps it there). With
    ``cache_dir``, captions of image files are stored in one JSON file keyed by path, size and
    mtime, so each image is captioned once. With ``clip_model`` (a local CLIP folder) each cached
    caption also records its CLIP score, 100 x cosine(image embedding, text embedding), the paper's
    caption-quality check (unclipped: negative scores are kept, so poor captions stay visible).
    """

    def __init__(
        self,
        model: str,
        task: str = "image-text-to-text",
        prompt: str | None = "Describe this image in one short sentence.",
        cache_dir: str | Path | None = None,
        device: str = "cpu",
        local_files_only: bool = True,
        clip_model: str | None = None,
        max_new_tokens: int = 40,
    ):
        self.model, self.task, self.prompt = str(model), task, prompt
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.device, self.local_files_only = device, bool(local_files_only)
        self.clip_model, self.max_new_tokens = clip_model, int(max_new_tokens)
        source = str(Path(self.model).resolve()) if Path(self.model).is_dir() else self.model
        self.cache_id = f"vlm({source}|{task}|{prompt}|{max_new_tokens})"
        self._pipe = None
        self._clip = None

    # --- captions ---------------------------------------------------------------------------------

    def __call__(self, paths: Sequence[Path] | None, images) -> list[str]:
        if paths is None or self.cache_dir is None:
            return self._generate(images)
        cache = self._read_cache()
        keys = [_file_key(Path(p)) for p in paths]
        todo = [i for i, key in enumerate(keys) if key not in cache]
        if todo:
            new = self._generate([images[i] for i in todo])
            scores = self._clip_scores([images[i] for i in todo], new) if self.clip_model else [None] * len(new)
            for i, caption, score in zip(todo, new, scores):
                cache[keys[i]] = {"caption": caption, "clip_score": score}
            self._write_cache(cache)
        return [cache[key]["caption"] for key in keys]

    def _generate(self, images) -> list[str]:
        if not len(images):
            return []
        if self._pipe is None:
            self._pipe = self._load_pipeline()
        from PIL import Image

        pil = [Image.fromarray(np.asarray(img)) for img in images]
        if getattr(getattr(self._pipe, "processor", None), "chat_template", None):  # chat VLMs (Qwen2-VL)
            chats = [[{"role": "user", "content": [{"type": "image", "image": im},
                                                   {"type": "text", "text": self.prompt or ""}]}] for im in pil]
            out = self._pipe(text=chats, max_new_tokens=self.max_new_tokens, return_full_text=False)
        else:  # plain captioners (BLIP, ViT-GPT2): image + optional text prefix
            out = self._pipe(images=pil, text=[self.prompt or ""] * len(pil), max_new_tokens=self.max_new_tokens)
        return [(o[0] if isinstance(o, list) else o)["generated_text"].strip() for o in out]

    def _load_pipeline(self):
        from transformers import pipeline

        folder = _local_folder(self.model, self.local_files_only, VLMWeightsNotFound, _vlm_message)
        try:
            return pipeline(self.task, model=folder, device=self.device, local_files_only=self.local_files_only)
        except (OSError, ValueError) as err:
            raise VLMWeightsNotFound(_vlm_message(self.model, err)) from err

    # --- CLIP score -------------------------------------------------------------------------------

    def _clip_scores(self, images, captions: list[str]) -> list[float]:
        from prosthesis_sim.features.multimodal import clip_score, load_clip

        if self._clip is None:
            self._clip = load_clip(self.clip_model, self.local_files_only, "float32", self.device)
        return [float(s) for s in clip_score(*self._clip, images, captions, self.device)]

    # --- cache ------------------------------------------------------------------------------------

    @property
    def cache_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"captions-{hashlib.sha256(self.cache_id.encode()).hexdigest()[:16]}.json"

    def _read_cache(self) -> dict:
        return json.loads(self.cache_file.read_text()) if self.cache_file.exists() else {}

    def _write_cache(self, cache: dict) -> None:
        """Write to a temp file and rename it, so readers never see half a file."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=self.cache_dir, prefix=self.cache_file.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(cache, f, indent=1, sort_keys=True)
            os.replace(temp, self.cache_file)
        except BaseException:
            os.unlink(temp)
            raise

    def scores(self) -> dict[str, dict]:
        """The cache: {key: {"caption", "clip_score"}}, to inspect caption quality."""
        return self._read_cache() if self.cache_dir is not None else {}


def _file_key(path: Path) -> str:
    st = path.stat()
    return json.dumps([str(path.resolve()), st.st_size, st.st_mtime_ns])


def _local_folder(model: str, local_files_only: bool, error: type[Exception], message) -> str:
    """A local folder for ``model``: the folder itself, or its snapshot in the Hugging Face cache."""
    if Path(model).is_dir():
        return model
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model, local_files_only=local_files_only)
    except Exception as err:  # LocalEntryNotFoundError, HFValidationError for non-id paths, ...
        raise error(message(model, err)) from err


def _vlm_message(model: str, err: Exception) -> str:
    return offline_help(
        "captioning model", model, err, "features.captions.model",
        "the model's and its processor's save_pretrained() output (e.g. Qwen/Qwen2-VL-2B-Instruct)",
        "Without a VLM, `features.captions._target_=prosthesis_sim.features.captions.ConceptCaptions` "
        "captions THINGS images from their concept names.",
    )
