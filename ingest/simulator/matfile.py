"""MATLAB file helpers: a v5 writer with a deterministic header, and a small v7.3 (HDF5)
writer. Why: scipy stamps the wall-clock time into the v5 header (we must be byte-for-byte
deterministic), and MATLAB v7.3 files are HDF5 with a 512-byte MATLAB userblock and MATLAB
class attributes that h5py does not add by itself."""
from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import h5py
import numpy as np
import scipy.io


def _header_text(when: dt.datetime, version: str, platform: str) -> str:
    return (f"MATLAB {version} MAT-file, Platform: {platform}, "
            f"Created on: {when:%a %b %d %H:%M:%S %Y}")


def save_v5(path: Path, mdict: dict, when: dt.datetime) -> None:
    """scipy.io.savemat (v5, compressed like MATLAB's default) with a fixed header date."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, mdict, do_compression=True, oned_as="row")
    data = bytearray(buf.getvalue())
    text = _header_text(when, "5.0", "PCWIN64").encode("ascii")[:116].ljust(116, b" ")
    data[:116] = text
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))


class V73Writer:
    """Write MATLAB v7.3 variables with h5py.

    MATLAB stores arrays column-major, so a MATLAB array of shape (a, b) appears in HDF5 (and
    in h5py) as shape (b, a); this writer takes arrays in MATLAB orientation and transposes.
    Cell arrays are datasets of object references into the '#refs#' group."""

    def __init__(self, path: Path, when: dt.datetime):
        self.path = Path(path)
        self.when = when
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = h5py.File(self.path, "w", userblock_size=512, libver="earliest",
                           track_order=False)
        self._nref = 0

    _CLASS = {np.dtype("float64"): "double", np.dtype("float32"): "single",
              np.dtype("int32"): "int32", np.dtype("int16"): "int16", np.dtype("uint32"): "uint32",
              np.dtype("int64"): "int64", np.dtype("uint8"): "uint8", np.dtype("uint64"): "uint64"}

    def _put(self, group, name: str, value) -> h5py.Dataset:
        if isinstance(value, str):
            if value == "":
                ds = group.create_dataset(name, data=np.zeros(2, np.uint64))
                ds.attrs["MATLAB_class"] = np.bytes_("char")
                ds.attrs["MATLAB_empty"] = np.uint8(1)
                return ds
            arr = np.frombuffer(value.encode("utf-16-le"), np.uint16).reshape(-1, 1)
            ds = group.create_dataset(name, data=arr)
            ds.attrs["MATLAB_class"] = np.bytes_("char")
            ds.attrs["MATLAB_int_decode"] = np.int32(2)
            return ds
        if isinstance(value, list):  # cell column vector
            refs = self.f.require_group("#refs#")
            ref_arr = np.empty((1, len(value)), dtype=h5py.ref_dtype)
            for i, v in enumerate(value):
                self._nref += 1
                ref_arr[0, i] = self._put(refs, f"r{self._nref}", v).ref
            ds = group.create_dataset(name, data=ref_arr)
            ds.attrs["MATLAB_class"] = np.bytes_("cell")
            return ds
        arr = np.asarray(value)
        if arr.ndim == 0:
            arr = arr.reshape(1, 1)
        elif arr.ndim == 1:
            arr = arr.reshape(-1, 1)  # MATLAB column vector
        ds = group.create_dataset(name, data=np.ascontiguousarray(arr.T))
        ds.attrs["MATLAB_class"] = np.bytes_(self._CLASS[arr.dtype])
        return ds

    def put(self, name: str, value) -> None:
        """value: numpy array (MATLAB orientation), str, or list (a cell column)."""
        self._put(self.f, name, value)

    def close(self) -> None:
        self.f.close()
        text = _header_text(self.when, "7.3", "GLNXA64") + " HDF5 schema 1.00 ."
        head = text.encode("ascii").ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
        with open(self.path, "r+b") as fh:
            fh.write(head.ljust(512, b"\x00"))
