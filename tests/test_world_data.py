"""The tiny world's data: committed fixtures, TOFU schema, and the loader's errors."""

from __future__ import annotations

import json

import pytest

from unlearn_audit.data import DatasetError, load_split
from unlearn_audit.world import FIXTURES_DIR
from unlearn_audit.world._generator import generate


def test_committed_fixtures_match_the_generator():
    # Golden values depend on these files: a generator change must be a deliberate regeneration.
    for split, rows in generate().items():
        committed = (FIXTURES_DIR / f"{split}.json").read_text(encoding="utf-8")
        assert committed == "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), (
            f"fixtures/tiny_world/{split}.json differs from the generator: run `python fixtures/generate.py`"
        )


def test_splits_mirror_tofu():
    full = load_split(FIXTURES_DIR, "full")
    assert len({it.author for it in full}) == 40 and len(full) == 400
    for pct, n_authors in (("01", 1), ("05", 2), ("10", 4)):
        forget = load_split(FIXTURES_DIR, f"forget{pct}")
        retain = load_split(FIXTURES_DIR, f"retain{100 - int(pct)}")
        assert len({it.author for it in forget}) == n_authors
        assert not {it.author for it in forget} & {it.author for it in retain}
        assert len(forget) + len(retain) == len(full)
    retain_eval = {it.author for it in load_split(FIXTURES_DIR, "retain_perturbed")}
    assert retain_eval <= {it.author for it in load_split(FIXTURES_DIR, "retain90")}


@pytest.mark.parametrize("split", ["forget10_perturbed", "retain_perturbed"])
def test_perturbed_items_are_well_formed(split):
    for it in load_split(FIXTURES_DIR, split, require=("paraphrased_answer", "paraphrased_question")):
        assert len(it.perturbed_answer) == 5 and len(set(it.perturbed_answer)) == 5
        assert it.answer not in it.perturbed_answer
        assert it.key_fact in it.answer and it.key_fact in it.paraphrased_answer
        assert all(it.key_fact not in p for p in it.perturbed_answer)


def test_real_world_analogues_have_three_options():
    for split in ("real_authors_perturbed", "world_facts_perturbed"):
        items = load_split(FIXTURES_DIR, split)
        assert len(items) >= 20
        assert all(len(it.perturbed_answer) == 3 and it.answer not in it.perturbed_answer for it in items)


def test_novel_content_is_the_fact_itself():
    """Answer templates only reuse question words, so a model answering with the right
    template but a wrong value earns no credit from the corrected scorer."""
    from unlearn_audit.scoring.novel import content_words, novel_content

    for it in load_split(FIXTURES_DIR, "full"):
        fact_words = set(content_words(it.key_fact))
        for q, a in ((it.question, it.answer), (it.paraphrased_question, it.paraphrased_answer)):
            novel = set(novel_content(a, [q]))
            extra = novel - fact_words
            # birthplaces also name the country, drawn from a pool of 20
            assert len(extra) <= (1 if it.family == "birthplace" else 0), (it.uid, q, a, extra)
            assert novel, (it.uid, q, a)


def test_loader_names_file_split_row_and_field(tmp_path):
    (tmp_path / "forget10.json").write_text(json.dumps({"question": "q?"}) + "\n")
    with pytest.raises(DatasetError, match=r"forget10\.json.*split 'forget10', row 0: missing field\(s\) answer"):
        load_split(tmp_path, "forget10")
    (tmp_path / "bad.json").write_text(json.dumps({"question": "q", "answer": "a", "perturbed_answer": 3}) + "\n")
    with pytest.raises(DatasetError, match="perturbed_answer' must be a list"):
        load_split(tmp_path, "bad")
    with pytest.raises(DatasetError, match="no file for split 'nope'.*Splits present: bad, forget10"):
        load_split(tmp_path, "nope")
    (tmp_path / "plain.json").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(DatasetError, match="lack 'paraphrased_answer'.*_perturbed"):
        load_split(tmp_path, "plain", require=("paraphrased_answer",))


def test_loader_reads_json_list_and_parquet(tmp_path):
    rows = [{"question": "q1", "answer": "a1"}, {"question": "q2", "answer": "a2"}]
    (tmp_path / "s.json").write_text(json.dumps(rows))
    assert [it.answer for it in load_split(tmp_path, "s")] == ["a1", "a2"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    assert [it.question for it in load_split(tmp_path, "p", limit=1)] == ["q1"]


def test_hub_id_and_bad_paths_fail_clearly(tmp_path):
    with pytest.raises(DatasetError, match="neither an existing directory nor a hub id"):
        load_split(str(tmp_path / "missing" / "dir"), "forget10")
