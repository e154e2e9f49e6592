"""Histology ingest: electrode positions and probe tracks -> histology.ElectrodeCCFPosition, ...

Share layout (``histology_data_paths``), per session folder ``<h2o>/<YYYYMMDD>[_<k>]/`` (k = 1 for
the day's second session, as the tracking and ephys folders count):

* IBL alignment GUI: ``probe<P>/channel_locations[_shank<S>].json`` and
  ``probe<P>/xyz_picks[_shank<S>].json`` (P = MAP probe number = imec + 1, S 1-based);
* MAP: ``landmarks_<h2o>_<YYYYMMDD>_<P>[_<S>]_siteInfo.mat`` and ``landmarks_<h2o>_<YYYYMMDD>_<P>.csv``
  anywhere under the session folder (MAP kept them in ``histology/``).

The share scan turns these files into :class:`HistologyProbeFolder` rows (session folder +
probe). :class:`HistologyIngest` takes its keys from there once the session's ephys is in and a
CCF is loaded; one make() loads one probe insertion in one transaction.

Channel -> electrode: ``channel_<i>`` is the sorting's channel index (Kilosort: a row of
``channel_map.npy``, whose value is the position among the saved channels); the saved channels'
electrodes are read from the insertion's SpikeGLX meta, as the ephys ingest found it. With no
Kilosort sorting (JRCLUST) the index is the saved channel's position.

Coordinates: IBL x (ML, right +), y (AP, anterior +), z (DV, dorsal +), um from bregma ->
CCF (AP, DV, ML) um = (bregma_ap - y, bregma_dv - z, bregma_ml + x), bregma from the file's
``origin.bregma`` (CCF um, ML/AP/DV) or IBL's (5739, 5400, 332), which is also the simulator's.

A bad input fails its insertion with a message naming the file: a probe the session does not
have, a shank the probe type does not have (or a recorded shank with no file, or a channel on
another shank than its file says), a channel the sorting does not have, coordinates more than
:data:`MAX_OUTSIDE_UM` outside the annotation volume, or a shank with no channel in the brain.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from pathlib import Path

import datajoint as dj
import numpy as np

from pipeline import bulk, ccf, ephys, experiment, histology, lab
from pipeline.db import schema as _schema

from . import share
from .readers.errors import ReaderError
from .readers.histology import (IBL_BREGMA_MLAPDV, parse_histology_filename, read_channel_locations,
                                read_site_info, read_track_csv, read_xyz_picks)

schema = _schema("ingest_histology")

MAX_OUTSIDE_UM = 1000.0  # farther than this outside the annotation volume: a wrong file, not a stray channel
SESSION_RE = re.compile(r"^(?P<h2o>[^/]+)/(?P<date>\d{8})(?:_(?P<k>\d+))?/(?P<rest>.+)$")
PROBE_DIR_RE = re.compile(r"^probe(?P<probe>\d+)$")


class HistologyError(dj.DataJointError):
    """Histology that does not fit the recording it is for."""


def classify(relpath: str) -> tuple[str, dt.date, int, int, str, object] | None:
    """(h2o, date, day index, probe, session folder, parsed name) of a histology file, else None."""
    m = SESSION_RE.match(relpath)
    if not m:
        return None
    try:
        date = dt.datetime.strptime(m["date"], "%Y%m%d").date()
    except ValueError:
        return None
    parts = m["rest"].split("/")
    parsed = parse_histology_filename(parts[-1])
    if parsed is None:
        return None
    if parsed.kind in ("channel_locations", "xyz_picks"):
        probe_dir = PROBE_DIR_RE.match(parts[0]) if len(parts) == 2 else None
        if not probe_dir:
            return None
        probe = int(probe_dir["probe"])
    else:
        probe = parsed.probe
    folder = relpath[: len(relpath) - len(m["rest"]) - 1]
    return m["h2o"], date, int(m["k"] or 0), probe, folder, parsed


@schema
class HistologyProbeFolder(dj.Manual):
    definition = """
    # histology files of one probe of one session folder, found by the share scan
    water_restriction_number : varchar(16)
    session_date : date
    day_index : int32                    # 0 for the day's first session, k for the folder suffix _k
    histology_probe : int16              # MAP probe number (imec + 1) the files are for
    ---
    -> share.ShareRoot
    folder : varchar(512)                # session folder relative to the root: <h2o>/<YYYYMMDD>[_<k>]
    """


@share.after_scan("histology")
def record_probe_folders(root: dict, report: share.RootReport) -> None:
    """New histology files -> probe-folder rows; a folder with changed files gets another try."""
    known = set(bulk.select_rows(HistologyProbeFolder, ("water_restriction_number", "session_date", "day_index",
                                                        "histology_probe")))
    rows = []
    for rel in report.new + report.changed:
        found = classify(rel)
        if found is None:
            continue
        h2o, date, k, probe, folder, _ = found
        key = (h2o, date, k, probe)
        if key not in known:
            known.add(key)
            rows.append((*key, root["root_hash"], folder))
    bulk.insert_rows(HistologyProbeFolder, ("water_restriction_number", "session_date", "day_index", "histology_probe",
                                            "root_hash", "folder"), rows)
    touched = [found for rel in report.changed + report.vanished if (found := classify(rel))]
    if touched:
        from pipeline.jobs import clear_errors

        clear_errors(HistologyIngest, [{"water_restriction_number": h, "session_date": d, "day_index": k,
                                        "histology_probe": p} for h, d, k, p, _, _ in touched])


def session_of_folder() -> dict[tuple, dict]:
    """(h2o, date, day index) -> session key, for ingested sessions."""
    return experiment.sessions_by_day()


def ready_folders() -> list[dict]:
    """Probe folders whose session and its ephys are ingested (keys of HistologyIngest)."""
    sessions = session_of_folder()
    with_ephys = {(k["subject_id"], k["session"]) for k in ephys.ProbeInsertion.proj().to_dicts()}
    out = []
    for row in HistologyProbeFolder.proj().to_dicts():
        s = sessions.get((row["water_restriction_number"], row["session_date"], row["day_index"]))
        if s and (s["subject_id"], s["session"]) in with_ephys:
            out.append(row)
    return out


def atlas_version() -> str | None:
    """The annotation version regions are looked up in: the finest loaded (then by name); None if none."""
    rows = ccf.AnnotationVersion().to_dicts()
    if not rows:
        return None
    return sorted(rows, key=lambda r: (r["resolution"], r["annotation_version"]))[0]["annotation_version"]


# --- channel -> electrode ---------------------------------------------------------------------

def channel_electrodes(session_key: dict, insertion_number: int) -> tuple[np.ndarray, Path]:
    """MAP electrode number (1-based) of each sorting channel index, and the meta it came from."""
    from ingest import ephys as ingest_ephys
    from ingest.readers.spikeglx import read_recording

    runs = (ingest_ephys.EphysIngest & session_key).proj().to_dicts()
    meta = (ingest_ephys.EphysProbeMeta * share.ShareFile * share.ShareRoot & runs
            & {"imec": insertion_number - 1}).to_dicts() if runs else []
    if not meta:
        raise HistologyError(f"session {session_key} probe {insertion_number}: no SpikeGLX meta recorded by the "
                             "ephys ingest, so its channels cannot be mapped to electrodes")
    meta_path = Path(meta[0]["root_path"]) / meta[0]["relpath"]
    electrodes = np.array([e.electrode + 1 for e in read_recording(meta_path).electrodes], np.int64)
    channel_map = np.arange(len(electrodes))
    sortings = (ephys.Clustering & {**session_key, "insertion_number": insertion_number}
                & "clustering_method LIKE 'kilosort%'").to_arrays("clustering_path")
    for rel in sorted(sortings.tolist()):
        path = Path(meta[0]["root_path"]) / rel / "channel_map.npy"
        if path.exists():
            channel_map = np.load(path).ravel().astype(np.int64)
            if len(channel_map) and (channel_map.min() < 0 or channel_map.max() >= len(electrodes)):
                raise ReaderError(path, f"channel map values {channel_map.min()}..{channel_map.max()} are not saved "
                                        f"channels of {meta_path} ({len(electrodes)})")
            break
    return electrodes[channel_map], meta_path


# --- checks -------------------------------------------------------------------------------------

def _outside_distance(points: np.ndarray, version: dict) -> np.ndarray:
    """um each (AP, DV, ML) point lies outside the annotation volume (0 inside)."""
    res = float(version["resolution"])
    lo = -res / 2
    hi = (np.array([version["size_ap"], version["size_dv"], version["size_ml"]]) - 0.5) * res
    below, above = np.clip(lo - points, 0, None), np.clip(points - hi, 0, None)
    return np.linalg.norm(np.maximum(below, above), axis=1)


def check_coordinates(path: Path, what: list[str], points: np.ndarray, regions: np.ndarray, version: dict) -> None:
    far = _outside_distance(points, version)
    if not np.isfinite(points).all():
        raise ReaderError(path, "coordinates are not finite")
    if (far > MAX_OUTSIDE_UM).any():
        i = int(np.argmax(far))
        ap, dv, ml = points[i]
        raise ReaderError(path, f"{int((far > MAX_OUTSIDE_UM).sum())} of {len(points)} positions lie more than "
                                f"{MAX_OUTSIDE_UM:g} um outside the {version['annotation_version']} atlas, e.g. {what[i]} at "
                                f"CCF AP {ap:.0f}, DV {dv:.0f}, ML {ml:.0f} um ({far[i]:.0f} um outside): wrong units "
                                "or coordinate convention (expected um relative to bregma, IBL x=ML, y=AP, z=DV)?")
    if len(regions) and not regions.any():
        raise ReaderError(path, f"none of its {len(points)} positions is inside the brain of the "
                                f"{version['annotation_version']} atlas: wrong coordinates or convention?")


# --- the ingest table ---------------------------------------------------------------------------

@schema
class HistologyIngest(dj.Imported):
    definition = """
    # the histology of one probe insertion loaded
    -> HistologyProbeFolder
    ---
    -> ephys.ProbeInsertion
    """

    class HistologyFile(dj.Part):
        definition = """
        -> master
        file_hash : char(32)             # MD5 of relpath
        ---
        relpath : varchar(1024)          # relative to the share root
        file_size : int64
        file_mtime : float64
        """

    @property
    def key_source(self):
        keys = ready_folders() if atlas_version() else []
        return HistologyProbeFolder.proj() & (keys or "FALSE")

    def make(self, key: dict) -> None:
        folder = (HistologyProbeFolder * share.ShareRoot & key).to_dicts()[0]
        root, probe = Path(folder["root_path"]), key["histology_probe"]
        session_key = session_of_folder()[(key["water_restriction_number"], key["session_date"], key["day_index"])]
        where = root / folder["folder"]
        insertions = {r["insertion_number"]: r for r in (ephys.ProbeInsertion & session_key).to_dicts()}
        if probe not in insertions:
            raise HistologyError(f"{where}: histology for probe {probe}, but session {session_key['session']} of "
                                 f"{key['water_restriction_number']} ({key['session_date']}) has no probe {probe}; its "
                                 f"probes: {', '.join(map(str, sorted(insertions))) or 'none'}")
        insertion = insertions[probe]
        ikey = {**session_key, "insertion_number": probe}
        files = self.probe_files(folder, probe)
        version = (ccf.AnnotationVersion & {"annotation_version": atlas_version()}).fetch1()
        by_kind = defaultdict(list)
        for rel, _, _, parsed in files:
            by_kind[parsed.kind].append((root / rel, parsed))
        if by_kind["channel_locations"] and by_kind["site_info"]:
            raise HistologyError(f"{where}: probe {probe} has both IBL channel_locations and MAP siteInfo files; "
                                 "keep one so the pipeline does not have to guess")
        electrodes = histology.insertion_electrodes(ikey)
        n_shanks = int(max((lab.ProbeType.Electrode & {"probe_type": insertion["probe_type"]}).to_arrays("shank")))
        positions, bregma, source = {}, {}, None
        if by_kind["channel_locations"]:
            source = "ibl_alignment_gui"
            positions, bregma = self.read_ibl(by_kind["channel_locations"], session_key, insertion, electrodes, n_shanks)
        elif by_kind["site_info"]:
            source = "map_landmarks"
            positions = self.read_map(by_kind["site_info"], insertion, electrodes, n_shanks)
        track = self.read_tracks(by_kind, bregma, insertion, n_shanks)
        if source is None and not track:
            raise HistologyError(f"{where}: no electrode positions or track for probe {probe}")

        config = {k: electrodes[0][k] for k in ("probe_type", "electrode_config_name", "electrode_group")} if electrodes else {}
        if positions:
            histology.ElectrodeCCFPosition.insert1({**ikey, "track_source": source,
                                                    "annotation_version": version["annotation_version"]})
            inside, outside = [], []
            for electrode, (path, point, region, named) in sorted(positions.items()):
                row = {**ikey, **config, "electrode": electrode, **histology._map_columns(point)}
                if region:
                    inside.append({**row, "annotation_version": version["annotation_version"], "region_id": region,
                                   "source_region": named[:64] if named else None})
                else:
                    far = _outside_distance(point[None, :], version)[0]
                    outside.append({**row, "position_error": (f"outside the {version['annotation_version']} volume by "
                                                              f"{far:.0f} um" if far > 0 else
                                                              "outside the brain (unlabelled voxel)")[:255]})
            histology.ElectrodeCCFPosition.ElectrodePosition.insert(inside)
            histology.ElectrodeCCFPosition.ElectrodePositionError.insert(outside)
            rows = histology.shank_track_rows(ikey)
            histology.InterpolatedShankTrack.insert(rows["track"], allow_direct_insert=True)
            for part, name in ((histology.InterpolatedShankTrack.Point, "point"),
                               (histology.InterpolatedShankTrack.BrainSurfacePoint, "surface"),
                               (histology.InterpolatedShankTrack.DeepestElectrodePoint, "deepest"),
                               (histology.InterpolatedShankTrack.Electrode, "electrode")):
                if rows[name]:
                    part.insert(rows[name], allow_direct_insert=True)
            for ckey in (ephys.Clustering & ikey).proj().to_dicts():
                histology.ClusteringCCF.insert1(ckey, allow_direct_insert=True)
                histology.ClusteringCCF.Unit.insert(histology.unit_ccf_rows(ckey), allow_direct_insert=True)
        if track:
            histology.LabeledProbeTrack.insert1({**ikey, "track_source": track[0]})
            histology.LabeledProbeTrack.Point.insert([{**ikey, "order": i, "shank": shank, **histology._map_columns(p)}
                                                      for i, (shank, p) in enumerate(track[1])])
        self.insert1({**key, **ikey})
        self.HistologyFile.insert([{**key, "file_hash": share.path_hash(rel), "relpath": rel, "file_size": size,
                                    "file_mtime": mtime} for rel, size, mtime, _ in files])

    @staticmethod
    def probe_files(folder: dict, probe: int) -> list[tuple[str, int, float, object]]:
        """(relpath, size, mtime, parsed name) of the present files of this probe in the session folder."""
        prefix = folder["folder"] + "/"
        pattern = prefix.replace("'", "''") + "%"
        rows = share.ShareFile & {"root_hash": folder["root_hash"], "status": "present"} & f"relpath LIKE '{pattern}'"
        out = []
        for rel, size, mtime in zip(*rows.to_arrays("relpath", "size", "mtime")):
            found = classify(rel) if rel.startswith(prefix) else None
            if found and found[3] == probe:
                out.append((rel, int(size), float(mtime), found[5]))
        return sorted(out, key=lambda f: f[0])

    @staticmethod
    def read_ibl(found: list, session_key: dict, insertion: dict, electrodes: list[dict], n_shanks: int):
        """electrode -> (file, CCF (AP, DV, ML), region id, region named in the file); shank -> bregma."""
        shank_of = {e["electrode"]: e["shank"] for e in electrodes}
        channel_to_electrode, meta_path = channel_electrodes(session_key, insertion["insertion_number"])
        version = (ccf.AnnotationVersion & {"annotation_version": atlas_version()}).fetch1()
        positions, bregma, covered = {}, {}, set()
        for path, parsed in sorted(found, key=lambda f: str(f[0])):
            loc = read_channel_locations(path)
            if loc.shank is not None and not 1 <= loc.shank <= n_shanks:
                raise HistologyError(f"{path}: shank {loc.shank}, but probe {insertion['insertion_number']} is a "
                                     f"{insertion['probe_type']} with {n_shanks} shank(s)")
            bad = loc.channels[loc.channels >= len(channel_to_electrode)]
            if len(bad):
                raise HistologyError(f"{path}: channel_{bad[0]} is not a channel of the recording "
                                     f"({len(channel_to_electrode)} saved channels in {meta_path})")
            numbers = channel_to_electrode[loc.channels]
            shanks = np.array([shank_of.get(int(e), -1) for e in numbers])
            if loc.shank is not None and (shanks != loc.shank).any():
                i = int(np.argmax(shanks != loc.shank))
                raise HistologyError(f"{path}: channel_{loc.channels[i]} is electrode {numbers[i]} on shank {shanks[i]}, "
                                     f"not shank {loc.shank} as the file name says")
            points = loc.ccf_um()
            regions = histology._regions(points, version["annotation_version"])
            check_coordinates(path, [f"channel_{c}" for c in loc.channels], points, regions, version)
            for c, e, p, r, named in zip(loc.channels, numbers.tolist(), points, regions.tolist(), loc.brain_region):
                if e in positions:
                    raise HistologyError(f"{path}: electrode {e} (channel_{c}) also has a position in {positions[e][0]}")
                positions[e] = (path, p, r, named)
            for s in set(shanks.tolist()):
                bregma[s] = loc.bregma_mlapdv
            covered |= set(shanks.tolist())
        recorded = {shank_of[int(e)] for e in channel_to_electrode if int(e) in shank_of}
        if recorded - covered:
            raise HistologyError(f"{found[0][0].parent}: no channel_locations for shank(s) "
                                 f"{', '.join(map(str, sorted(recorded - covered)))} of probe "
                                 f"{insertion['insertion_number']} ({insertion['probe_type']}, {n_shanks} shank(s)), "
                                 "whose channels were recorded")
        return positions, bregma

    @staticmethod
    def read_map(found: list, insertion: dict, electrodes: list[dict], n_shanks: int):
        """MAP siteInfo: sites are the configuration's electrodes (of the file's shank) in ascending order."""
        version = (ccf.AnnotationVersion & {"annotation_version": atlas_version()}).fetch1()
        positions = {}
        for path, parsed in sorted(found, key=lambda f: str(f[0])):
            info = read_site_info(path)
            if info.shank is not None and not 1 <= info.shank <= n_shanks:
                raise HistologyError(f"{path}: shank {info.shank}, but probe {insertion['insertion_number']} is a "
                                     f"{insertion['probe_type']} with {n_shanks} shank(s)")
            mine = [e["electrode"] for e in electrodes if info.shank is None or e["shank"] == info.shank]
            if len(info.ccf_um) != len(mine):
                raise HistologyError(f"{path}: {len(info.ccf_um)} sites, but the electrode configuration has "
                                     f"{len(mine)} electrode(s){f' on shank {info.shank}' if info.shank else ''}")
            points = info.ccf_um[info.valid]
            numbers = np.array(mine)[info.valid]
            regions = histology._regions(points, version["annotation_version"])
            check_coordinates(path, [f"site {i + 1}" for i in np.flatnonzero(info.valid)], points, regions, version)
            names = [n for n, v in zip(info.names, info.valid) if v]
            for e, p, r, named in zip(numbers.tolist(), points, regions.tolist(), names):
                if e in positions:
                    raise HistologyError(f"{path}: electrode {e} also has a position in {positions[e][0]}")
                positions[e] = (path, p, r, named)
        return positions

    @staticmethod
    def read_tracks(by_kind: dict, bregma: dict, insertion: dict, n_shanks: int):
        """(track source, [(shank, CCF point), ...]) from xyz_picks (else MAP track CSVs), or None."""
        points = []
        for kind, source in (("xyz_picks", "ibl_alignment_gui"), ("track_csv", "map_landmarks")):
            for path, parsed in sorted(by_kind[kind], key=lambda f: str(f[0])):
                shank = parsed.shank or 1
                if not 1 <= shank <= n_shanks:
                    raise HistologyError(f"{path}: shank {shank}, but probe {insertion['insertion_number']} is a "
                                         f"{insertion['probe_type']} with {n_shanks} shank(s)")
                track = (read_xyz_picks(path, bregma.get(shank, IBL_BREGMA_MLAPDV)) if kind == "xyz_picks"
                         else read_track_csv(path))
                points += [(shank, p) for p in track.ccf_um]
            if points:
                return source, points
        return None


# --- after the stage ----------------------------------------------------------------------------

def histology_report() -> list[str]:
    """Extra lines of ingest-histology; also fills ClusteringCCF for clusterings loaded after their
    insertion's histology (e.g. by ingest-ephys --replace). HistologyIngest fills
    InterpolatedShankTrack itself; positions entered by hand need
    ``histology.InterpolatedShankTrack.populate()`` before ClusteringCCF."""
    from .runner import run_ingest

    lines = []
    for table in (histology.ClusteringCCF,):
        summary = run_ingest(table, progress=False)
        if summary.inserted or summary.failed:
            lines.append(summary.line())
            lines += [f"  error: {message}" for message in summary.errors]
    if not atlas_version() and len(HistologyProbeFolder()):
        lines.append(f"waiting: {len(HistologyProbeFolder())} histology probe folder(s): no CCF is loaded (mapshell load-ccf)")
    else:
        pending = len(HistologyProbeFolder()) - len(ready_folders())
        if pending:
            lines.append(f"waiting: {pending} histology probe folder(s) whose session or ephys is not ingested "
                         "(or whose water-restriction number is not registered)")
    return lines
