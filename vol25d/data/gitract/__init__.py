"""The Kaggle UW-Madison GI-tract data: 16-bit PNG slices and RLE masks in, MSD-layout NIfTI out, and back.

The competition's folder::

    src/train.csv                                   id,class,segmentation
    src/train/<case>/<case_day>/scans/slice_XXXX_W_H_pw_ph.png
    src/test/<case>/<case_day>/scans/…              (present only while a notebook is scored)

- Ids are ``<case_day>_slice_XXXX`` (``case123_day20_slice_0001``); classes are large_bowel, small_bowel,
  stomach, which overlap, so labels are 4-D multi-label ``(X, Y, Z, 3)`` uint8 in that order.
- RLE: space-separated 1-indexed ``start length`` pairs over the row-major (C-order) flattened ``H×W``
  slice — the order ``train.csv`` decodes to (the Evaluation page's "top to bottom, then left to right"
  wording is boilerplate from older competitions and does not match the files). Empty string = empty mask.
- A slice PNG has rows ``y`` and columns ``x``: ``png[y, x]`` goes to ``volume[x, y, z]``, ``z`` the
  position of the slice in slice-number order. Spacing ``(pw, ph, 3.0)`` mm.
- Affine ``diag(pw, ph, 3.0, 1)``, origin 0. The competition gives no patient orientation beyond "slices
  run superior–inferior, 3 mm apart", so we claim no flips: reorienting to RAS+ is then a no-op, the slice
  axis stays ``Z`` (the default rotation axis SI), and predictions map back to the PNG grid unchanged.
  Anatomical left/right shown by a viewer is not meaningful for these files.

The package, one concern a module: :mod:`~vol25d.data.gitract.rle` (the masks' run-length code),
:mod:`~vol25d.data.gitract.reading` (slices, case-days, ``train.csv``, patients),
:mod:`~vol25d.data.gitract.convert` (``vol25d convert-gitract``), :mod:`~vol25d.data.gitract.submission`
(``submission.csv``), :mod:`~vol25d.data.gitract.score` (the competition's score) and
:mod:`~vol25d.data.gitract.kaggle` (the Kaggle notebooks' input and model folders).
"""

from vol25d.data.gitract.convert import convert_gitract, load_slice_index
from vol25d.data.gitract.reading import (
    CLASSES,
    MISLABELLED_CASE_DAYS,
    SLICE_THICKNESS_MM,
    SliceFile,
    gitract_affine,
    list_case_slices,
    list_test_slices,
    parse_slice_name,
    patient_of,
    read_gitract_case,
    read_gitract_test_case,
    read_train_csv,
)
from vol25d.data.gitract.kaggle import (
    find_input_file,
    keep_best_model,
    read_model_record,
    restore_previous_output,
    write_model_folder,
)
from vol25d.data.gitract.rle import rle_decode, rle_encode
from vol25d.data.gitract.score import (
    GI_TRACT_DICE_WEIGHT,
    GI_TRACT_HAUSDORFF_WEIGHT,
    gi_tract_hausdorff,
    gi_tract_score,
    gi_tract_score_cases,
    gi_tract_slice_dice,
)
from vol25d.data.gitract.submission import submission_rows, submission_rows_for_test_set, write_submission

__all__ = [
    "CLASSES",
    "MISLABELLED_CASE_DAYS",
    "GI_TRACT_DICE_WEIGHT",
    "GI_TRACT_HAUSDORFF_WEIGHT",
    "SLICE_THICKNESS_MM",
    "SliceFile",
    "convert_gitract",
    "find_input_file",
    "gi_tract_hausdorff",
    "gi_tract_score",
    "gi_tract_score_cases",
    "gi_tract_slice_dice",
    "gitract_affine",
    "keep_best_model",
    "list_case_slices",
    "list_test_slices",
    "load_slice_index",
    "parse_slice_name",
    "patient_of",
    "read_gitract_case",
    "read_gitract_test_case",
    "read_model_record",
    "read_train_csv",
    "restore_previous_output",
    "rle_decode",
    "rle_encode",
    "submission_rows",
    "submission_rows_for_test_set",
    "write_model_folder",
    "write_submission",
]
