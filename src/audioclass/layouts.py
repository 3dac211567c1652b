"""Dataset layouts: find the labelled clips in a folder or zip.

Four layouts are understood (``extract.layout: auto`` picks the first that fits):

``esc50``
    ESC-50 master: ``meta/esc50.csv`` plus ``audio/<filename>``. With
    ``subset: esc10`` only the rows with ``esc10 == True`` are kept.
``esc10``
    The original ESC-10 release: class folders ``001 - Dog bark/1-100032-A.ogg``.
``folders``
    Any corpus with one folder per class, e.g. ``dog/a.wav``, ``cat/b.flac``.
``filename``
    Labels encoded in file names (RAVDESS, for example), read by the regex
    ``extract.label_pattern`` with a named group ``label`` and optionally
    ``group`` (the source recording or speaker, which must never straddle a split).

In the two ESC layouts a clip's id is its ESC name ``{fold}-{source id}-{take}``,
which also gives its fold and source recording. In the ``folders`` and
``filename`` layouts nothing is read from the name but the label (and the
``group``): a clip's id is its path below the corpus (:func:`path_id`), so
``cat/000.wav`` beside ``dog/000.wav`` (Speech Commands' layout) are two clips;
each file is its own source recording unless the pattern's ``group`` says
otherwise, and folds are assigned later, grouped and stratified
(``extract.n_folds``).
"""

from __future__ import annotations

import functools
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from audioclass.errors import DataError
from audioclass.tables import read_table

# The study's class indices (reference-study.md): the index is the position.
ESC10_CLASSES = (
    "rain",
    "rooster",
    "crying_baby",
    "sea_waves",
    "clock_tick",
    "sneezing",
    "dog",
    "crackling_fire",
    "helicopter",
    "chainsaw",
)
ESC10_FOLDERS = {
    "Dog bark": "dog",
    "Rain": "rain",
    "Sea waves": "sea_waves",
    "Baby cry": "crying_baby",
    "Clock tick": "clock_tick",
    "Person sneeze": "sneezing",
    "Helicopter": "helicopter",
    "Chainsaw": "chainsaw",
    "Rooster": "rooster",
    "Fire crackling": "crackling_fire",
}
ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
# ESC-10's classes as ESC-50 numbers them (its meta/esc50.csv's target), for laying ESC-10 out as ESC-50 is.
ESC10_TARGETS = {
    "dog": 0,
    "rooster": 1,
    "rain": 10,
    "sea_waves": 11,
    "crackling_fire": 12,
    "crying_baby": 20,
    "sneezing": 21,
    "clock_tick": 38,
    "helicopter": 40,
    "chainsaw": 41,
}
AUDIO_SUFFIXES = frozenset({".wav", ".ogg", ".flac", ".mp3", ".aif", ".aiff"})
LAYOUTS = ("esc50", "esc10", "folders", "filename")

_ESC_NAME = re.compile(r"^(?P<fold>\d+)-(?P<source>[^-]+)-(?P<take>[^-]+)(?:-(?P<target>\d+))?$")
_ESC10_FOLDER = re.compile(r"^\d{3} - (?P<name>.+)$")


@dataclass(frozen=True)
class SourceClip:
    """One labelled clip found in a dataset source, before decoding."""

    clip_id: str
    source_id: str
    take: str
    fold: int | None
    class_name: str
    member: str  # path inside the source (folder-relative or zip member), POSIX


@dataclass(frozen=True)
class Corpus:
    """The clips of a source with their class list (index = position).

    ``name`` is the published corpus it is ("ESC-10", "ESC-50"), or None for a user's own.
    """

    layout: str
    classes: tuple[str, ...]
    clips: tuple[SourceClip, ...]
    name: str | None = None


