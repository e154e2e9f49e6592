"""Rig-share simulator: writes the raw files a MAP delay-task lab produces, plus ground truth.

Pure file writing (no database). Tests and the demo read its output with the real readers and
compare with the manifest. Public API::

    simulate_share(root, subjects=2, sessions=2, scale="tiny", seed=0) -> dict  # manifest
    write_broken_catalogue(root, seed=0) -> list[dict]                          # broken cases
    main(argv) -> int        # python -m ingest.simulator DIR [--subjects N] [--sessions M]
                             #   [--scale tiny|small|bench] [--seed S] [--broken]

Same seed -> byte-identical files (no wall-clock time is embedded; MATLAB headers carry the
session's date). Scales: tiny (5-8 trials of ~2 s, 4-8 units/probe, 16+1 saved channels;
unit tests), small (40-80 trials, 20-40 units, 16+1 channels, ~1 GB; demo), bench (one
500-trial session, 400 units, ~20 M spikes, NP1.0 with 32+1 channels, plus 74,000 files
under bench_files/; no tracking, video, histology or CCF). Epochs are compressed (trials of
~2-3 s) so the .ap.bin files, which must cover the whole session, stay small.
Tracking and videos exist for registered sessions only; every ephys probe has histology.
Probe types rotate through NP1.0 (imDatPrb_type 0), NP2.0 four-shank (24) and NP2.0
single-shank (21); the bench session and the JRCLUST session use NP1.0.

Share layout (all paths relative to root)
-----------------------------------------
subjects.yaml, subjects.csv      registered subjects (people, rigs, surgeries)
behavior/<h2o>/delay_task/Session Data/<h2o>_delay_task_<YYYYMMDD>_<HHMMSS>.mat
                                 Bpod SessionData, MATLAB v5 (scipy.io.savemat, compressed)
ephys/<h2o>/catgt_<run>_g0/      run = <h2o>_<YYYYMMDD> (first session of the day) or
                                 <h2o>_<YYYYMMDD>_<k> (k-th later session that day)
    <run>_g0_tcat.nidq.XA_0_0.txt      trial starts (s, ephys clock), one per line
    <run>_g0_tcat.nidq.XA_1_2.txt      bitcode pulse rising edges (s, ephys clock), see below
    <h2o>_<YYYYMMDD>_bitcode.mat       optional: sTrig, goCue (n,1), bitCodeS (n x 10 char,
                                       MSB first), trialNum (n,1); every other ephys session
    <run>_g0_imec<N>/<run>_g0_tcat.imec<N>.ap.{bin,meta}   int16, nSavedChans interleaved
        imec<N>_ks2/                   Kilosort 2 / phy output (see kilosort.py)
        <run>_g0_tcat.imec<N>.ap_res.mat + .ap.prm   JRCLUST v4 instead (exactly one
                                       session in a share with >= 2 ephys sessions; jrclust.py)
tracking/<h2o>/<h2o>_<mmddyy>[_<k>]/   DLC trial maps + per-trial CSVs (dlc.py)
video/<h2o>/<YYYYMMDD>[_<k>]/video/<h2o>_<campos>_<NNN>-0000.avi   MJPEG AVI (video.py)
histology/<h2o>/<YYYYMMDD>[_<k>]/probe<P>/channel_locations_shank<S>.json, xyz_picks_shank<S>.json
ccf/annotation_100.nrrd, ccf/ontology.csv
bench_files/behavior/...          bench scale only: 74,000 Bpod-named files (benchfiles.py)
manifest.json                     ground truth (below)

Bitcode encoding on the NIDQ: after trial start s_i, bit k of the 10-bit GUI.randomID
(k = 0 is the most significant bit) is sent as a 2 ms pulse with rising edge at
s_i + 0.010 + 0.004 * k s iff the bit is 1; XA_1_2.txt lists those rising edges.
Decode: code = sum(1 << (9 - round((p - s_i - 0.010) / 0.004))) over edges p in
[s_i, s_{i+1}). spikeglx.decode_bitcodes implements it.

Clocks: ephys_time = bpod_time + clock_offset_s, where bpod_time is SessionData
TrialStartTimestamp (+ state/lick times, which are trial-relative). The ephys file's
fileCreateTime = session start - clock_offset_s (within 60 s). Offsets are negative (the Bpod
clock ran up to a minute before the recording began) except one positive session.

Irregularities (subjects >= 2 and sessions >= 2): subject 0 has two sessions on one day
(the second gets the `_1` suffix everywhere); `xx99` has a behaviour folder but is not in
subjects.yaml; leading training trials (ProtocolType 2, no DelayPeriod); early licks restart
the epoch (so that state has 2 rows) and unvisited states are [NaN NaN]; a behaviour-only
session (every 4th); some trials not filmed; curated and uncurated sortings.

manifest.json
-------------
schema_version, generator, scale, seed, rig,
registered_h2o [str], unregistered_h2o [str], subjects [{subject_id, h2o, sex}],
conventions {name: sentence},
sessions [ {
    h2o, subject_id (null if unregistered), registered, rig, date 'YYYY-MM-DD',
    start_time 'HH:MM:SS', session_number (MAP number, 1.. per subject, chronological; null
    if unregistered), same_day_index, behavior_file, n_trials, n_trials_ingestable
    (ProtocolType >= 3), broken_case (broken catalogue only),
    trials [ {number (Bpod 1-based), protocol_type, instruction left|right, trial_type_code,
              outcome hit|miss|ignore, early_lick, auto_water, bitcode, start, end, go_cue,
              states {visited state: [[start, stop], ...] rel. to trial start},
              licks_left, licks_right (rel. to trial start)} ],
    ephys null | {run, dir, clock_offset_s, n_samples, sample_rate, duration_s,
              trial_starts_file, bitcode_edges_file, bitcode_mat (path|null),
              probes [ {imec, probe (= imec + 1), type_code 0|21|24, part_number, serial,
                        n_shanks, n_saved_channels (incl. sync), saved_channels, bin, meta,
                        file_create_time, sorter kilosort2|jrclust_v4, sorting (dir or file),
                        curated, uv_per_bit, insertion, histology, n_units,
                        units [ {cluster_id, spike_count, quality good|mua|noise (what the
                                 pipeline should load: curated group wins over KSLabel),
                                 ks_label, group, peak_channel, isi_violations,
                                 model {base_rate_hz, go_cue_mod_hz, preference, latency_s,
                                        width_s, amplitude_uv}} ]} ]},
    tracking null | {dir, fps, cameras {side|bottom: {trial_map, trials [{trial,
              file_index, frames, csv}]}}},
    videos [ {camera, trial, file_index, frames, path} ],
    histology {probe: {shank (1-based): {channel_locations, xyz_picks,
              regions {kilosort channel index: acronym}}}} } ],
ccf {annotation, ontology, resolution_um, shape, axes, bregma_um, labels},
paths {behavior_data_paths: [[rig, abs path, 0]], ephys_, tracking_, video_, histology_,
       ccf_data_paths},
files {relative path: {size, md5}}   every regular file except manifest.json
symlinks {relative path: target}
broken [ {case, path, kind, session, reason} ]   (broken catalogue only)
bench_files {dir, n_files, n_h2o, file_size}    (bench only)
"""
from .api import main, simulate_share, write_broken_catalogue

__all__ = ["simulate_share", "write_broken_catalogue", "main"]
