"""Dataset files as tools write them: a UTF-8 byte order mark, the suffixes read (and a
clear refusal of others), and a case looked up by id."""

from __future__ import annotations

from pathlib import Path

import pytest

from loomgraph.eval import Dataset, DatasetError

DATA = Path(__file__).parent / "eval_data"


def test_a_jsonl_dataset_with_a_byte_order_mark_loads() -> None:
    assert (DATA / "bom_cases.jsonl").read_bytes().startswith(b"\xef\xbb\xbf")
    dataset = Dataset.load(DATA / "bom_cases.jsonl")
    assert [c.id for c in dataset.cases] == ["paris", "oslo"]


def test_an_ndjson_file_is_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "cases.ndjson"
    path.write_text('{"id": "a", "input": "x"}\n{"id": "b", "input": "y"}\n')
    assert [c.id for c in Dataset.load(path).cases] == ["a", "b"]


@pytest.mark.parametrize("name", ["cases.csv", "cases.txt", "cases"])
def test_a_file_of_another_format_is_refused_naming_the_formats_read(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    path.write_text("id,input\na,x\n")
    with pytest.raises(DatasetError) as caught:
        Dataset.load(path)
    [problem] = caught.value.problems
    assert problem.rule == "unknown-format"
    assert ".yaml" in problem.message and ".jsonl" in problem.message


def test_a_case_is_found_by_its_id_and_equal_datasets_stay_equal() -> None:
    cases = [{"id": f"c{i}", "input": "x"} for i in range(1000)]
    dataset = Dataset.model_validate({"name": "d", "cases": cases})
    twin = Dataset.model_validate({"name": "d", "cases": cases})
    assert dataset.case("c999").id == "c999"
    assert dataset == twin  # the index built by the lookup is not a field
    with pytest.raises(KeyError, match="no case 'nope'"):
        dataset.case("nope")