class Source:
    """A dataset folder or zip, read through relative POSIX member names."""

    def __init__(self, location: str | Path):
        self.location = Path(location)
        if not self.location.exists():
            raise DataError(f"{self.location}: dataset source not found; expected a folder or a .zip file")
        self.is_zip = self.location.is_file()
        if self.is_zip and not zipfile.is_zipfile(self.location):
            raise DataError(f"{self.location}: not a zip archive; expected a dataset folder or a .zip file")

    @functools.cached_property
    def members(self) -> tuple[str, ...]:
        """Every file below the source, as sorted relative POSIX paths."""
        if self.is_zip:
            with zipfile.ZipFile(self.location) as archive:
                names = [n for n in archive.namelist() if not n.endswith("/")]
            for name in names:
                require_inside(name, self.name(name))
        else:
            names = [p.relative_to(self.location).as_posix() for p in self.location.rglob("*") if p.is_file()]
        return tuple(sorted(n for n in names if not is_hidden(n)))

    def name(self, member: str) -> str:
        """How to name a member in messages: ``source/member``."""
        return f"{self.location}/{member}" if not self.is_zip else f"{self.location}:{member}"

    def read_bytes(self, member: str) -> bytes:
        if self.is_zip:
            return _zip(self.location).read(member)
        return (self.location / member).read_bytes()


