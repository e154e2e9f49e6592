"""``lab``: people, rigs, subjects and their water restriction, surgeries, probes.

Table names, keys and attributes follow MAP's ``pipeline/lab.py`` so MAP queries work.
The water-restriction number ("h2o") is the name every rig file carries.
"""

from __future__ import annotations

import hashlib

import datajoint as dj
import numpy as np

from .db import schema as _schema

schema = _schema("lab")


@schema
class Person(dj.Manual):
    definition = """
    username : varchar(24)
    ---
    fullname : varchar(255)
    """


@schema
class Rig(dj.Manual):
    definition = """
    rig : varchar(24)
    ---
    room : varchar(20)           # example 2w.342
    rig_description : varchar(1024)
    """


@schema
class AnimalStrain(dj.Lookup):
    definition = """
    animal_strain : varchar(30)
    """
    contents = [(s,) for s in ("pl56", "kj18", "ai32", "ai35", "ai65", "C57BL/6J", "Sim1-Cre", "Tlx3-Cre", "VGAT-ChR2-EYFP")]


@schema
class AnimalSource(dj.Lookup):
    definition = """
    animal_source : varchar(30)
    """
    contents = [(s,) for s in ("Jackson Labs", "Allen Institute", "Charles River", "MMRRC", "Taconic", "Other")]


@schema
class ModifiedGene(dj.Manual):
    definition = """
    gene_modification : varchar(60)
    ---
    gene_modification_description = '' : varchar(256)
    """


@schema
class Subject(dj.Manual):
    definition = """
    subject_id : int32                 # institution 6 digit animal ID
    ---
    -> [nullable] Person               # person responsible for the animal
    cage_number : int32                # institution 6 digit animal ID
    date_of_birth = null : date        # format: yyyy-mm-dd
    sex : enum('M','F','Unknown')
    -> [nullable] AnimalSource         # where was the animal ordered from
    """

    class Strain(dj.Part):
        definition = """
        # Subject strains
        -> master
        -> AnimalStrain
        """

    class GeneModification(dj.Part):
        definition = """
        # Subject gene modifications
        -> master
        -> ModifiedGene
        ---
        zygosity = 'Unknown' : enum('Het', 'Hom', 'Unknown')
        type = 'Unknown' : enum('Knock-in', 'Transgene', 'Unknown')
        """


@schema
class WaterRestriction(dj.Manual):
    definition = """
    -> Subject
    ---
    water_restriction_number : varchar(16)   # WR number
    wr_cage_number : int32                   # MAP's cage_number, renamed: DataJoint 2 will not join Subject with a second cage_number
    wr_start_date : date
    wr_start_weight : decimal(6,3)
    unique index (water_restriction_number)
    """


@schema
class VirusSource(dj.Lookup):
    definition = """
    virus_source : varchar(60)
    """
    contents = [("Janelia",), ("UPenn",), ("Addgene",), ("UNC",), ("Other",)]


@schema
class Serotype(dj.Manual):
    definition = """
    serotype : varchar(60)
    """


@schema
class Virus(dj.Manual):
    definition = """
    virus_id : int32
    ---
    -> VirusSource
    -> Serotype
    -> Person
    virus_name : varchar(256)
    titer : decimal(20,1)
    order_date : date
    remarks : varchar(256)
    """

    class Notes(dj.Part):
        definition = """
        # Notes for virus
        -> master
        note_id : int32
        ---
        note : varchar(256)
        """


@schema
class SkullReference(dj.Lookup):
    definition = """
    skull_reference : varchar(60)
    """
    contents = [("Bregma",), ("Lambda",)]


@schema
class BrainArea(dj.Lookup):
    definition = """
    brain_area : varchar(32)
    ---
    description = null : varchar(4000)   # name of the brain area (lab terms, not necessarily in AIBS)
    """
    contents = [
        ("ALM", "anterior lateral motor cortex"),
        ("vS1", "vibrissal primary somatosensory cortex (barrel cortex)"),
        ("M1", "primary motor cortex"),
        ("Medulla", "medulla"),
        ("Thalamus", "thalamus"),
        ("Striatum", "striatum"),
        ("Midbrain", "midbrain"),
        ("Cerebellum", "cerebellum"),
        ("Hippocampus", "hippocampus"),
        ("Other", "other area"),
    ]


@schema
class Hemisphere(dj.Lookup):
    definition = """
    hemisphere : varchar(32)
    """
    contents = [("left",), ("right",), ("both",)]


@schema
class Surgery(dj.Manual):
    definition = """
    -> Subject
    surgery_id : int32                 # surgery number
    ---
    -> Person
    start_time : datetime              # start time
    end_time : datetime                # end time
    surgery_description : varchar(256)
    """

    class VirusInjection(dj.Part):
        definition = """
        # Virus injections
        -> master
        injection_id : int32
        ---
        -> Virus
        -> SkullReference
        ap_location : decimal(8,3)     # um from ref anterior is positive
        ml_location : decimal(8,3)     # um from ref right is positive
        dv_location : decimal(8,3)     # um from dura dorsal is positive
        volume : decimal(10,3)         # in nl
        dilution : decimal(10,2)       # 1 to how much
        description : varchar(256)
        """

    class Procedure(dj.Part):
        definition = """
        # Other surgical procedures
        -> master
        procedure_id : int32
        ---
        -> SkullReference
        ap_location = null : decimal(8,3)   # um from ref; anterior is positive
        ml_location = null : decimal(8,3)   # um from ref; right is positive
        dv_location = null : decimal(8,3)   # um from dura; dorsal is positive
        surgery_procedure_description : varchar(1000)
        """


