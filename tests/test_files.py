import pytest

from vol25d.files import atomic_path


def test_the_file_appears_whole_and_no_temporary_is_left(tmp_path):
    target = tmp_path / "sub" / "scores.csv"
    with atomic_path(target) as temporary:
        assert temporary.parent == target.parent and temporary.name.endswith(".csv")
        temporary.write_text("a,b\n")
        assert not target.exists()
    assert target.read_text() == "a,b\n"
    assert [p.name for p in target.parent.iterdir()] == ["scores.csv"]


def test_an_error_leaves_the_old_file_and_nothing_else(tmp_path):
    target = tmp_path / "mask.nii.gz"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            assert temporary.name.endswith(".nii.gz")
            temporary.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.nii.gz"]
