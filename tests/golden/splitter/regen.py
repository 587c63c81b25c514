"""Write the expected output beside each golden case: ``python tests/golden/splitter/regen.py``.

Every regenerated file must be reviewed by hand (``git diff``): a golden file that only
records what the code does proves nothing. ``NAME.expected.json`` lists each statement's
fields; ``NAME.error.json`` holds the SplitError's message, line and column.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from asyncmig.errors import SplitError
from asyncmig.splitter import Statement, split_statements

HERE = Path(__file__).resolve().parent


def statement_dict(st: Statement) -> dict[str, Any]:
    return {
        "text": st.text,
        "line": st.line,
        "column": st.column,
        "offset": st.offset,
        "end_line": st.end_line,
        "keyword": st.keyword,
        "transaction_control": st.transaction_control,
        "no_transaction": st.no_transaction,
        "copy_from_stdin": st.copy_from_stdin,
        "copy_data": st.copy_data,
    }


def read_case(path: Path) -> str:
    return path.read_bytes().decode("utf-8")


def main(names: list[str]) -> None:
    for case in sorted(HERE.glob("*.sql")):
        if names and case.stem not in names:
            continue
        expected = case.with_suffix(".expected.json")
        error = case.with_suffix(".error.json")
        try:
            result: Any = [statement_dict(s) for s in split_statements(read_case(case))]
            target, other = expected, error
        except SplitError as exc:
            result = {"message": exc.message, "line": exc.line, "column": exc.column}
            target, other = error, expected
        other.unlink(missing_ok=True)
        target.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", "utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