def require_inside(member: str, where: str) -> None:
    """Refuse a member name that would lead out of the folder it is unpacked or read into: absolute, or with ``..``."""
    path = PurePosixPath(member.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", member):
        raise DataError(f"{where}: path leads outside the corpus (absolute or '..'); expected a relative name below it")


def require_file_name(name: str, where: str) -> None:
    """Refuse a listed file name that is not one plain name (``x.wav``, not ``../x.wav`` or ``a/x.wav``)."""
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise DataError(f"{where}: file name {name!r} is not a plain file name; expected a name inside the audio folder")


def is_hidden(member: str) -> bool:
    """Whether a relative POSIX path is hidden (``.x.wav``, macOS's ``._x.wav`` and ``__MACOSX/``): never a clip."""
    return any(part.startswith(".") or part == "__MACOSX" for part in member.split("/"))


# Kept as they are in a clip id; any other character (``/`` included) becomes %XX.
_ID_PUNCTUATION = frozenset("-_.+=,@()[]")
_MAX_ID_BYTES = 200  # the id is a file name stem (clips/<id>.wav, wav/<id>-07.wav): well within 255 bytes


def path_id(member: str) -> str:
    """A clip id from a file's path below the corpus root, without its suffix.

    Letters (any script), digits and ``-_.+=,@()[]`` are kept; every other
    character, ``/`` among them, becomes ``%XX`` of its UTF-8 bytes, as in a
    URL. The mapping is one-to-one, so paths that differ in more than their
    suffix give distinct ids (``a.wav`` beside ``a.flac`` is a duplicate), and
    an id is always a valid file name: ``cat/000.wav`` gives ``cat%2F000``.
    """
    stem = PurePosixPath(member).with_suffix("").as_posix()
    return "".join(c if c.isalnum() or c in _ID_PUNCTUATION else "".join(f"%{b:02X}" for b in c.encode()) for c in stem)


@functools.lru_cache(maxsize=4)
def _zip(location: Path) -> zipfile.ZipFile:
    # One open archive per worker process, reused across its tasks.
    return zipfile.ZipFile(location)


def read_corpus(source: Source, *, layout: str, subset: str, label_pattern: str | None) -> Corpus:
    """Find the labelled clips of ``source`` in the given (or detected) layout."""
    members = source.members
    audio = [m for m in members if PurePosixPath(m).suffix.lower() in AUDIO_SUFFIXES]
    csv = [m for m in members if m == "meta/esc50.csv" or m.endswith("/meta/esc50.csv")]
    if layout == "auto":
        layout = _detect(source, audio, csv, label_pattern)
    if layout == "esc50":
        if not csv:
            raise DataError(f"{source.location}: no meta/esc50.csv; expected the ESC-50 master layout")
        corpus = _esc50(source, csv[0], subset)
    else:
        if not audio:
            raise DataError(
                f"{source.location}: no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) found; "
                "expected the corpus's audio below it, or another extract.source"
            )
        if layout == "esc10":
            corpus = _esc10(source, audio)
        elif layout == "folders":
            corpus = _folders(source, audio)
        else:
            corpus = _filename(source, audio, label_pattern)
    _check_unique(source, corpus.clips)
    return corpus


def _detect(source: Source, audio: list[str], csv: list[str], label_pattern: str | None) -> str:
    if csv:
        return "esc50"
    if not audio:
        raise DataError(
            f"{source.location}: no audio files found; expected ESC-50 master (meta/esc50.csv + audio/), "
            "the ESC-10 release (001 - Dog bark/…) or one folder per class"
        )
    if label_pattern:
        return "filename"
    depth = _wrapper_depth(audio)
    folders = {_class_folder(m, depth) for m in audio if len(PurePosixPath(m).parts) > depth + 1}
    if folders and all(_ESC10_FOLDER.match(f) for f in folders):
        return "esc10"
    if folders:
        return "folders"
    raise DataError(
        f"{source.location}: audio files are not in class folders; expected one folder per class, "
        "or set extract.label_pattern to read labels from file names"
    )


def _class_folder(member: str, depth: int) -> str:
    return PurePosixPath(member).parts[depth]


def _wrapper_depth(audio: list[str], keep: int = 2) -> int:
    """How many leading folders every file shares, leaving at least ``keep`` parts of each path.

    ``keep=2`` keeps a class folder and the file (1 for ``ESC-10/001 - Dog bark/x.ogg``);
    ``keep=1`` keeps the file (1 for ``RAVDESS/03-01-05-01-02-01-12.wav``).
    """
    paths = [PurePosixPath(m) for m in audio]
    depth = 0
    while all(len(p.parts) > depth + keep for p in paths) and len({p.parts[depth] for p in paths}) == 1:
        depth += 1
    return depth


def _below(member: str, depth: int) -> str:
    return PurePosixPath(*PurePosixPath(member).parts[depth:]).as_posix()


def _esc_clip(member: str, class_name: str) -> SourceClip:
    """A clip of an ESC layout: fold, source recording and take from its name ``{fold}-{source}-{take}``.

    A file of another name is its own source, with the fold assigned later.
    """
    stem = PurePosixPath(member).stem
    match = _ESC_NAME.match(stem)
    if not match:
        return SourceClip(stem, stem, "", None, class_name, member)
    return SourceClip(stem, match["source"], match["take"], int(match["fold"]), class_name, member)


def _path_clip(member: str, relative: str, class_name: str, group: str | None = None) -> SourceClip:
    """A clip of the folders or filename layout: its id from its path, its own source unless ``group`` names one."""
    clip_id = path_id(relative)
    return SourceClip(clip_id, group or clip_id, "", None, class_name, member)


def _esc10(source: Source, audio: list[str]) -> Corpus:
    depth = _wrapper_depth(audio)
    clips = []
    for member in audio:
        folder = _class_folder(member, depth)
        match = _ESC10_FOLDER.match(folder)
        if not match or match["name"] not in ESC10_FOLDERS:
            raise DataError(
                f"{source.name(folder)}: unknown ESC-10 class folder; expected 'NNN - <name>' with a name in {sorted(ESC10_FOLDERS)}"
            )
        clips.append(_esc_clip(member, ESC10_FOLDERS[match["name"]]))
    missing = sorted(set(ESC10_FOLDERS.values()) - {c.class_name for c in clips})
    if missing:
        raise DataError(f"{source.location}: ESC-10 class folders missing for {missing}; expected all 10 classes")
    return Corpus("esc10", ESC10_CLASSES, tuple(clips), "ESC-10")


def _folders(source: Source, audio: list[str]) -> Corpus:
    depth = _wrapper_depth(audio)
    loose = [m for m in audio if len(PurePosixPath(m).parts) <= depth + 1]
    if loose:
        raise DataError(f"{source.name(loose[0])}: audio file outside any class folder; expected <class>/<file> for the folders layout")
    clips = tuple(_path_clip(m, _below(m, depth), _class_folder(m, depth)) for m in audio)
    classes = tuple(sorted({c.class_name for c in clips}))
    if len(classes) < 2:
        raise DataError(f"{source.location}: found {len(classes)} class folder(s); expected at least 2")
    return Corpus("folders", classes, clips)


def _filename(source: Source, audio: list[str], label_pattern: str | None) -> Corpus:
    if not label_pattern:
        raise DataError("extract.label_pattern: required for the filename layout; expected a regex with a named group 'label'")
    pattern = re.compile(label_pattern)  # ExtractConfig has checked it
    depth = _wrapper_depth(audio, keep=1)
    clips = []
    for member in audio:
        match = pattern.search(PurePosixPath(member).stem)
        if not match:
            raise DataError(
                f"{source.name(member)}: file name does not match extract.label_pattern {label_pattern!r}; "
                "expected every audio file to match, or the file moved out of the corpus"
            )
        clips.append(_path_clip(member, _below(member, depth), match["label"], match.groupdict().get("group")))
    classes = tuple(sorted({c.class_name for c in clips}))
    if len(classes) < 2:
        raise DataError(f"{source.location}: file names give {len(classes)} label(s); expected at least 2")
    return Corpus("filename", classes, tuple(clips))


def _esc50(source: Source, csv_member: str, subset: str) -> Corpus:
    csv_name = source.name(csv_member)
    try:
        meta = read_table(io.BytesIO(source.read_bytes(csv_member)), text=("filename", "category", "src_file", "esc10"))
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError, ValueError) as err:
        raise DataError(f"{csv_name}: not a readable CSV ({err}); expected ESC-50's metadata table".replace("\n", " ")) from None
    missing = [c for c in ESC50_COLUMNS if c not in meta.columns]
    if missing:
        raise DataError(f"{csv_name}: missing column(s) {missing}; expected {list(ESC50_COLUMNS)}")
    esc10 = meta["esc10"].map({"True": True, "False": False})
    if esc10.isna().any():
        bad = meta["esc10"][esc10.isna()].iloc[0]
        raise DataError(f"{csv_name}: column esc10: expected True or False, got {bad!r}")
    if subset == "esc10":
        meta = meta[esc10.astype(bool)]
        classes = ESC10_CLASSES
        unknown = sorted(set(meta["category"]) - set(classes))
        if unknown:
            raise DataError(f"{csv_name}: esc10 rows with unknown category {unknown}; expected {list(classes)}")
    else:
        by_target = meta.drop_duplicates("target").sort_values("target")
        classes = tuple(by_target["category"])
    if meta.empty:
        raise DataError(f"{csv_name}: no rows selected by extract.subset={subset!r}; expected esc10 rows marked True, or subset: all")
    audio_dir = PurePosixPath(csv_member).parent.parent / "audio"
    members = set(source.members)
    clips = []
    for row in meta.itertuples(index=False):
        require_file_name(row.filename, f"{csv_name}: column filename")
        member = (audio_dir / row.filename).as_posix()
        if member not in members:
            raise DataError(f"{source.name(member)}: listed in {csv_member} but missing; expected the audio file")
        stem = PurePosixPath(row.filename).stem
        # ESC-50 names carry the target as a 4th field; the clip id drops it so
        # that both ESC layouts name a clip the same way (1-100032-A).
        clip_id = stem.rsplit("-", 1)[0] if stem.count("-") == 3 else stem
        clips.append(SourceClip(clip_id, str(row.src_file), str(row.take), int(row.fold), row.category, member))
    return Corpus("esc50", classes, tuple(clips), "ESC-10" if subset == "esc10" else "ESC-50")


def _check_unique(source: Source, clips: tuple[SourceClip, ...]) -> None:
    seen: dict[str, str] = {}
    for clip in clips:
        if clip.clip_id in seen:
            raise DataError(
                f"{source.name(clip.member)}: duplicate clip id {clip.clip_id!r} (also {seen[clip.clip_id]}); "
                "expected one audio file per name (ESC layouts: per ESC name across class folders)"
            )
        if len(clip.clip_id.encode()) > _MAX_ID_BYTES:
            raise DataError(
                f"{source.name(clip.member)}: path too long for a clip id ({len(clip.clip_id.encode())} bytes "
                f"as {clip.clip_id[:40]!r}…); expected a shorter folder and file name"
            )
        seen[clip.clip_id] = clip.member