@schema
class PhotostimDevice(dj.Lookup):
    definition = """
    photostim_device : varchar(20)
    ---
    excitation_wavelength : decimal(5,1)     # (nm)
    photostim_device_description : varchar(255)
    """
    contents = [
        ("LaserGem473", 473, "Laser (Laser Quantum, Gem 473)"),
        ("LED470", 470, "LED (Thor Labs, M470F3 - 470 nm, 17.2 mW (Min) Fiber-Coupled LED)"),
        ("OBIS470", 473, "OBIS 473nm LX 50mW Laser System: Fiber Pigtail (Coherent Inc)"),
    ]


# --- probes -------------------------------------------------------------------------------

# MAP's probe type names and the probeinterface part numbers whose geometry they share.
NEUROPIXELS_PART_NUMBERS = {
    "neuropixels 1.0 - 3A": "NP1000",
    "neuropixels 1.0 - 3B": "NP1000",
    "neuropixels 2.0 - SS": "NP2000",
    "neuropixels 2.0 - MS": "NP2010",
}
# SpikeGLX ``imDatPrb_type`` -> MAP probe type.
SPIKEGLX_PROBE_TYPES = {0: "neuropixels 1.0 - 3B", 21: "neuropixels 2.0 - SS", 24: "neuropixels 2.0 - MS"}


def neuropixels_electrodes(probe_type: str) -> list[dict]:
    """Electrode geometry of a MAP probe type, from probeinterface (1-based indices, as MAP)."""
    from probeinterface.neuropixels_tools import build_neuropixels_probe

    probe = build_neuropixels_probe(NEUROPIXELS_PART_NUMBERS[probe_type])
    positions = probe.contact_positions
    shank_ids = probe.shank_ids
    shanks = np.zeros(len(positions), int) if shank_ids is None or shank_ids[0] in (None, "") else shank_ids.astype(int)
    rows = []
    for shank in np.unique(shanks):
        index = np.flatnonzero(shanks == shank)
        xs = np.unique(positions[index, 0])
        ys = np.unique(positions[index, 1])
        for electrode_in_shank, i in enumerate(index):
            rows.append(
                dict(
                    probe_type=probe_type,
                    electrode=int(i) + 1,
                    shank=int(shank) + 1,
                    shank_col=int(np.searchsorted(xs, positions[i, 0])) + 1,
                    shank_row=int(np.searchsorted(ys, positions[i, 1])) + 1,
                    x_coord=float(positions[i, 0]),
                    y_coord=float(positions[i, 1]),
                )
            )
    return rows


@schema
class ProbeType(dj.Lookup):
    definition = """
    probe_type : varchar(32)    # e.g. neuropixels 1.0 - 3B
    """

    class Electrode(dj.Part):
        definition = """
        -> master
        electrode : int32         # electrode index, starts at 1
        ---
        shank : int32             # shank index, starts at 1, advance left to right
        shank_col : int32         # column index, starts at 1, advance left to right
        shank_row : int32         # row index, starts at 1, advance tip to tail
        x_coord = null : float32  # (um) x coordinate of the electrode within the probe
        y_coord = null : float32  # (um) y coordinate of the electrode within the probe
        """

    @classmethod
    def create_neuropixels_probes(cls) -> None:
        """Insert the Neuropixels probe types with their electrode geometry (idempotent)."""
        for probe_type in NEUROPIXELS_PART_NUMBERS:
            if cls & {"probe_type": probe_type}:
                continue
            with cls.connection.transaction:
                cls.insert1({"probe_type": probe_type})
                cls.Electrode.insert(neuropixels_electrodes(probe_type))


@schema
class Probe(dj.Lookup):
    definition = """
    probe : varchar(32)          # unique identifier for this model of probe (e.g. serial number)
    ---
    -> ProbeType
    probe_comment = '' : varchar(1000)
    """


def electrode_config_hash(probe_type: str, electrodes: list[int]) -> str:
    """Hex MD5 of a probe type and its used electrodes: one row per distinct configuration.

    MAP keyed this on a ``uuid``; DataJoint 2.3 cannot insert or restrict ``uuid`` on
    PostgreSQL, so the same hash is stored as 32 hex characters.
    """
    text = probe_type + ":" + ",".join(str(int(e)) for e in sorted(electrodes))
    return hashlib.md5(text.encode()).hexdigest()


@schema
class ElectrodeConfig(dj.Lookup):
    definition = """
    -> ProbeType
    electrode_config_name : varchar(64)   # user friendly name
    ---
    electrode_config_hash : char(32)      # hex MD5 of the probe type and its used electrodes
    unique index (electrode_config_hash)
    """

    class ElectrodeGroup(dj.Part):
        definition = """
        # grouping of electrodes to be clustered together (e.g. a neuropixel electrode config - 384/960)
        -> master
        electrode_group : int32           # electrode group
        """

    class Electrode(dj.Part):
        definition = """
        -> master.ElectrodeGroup
        -> ProbeType.Electrode
        ---
        is_used = 1 : bool                # is this channel used for spatial average (ref channels are by default not used)
        """


ProbeType.create_neuropixels_probes()
