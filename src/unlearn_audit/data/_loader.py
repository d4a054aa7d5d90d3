"""One loader for TOFU-format data: the hub id ``locuslab/TOFU`` or a local directory.

A local directory holds one file per split, named after the split: ``forget10.json``
(a JSON list or JSON lines, as TOFU ships them), ``forget10.jsonl`` or
``forget10.parquet``. Any split name works. Everything else (hub ids) goes through
``datasets.load_dataset``, exactly as TOFU and open-unlearning load it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from unlearn_audit.data._item import Item
from unlearn_audit.data.families import classify_question

DEFAULT_DATASET = "locuslab/TOFU"
# TOFU lays its fictitious authors out as 20 consecutive QA pairs each.
TOFU_ITEMS_PER_AUTHOR = 20
_EXTENSIONS = (".json", ".jsonl", ".parquet")


class DatasetError(ValueError):
    """A dataset that cannot be read or does not follow TOFU's schema."""


def _line_of(data: bytes, offset: int) -> int:
    """The 1-based line of a byte offset (what an editor shows)."""
    return data.count(b"\n", 0, offset) + 1


def _read_local(path: Path, split: str) -> list[dict]:
    where = f"{path}, split '{split}'"
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # ships with `datasets`

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a damaged or non-parquet file
            raise DatasetError(
                f"{where}: not a readable parquet file ({type(e).__name__}: {e}). Fix: rewrite it "
                "with pandas/pyarrow, or give the split as JSON lines."
            ) from None
    data = path.read_bytes()
    try:
        # utf-8-sig: a byte-order mark some editors write is not part of the JSON.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = _line_of(data, e.start)
        row = ""
        if not data.lstrip().startswith(b"["):  # JSON lines: one record per non-empty line
            before = data[: e.start].split(b"\n")[:-1]
            row = f", row {sum(1 for ln in before if ln.strip())}"
        raise DatasetError(
            f"{where}{row}, line {line} (byte {e.start}): not UTF-8 (byte 0x{data[e.start]:02x}). "
            f"Fix: re-encode the file as UTF-8 (from Latin-1: iconv -f latin1 -t utf-8 {path.name} > fixed.json)."
        ) from None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(
                f"{where}: not valid JSON ({e}). Fix: the file must be one JSON list of objects, "
                "or one JSON object per line."
            ) from None
        return rows
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise DatasetError(
                f"{where}, row {len(rows)}, line {lineno}: not valid JSON ({e}). Expected a JSON "
                "list or one JSON object per line."
            ) from None
    return rows


def _find_split_file(root: Path, split: str) -> Path:
    for ext in _EXTENSIONS:
        p = root / f"{split}{ext}"
        if p.is_file():
            return p
    have = sorted(p.stem for p in root.iterdir() if p.suffix in _EXTENSIONS)
    raise DatasetError(
        f"Dataset directory {root} has no file for split '{split}' "
        f"(looked for {', '.join(split + e for e in _EXTENSIONS)}). "
        f"Splits present: {', '.join(have) or 'none'}. Pass --forget-split with one of those, "
        "or add the file."
    )


def _read_hub(dataset: str, split: str) -> list[dict]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a hard dependency
        raise DatasetError("Reading a hub dataset needs `pip install datasets`.") from e
    try:
        ds = datasets.load_dataset(dataset, split, split="train")
    except Exception as e:
        raise DatasetError(
            f"Could not load split '{split}' of dataset '{dataset}' from the hub ({type(e).__name__}: "
            f"{e}). Offline? Pass --dataset with a local directory of TOFU-format files "
            f"(e.g. {split}.json)."
        ) from e
    return [dict(r) for r in ds]


# Text fields a row may leave out (or set to null); any other value is a schema error.
_OPTIONAL_TEXT = ("paraphrased_question", "paraphrased_answer", "author", "family", "key_fact")


