"""Tracking ingest: DeepLabCut CSVs -> tracking.Tracking with a part per feature.

The share scan records each session folder ``<h2o>/<h2o>_<mmddyy>[_<k>]/`` (k = 1 for the
second session of a day, as the ephys and video folders count); :class:`TrackingIngest` loads a
session once its behaviour is in. The trial map (``file index -> Bpod trial``) says which trial
each CSV belongs to; a trial without a video is simply absent, and a CSV of a training trial
(which the behaviour ingest skips) is passed over.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from pathlib import Path

import datajoint as dj

from pipeline import bulk, experiment, tracking
from pipeline.db import schema as _schema

from . import share
from .readers.dlc import MAP_FEATURES, parse_dlc_filename, read_dlc_csv, read_trial_map
from .readers.errors import ReaderError

schema = _schema("ingest_tracking")

FOLDER_RE = re.compile(r"^(?P<h2o>[^/]+)/(?P=h2o)_(?P<mmddyy>\d{6})(?:_(?P<k>\d+))?/[^/]+$")


@schema
class TrackingSessionFolder(dj.Manual):
    definition = """
    # a DeepLabCut session folder found by the share scan
    water_restriction_number : varchar(16)
    session_date : date
    day_index : int32                 # 0 for the day's first session, k for the folder suffix _k
    ---
    -> share.ShareRoot
    folder : varchar(512)             # relative to the root
    """


@share.after_scan("tracking")
def record_session_folders(root: dict, report: share.RootReport) -> None:
    known = {(h2o, d, k) for h2o, d, k in bulk.select_rows(TrackingSessionFolder, ("water_restriction_number", "session_date", "day_index"))}
    rows = []
    for rel in report.new:
        match = FOLDER_RE.match(rel)
        if not match:
            continue
        try:
            date = dt.datetime.strptime(match["mmddyy"], "%m%d%y").date()
        except ValueError:
            continue
        key = (match["h2o"], date, int(match["k"] or 0))
        if key not in known:
            known.add(key)
            rows.append((*key, root["root_hash"], rel.rsplit("/", 1)[0]))
    bulk.insert_rows(TrackingSessionFolder, ("water_restriction_number", "session_date", "day_index", "root_hash", "folder"), rows)
    changed_folders = {rel.rsplit("/", 1)[0] for rel in report.changed if FOLDER_RE.match(rel)}
    if changed_folders:
        # A file fixed after a failed ingest gets another try.
        from pipeline.jobs import clear_errors

        keys = [{"subject_id": s, "session": n} for (s, n), f in session_folders().items() if f["folder"] in changed_folders]
        if keys:
            clear_errors(TrackingIngest, keys)


def session_folders() -> dict[tuple, dict]:
    """Ingested sessions that have a tracking folder: session key -> folder row."""
    folders = {(f["water_restriction_number"], f["session_date"], f["day_index"]): f
               for f in (TrackingSessionFolder * share.ShareRoot).to_dicts()}
    if not folders:
        return {}
    return {(s["subject_id"], s["session"]): folders[day] for day, s in experiment.sessions_by_day().items() if day in folders}


@schema
class TrackingIngest(dj.Imported):
    definition = """
    # DeepLabCut tracking of one session
    -> experiment.Session
    """

    class TrackingFile(dj.Part):
        definition = """
        -> master
        -> tracking.TrackingDevice
        -> experiment.SessionTrial
        ---
        tracking_file : varchar(255)      # CSV path relative to its share root
        """

    @property
    def key_source(self):
        keys = [{"subject_id": s, "session": n} for s, n in session_folders()]
        return experiment.Session.proj() & (keys or "FALSE")

    def make(self, key: dict) -> None:
        folder = session_folders()[(key["subject_id"], key["session"])]
        root = Path(folder["root_path"])
        prefix = folder["folder"] + "/"
        names = [rel[len(prefix):] for (rel,) in bulk.select_rows(
            share.ShareFile, ("relpath",), {"root_hash": folder["root_hash"], "status": "present"}) if rel.startswith(prefix)]
        devices = {d["tracking_position"]: d["tracking_device"] for d in tracking.TrackingDevice.to_dicts()}
        trials = set((experiment.SessionTrial & key).to_arrays("trial").tolist())
        maps: dict[str, dict[int, int]] = {}
        rows, files = [], []
        parts = defaultdict(list)
        for name in sorted(names):
            parsed = parse_dlc_filename(name)
            if parsed is None:
                continue
            if parsed.camera not in devices:
                raise ReaderError(root / prefix / name, f"camera {parsed.camera!r} is not a known tracking position "
                                                        f"({', '.join(sorted(devices))})")
            if parsed.camera not in maps:
                map_name = next((n for n in names if n.endswith(f"_{parsed.camera}.txt")), None)
                if map_name is None:
                    raise ReaderError(root / prefix, f"no trial map (*_{parsed.camera}.txt) for the {parsed.camera} camera")
                maps[parsed.camera] = read_trial_map(root / prefix / map_name)
            trial = maps[parsed.camera].get(parsed.trial)
            if trial is None:
                raise ReaderError(root / prefix / name, f"file index {parsed.trial} is not in the {parsed.camera} trial map")
            track = read_dlc_csv(root / prefix / name, required_parts=MAP_FEATURES)  # every file is checked
            if trial not in trials:  # a training trial: the behaviour ingest skipped it
                continue
            tkey = {**key, "trial": trial, "tracking_device": devices[parsed.camera]}
            rows.append({**tkey, "tracking_samples": track.n_frames})
            files.append({**tkey, "tracking_file": (prefix + name)[:255]})
            for feature in MAP_FEATURES:
                part, attr = tracking.FEATURE_PARTS[feature]
                x, y, likelihood = track.parts[feature]
                parts[part].append({**tkey, f"{attr}_x": x, f"{attr}_y": y, f"{attr}_likelihood": likelihood})
        tracking.Tracking.insert(rows, allow_direct_insert=True)
        for part, part_rows in parts.items():
            part.insert(part_rows, allow_direct_insert=True)
        self.insert1(key)
        self.TrackingFile.insert(files)
