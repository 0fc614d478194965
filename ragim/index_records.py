"""The records of a :class:`~ragim.index.TaskIndex`, kept as compact JSON.

A record is what the index knows about a task besides its vector and parameters: ``task_id``,
``description``, ``metadata`` and fit ``stats``. A million tasks' records as Python dicts
took about 2.4 KB each (synthetic_family: a 180-character description, nine metadata fields
and six fit statistics), more than the task's vector. :class:`RecordStore` keeps each record
as the UTF-8 bytes of its ``records.jsonl`` line instead (about 0.75 KB) and decodes it when
asked, so a record is also never shared: editing a returned dict does not change the index.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from ragim.io import jsonl_bytes

Record = dict[str, Any]


class RecordStore:
    """Records by vector-store row: JSON bytes, or ``None`` for a task removed since the last
    save. ``len()`` counts rows, removed ones included.

    Examples
    --------
    >>> store = RecordStore.from_records([{"task_id": "a", "description": "x", "metadata": {}}])
    >>> store.append({"task_id": "b", "description": "y", "metadata": {"site": "01"}})
    >>> store.remove(0)
    >>> len(store), store.get(0), store.get(1)["metadata"]
    (2, None, {'site': '01'})
    >>> store.jsonl()
    b'{"description": "y", "metadata": {"site": "01"}, "task_id": "b"}\\n'
    """

    __slots__ = ("_ids", "_rows")

    def __init__(self, rows: Iterable[bytes | None] = (), ids: Iterable[str | None] = ()):
        self._rows: list[bytes | None] = list(rows)
        self._ids: list[str | None] = list(ids)  # beside the JSON, so ids need no decoding
        if len(self._ids) != len(self._rows):
            raise ValueError(f"{len(self._ids)} task ids for {len(self._rows)} record rows")

    @staticmethod
    def encode(record: Mapping[str, Any]) -> bytes:
        """The record's ``records.jsonl`` line without its newline.

        Raises
        ------
        ValidationError
            When the record holds a value JSON cannot write (see :func:`ragim.io.jsonl_bytes`).
        """
        return jsonl_bytes([record])[:-1]

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any] | None]) -> RecordStore:
        """A store of ``records`` (``None`` keeps a removed row)."""
        records = list(records)
        return cls(
            (None if r is None else cls.encode(r) for r in records),
            ids=[None if r is None else r["task_id"] for r in records],
        )

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, row: int) -> Record | None:
        """The record at vector-store ``row`` (a new dict), or ``None`` if it was removed."""
        raw = self._rows[row]
        return None if raw is None else json.loads(raw)

    def task_id(self, row: int) -> str | None:
        """The task id at ``row`` (kept beside the JSON: no decoding), ``None`` if removed."""
        return self._ids[row]

    def task_ids_by_row(self) -> list[str | None]:
        """The task id of every row (``None`` for removed ones)."""
        return list(self._ids)

    def ids(self) -> list[str]:
        """The task ids of the rows that were not removed, in row order."""
        return [t for t in self._ids if t is not None]

    def append(self, record: Mapping[str, Any]) -> None:
        """Add a record as the next row."""
        self._rows.append(self.encode(record))
        self._ids.append(record["task_id"])

    def extend(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Add records as the next rows."""
        for r in records:
            self.append(r)

    def remove(self, row: int) -> None:
        """Mark ``row`` removed (its slot stays until :meth:`take` drops it)."""
        self._rows[row] = None
        self._ids[row] = None

    def take(self, rows: Iterable[int]) -> RecordStore:
        """A store of these rows, in this order."""
        rows = list(rows)
        return RecordStore((self._rows[r] for r in rows), ids=[self._ids[r] for r in rows])

    def rows(self) -> list[Record | None]:
        """Every row decoded (``None`` for removed ones)."""
        return [self.get(r) for r in range(len(self._rows))]

    def live(self) -> Iterator[tuple[int, Record]]:
        """``(row, record)`` of every row that was not removed, in row order."""
        for row, raw in enumerate(self._rows):
            if raw is not None:
                yield row, json.loads(raw)

    def jsonl(self) -> bytes:
        """The ``records.jsonl`` file: one line per row that was not removed."""
        return b"".join(raw + b"\n" for raw in self._rows if raw is not None)

    def memory_bytes(self) -> int:
        """Bytes of Python memory the store holds: the JSON bytes objects, the task id
        strings and the two row lists (``sys.getsizeof``; a shared id string counts in full)."""
        held = [x for x in (*self._rows, *self._ids) if x is not None]
        return sum(map(sys.getsizeof, held)) + sys.getsizeof(self._rows) + sys.getsizeof(self._ids)