def _json_type(value: object) -> str:
    """A value's type as the JSON file spells it, so the message matches what the user sees."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _validate(rows: Iterable[dict], where: str, split: str) -> list[Item]:
    items: list[Item] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetError(
                f"{where}, split '{split}', row {i}: expected an object with question and answer, got "
                f"{_json_type(row)}. Fix: write each row as a JSON object (a JSON list of objects, or "
                "one object per line)."
            )
        missing = [k for k in ("question", "answer") if k not in row]
        if missing:
            raise DatasetError(
                f"{where}, split '{split}', row {i}: missing field(s) {', '.join(missing)} "
                f"(has: {', '.join(sorted(row)) or 'nothing'}). TOFU's schema needs question and answer; "
                "perturbed splits also paraphrased_answer and perturbed_answer (a list)."
            )
        for k in ("question", "answer"):  # every view reads both: null is as bad as absent
            if not isinstance(row[k], str):
                raise DatasetError(
                    f"{where}, split '{split}', row {i}: field '{k}' must be a string, got "
                    f"{_json_type(row[k])}. Fix: give the row its {k} as text, or remove the row."
                )
            if not row[k].strip():  # an empty answer scores only the end-of-turn token
                raise DatasetError(
                    f"{where}, split '{split}', row {i}: field '{k}' is empty. Fix: give the row "
                    f"its {k} as text, or remove the row."
                )
        for k in _OPTIONAL_TEXT:  # null means "not given" for these
            if row.get(k) is not None and not isinstance(row[k], str):
                raise DatasetError(
                    f"{where}, split '{split}', row {i}: field '{k}' must be a string or null, got "
                    f"{_json_type(row[k])}. Fix: write it as text, or null when the row has none."
                )
        pert = row.get("perturbed_answer", [])
        if isinstance(pert, str):
            pert = [pert]
        if not isinstance(pert, (list, tuple)) or not all(isinstance(p, str) for p in pert):
            got = _json_type(pert) if not isinstance(pert, (list, tuple)) else "a list holding " + ", ".join(
                sorted({_json_type(p) for p in pert if not isinstance(p, str)}))
            raise DatasetError(
                f"{where}, split '{split}', row {i}: field 'perturbed_answer' must be a list of strings, "
                f"got {got}. Fix: write each perturbed answer as text."
            )
        empty = [j for j, p in enumerate(pert) if not p.strip()]
        if empty:
            raise DatasetError(
                f"{where}, split '{split}', row {i}: perturbed_answer[{empty[0]}] is empty. Fix: "
                "write each perturbed answer as text, or leave the empty one out of the list."
            )
        author = row.get("author")
        if author is None and ("forget" in split or split in ("full", "retain90", "retain95", "retain99")):
            author = f"tofu_author_{i // TOFU_ITEMS_PER_AUTHOR:03d}"
        items.append(
            Item(
                split=split,
                index=i,
                question=row["question"],
                answer=row["answer"],
                paraphrased_question=row.get("paraphrased_question"),
                paraphrased_answer=row.get("paraphrased_answer"),
                perturbed_answer=tuple(pert),
                author=author,
                family=row.get("family") or classify_question(row["question"]),
                key_fact=row.get("key_fact"),
            )
        )
    if not items:
        raise DatasetError(f"{where}, split '{split}': no rows. Fix: add the split's items, or pass "
                           "another split.")
    return items


def _check_required(items: list[Item], field_name: str, where: str, split: str) -> None:
    """Every item has ``field_name`` as non-empty text, or one line saying which do not."""
    bad = [it for it in items if not (getattr(it, field_name) or "").strip()]
    if not bad:
        return
    first = bad[0]
    kinds = {getattr(it, field_name) is None for it in bad}
    state = "missing or empty" if len(kinds) == 2 else "missing" if True in kinds else "empty"
    rows = ", ".join(str(it.index) for it in bad[:5]) + (" ..." if len(bad) > 5 else "")
    head = (f"{where}, split '{split}': {len(bad)} item(s) lack '{field_name}' (first: row "
            f"{first.index}), {state} in rows {rows}.")
    if len(bad) < len(items) or split.endswith("_perturbed"):
        # The split is the right one and carries the field; those rows do not.
        raise DatasetError(f"{head} This view needs it. Fix: give each of those rows its "
                           f"{field_name} as text, or remove them.")
    raise DatasetError(f"{head} This view needs it; use the '_perturbed' split (e.g. {split}_perturbed) "
                       "that carries it.")


def load_split(dataset: str | Path, split: str, *, limit: int | None = None,
               require: tuple[str, ...] = ()) -> list[Item]:
    """Load one split as a list of :class:`Item`.

    Args:
        dataset: a local directory of TOFU-format files, or a hub id (``locuslab/TOFU``).
        split: the split name (``forget10``, ``forget10_perturbed``, ``retain_perturbed``, ...).
        limit: keep only the first ``limit`` items (after validation).
        require: optional fields every item must have (e.g. ``("paraphrased_answer",)``);
            a view that needs them names them so a wrong split fails here, clearly.

    Raises:
        DatasetError: the file or split is missing, or a row breaks the schema. The message
            names the file, the split, the row and the field.
    """
    path = Path(dataset)
    if path.exists():
        if not path.is_dir():
            raise DatasetError(f"--dataset {path} is a file; pass the directory that holds {split}.json.")
        f = _find_split_file(path, split)
        items = _validate(_read_local(f, split), str(f), split)
        where = str(f)
    elif str(dataset).startswith((".", "/", "~")) or str(dataset).count("/") != 1:
        raise DatasetError(
            f"--dataset '{dataset}' is neither an existing directory nor a hub id of the form owner/name."
        )
    else:
        items = _validate(_read_hub(str(dataset), split), str(dataset), split)
        where = str(dataset)
    for field_name in require:
        _check_required(items, field_name, where, split)
    return items[:limit] if limit else items
